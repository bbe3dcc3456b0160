// SPW_CHECK / SPW_DCHECK: invariants that, when broken, mean a bug in spillway (STYLE.md §6).
// A failed check logs the condition, file, line and the streamed context through spdlog, then
// aborts. SPW_CHECK is always on; SPW_DCHECK only in debug and sanitizer builds.
// Usable from any thread.
#pragma once

#include <sstream>
#include <string>

namespace spillway::internal {

// Collects the streamed message of a failed check and aborts in its destructor.
class CheckFailure {
 public:
  CheckFailure(const char* condition, const char* file, int line);
  [[noreturn]] ~CheckFailure();
  template <typename T>
  CheckFailure& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  std::ostringstream stream_;
};

// Lets `SPW_CHECK(x) << ...` be an expression of type void in both branches.
struct Voidify {
  void operator&(const CheckFailure&) {}
};

}  // namespace spillway::internal

#define SPW_CHECK(cond)                      \
  (cond) ? (void)0                           \
         : ::spillway::internal::Voidify() & \
               ::spillway::internal::CheckFailure(#cond, __FILE__, __LINE__)

#if !defined(NDEBUG) || defined(SPW_ENABLE_DCHECK)
#define SPW_DCHECK(cond) SPW_CHECK(cond)
#else
#define SPW_DCHECK(cond) \
  while (false) SPW_CHECK(cond)
#endif
