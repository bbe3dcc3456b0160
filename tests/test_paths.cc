#include "tests/test_paths.h"

#include "common/cache_dir.h"

namespace spillway::testing {

std::string SourcePath(const std::string& relative) {
  return std::string(SPW_SOURCE_DIR) + "/" + relative;
}

std::string BinaryPath(const std::string& relative) {
  return std::string(SPW_BINARY_DIR) + "/" + relative;
}

std::string DefaultModelPath() { return spillway::DefaultModelPath(); }

}  // namespace spillway::testing
