#include "common/cache_dir.h"

#include <cstdlib>

namespace spillway {

std::string CacheDir() {
  if (const char* env = std::getenv("SPILLWAY_CACHE"); env != nullptr && *env != '\0') {
    return env;
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.cache/spillway";
}

std::string DefaultModelPath() { return CacheDir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

}  // namespace spillway
