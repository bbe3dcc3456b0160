#include "tests/test_paths.h"

#include <cstdlib>

#include "common/cache_dir.h"

namespace spillway::testing {

std::string SourcePath(const std::string& relative) {
  // SPILLWAY_SOURCE_DIR: a binary run away from its build tree (tests/gpu/run.sh's bundle on
  // the GPU machine) finds the goldens in that machine's copy of the tree.
  const char* dir = std::getenv("SPILLWAY_SOURCE_DIR");
  return std::string(dir != nullptr && *dir != '\0' ? dir : SPW_SOURCE_DIR) + "/" + relative;
}

std::string BinaryPath(const std::string& relative) {
  return std::string(SPW_BINARY_DIR) + "/" + relative;
}

std::string DefaultModelPath() { return spillway::DefaultModelPath(); }

}  // namespace spillway::testing
