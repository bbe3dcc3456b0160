// SPW_RETURN_IF_ERROR and SPW_ASSIGN_OR_RETURN for absl::Status / absl::StatusOr. Debian 12's
// Abseil (20220623) ships status.h and statusor.h but not the newer status_macros.h.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SPW_RETURN_IF_ERROR(expr)                                 \
  do {                                                            \
    if (::absl::Status spw_status_ = (expr); !spw_status_.ok()) { \
      return spw_status_;                                         \
    }                                                             \
  } while (false)

#define SPW_STATUS_CONCAT_INNER(a, b) a##b
#define SPW_STATUS_CONCAT(a, b) SPW_STATUS_CONCAT_INNER(a, b)

// SPW_ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (a StatusOr); on error returns its status,
// otherwise moves the value into `lhs`, which may be a declaration (`auto x`, `Foo foo`).
#define SPW_ASSIGN_OR_RETURN(lhs, expr) \
  SPW_ASSIGN_OR_RETURN_IMPL(SPW_STATUS_CONCAT(spw_statusor_, __LINE__), lhs, expr)

#define SPW_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                              \
  if (!statusor.ok()) {                                \
    return std::move(statusor).status();               \
  }                                                    \
  lhs = std::move(statusor).value()
