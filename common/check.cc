#include "common/check.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

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
