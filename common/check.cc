#include "common/check.h"

#include <cstdlib>

#include <spdlog/spdlog.h>

namespace spillway::internal {

CheckFailure::CheckFailure(const char* condition, const char* file, int line) {
  stream_ << file << ":" << line << ": check failed: " << condition << " ";
}

CheckFailure::~CheckFailure() {
  spdlog::critical("{}", stream_.str());
  spdlog::shutdown();
  std::abort();
}

}  // namespace spillway::internal
