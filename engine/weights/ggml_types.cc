#include "engine/weights/ggml_types.h"

#include <limits>

namespace spillway::engine {

std::optional<GgmlType> GgmlTypeFromRaw(uint32_t raw) {
  switch (raw) {
    case 0: case 1: case 2: case 3: case 8: case 9: case 12: case 13: case 14: case 15: case 30:
      return static_cast<GgmlType>(raw);
    default:
      return std::nullopt;
  }
}

std::string_view GgmlTypeName(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return "f32";
    case GgmlType::kF16: return "f16";
    case GgmlType::kQ4_0: return "q4_0";
    case GgmlType::kQ4_1: return "q4_1";
    case GgmlType::kQ8_0: return "q8_0";
    case GgmlType::kQ8_1: return "q8_1";
    case GgmlType::kQ4_K: return "q4_K";
    case GgmlType::kQ5_K: return "q5_K";
    case GgmlType::kQ6_K: return "q6_K";
    case GgmlType::kQ8_K: return "q8_K";
    case GgmlType::kBF16: return "bf16";
  }
  return "?";
}

int64_t BlockElements(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: case GgmlType::kF16: case GgmlType::kBF16: return 1;
    case GgmlType::kQ4_0: case GgmlType::kQ4_1: case GgmlType::kQ8_0: case GgmlType::kQ8_1:
      return 32;
    case GgmlType::kQ4_K: case GgmlType::kQ5_K: case GgmlType::kQ6_K: case GgmlType::kQ8_K:
      return 256;
  }
  return 1;
}

int64_t BlockBytes(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return 4;
    case GgmlType::kF16: case GgmlType::kBF16: return 2;
    case GgmlType::kQ4_0: return 2 + 16;           // f16 d; 32 x 4-bit
    case GgmlType::kQ4_1: return 2 + 2 + 16;       // f16 d, m; 32 x 4-bit
    case GgmlType::kQ8_0: return 2 + 32;           // f16 d; 32 x int8
    case GgmlType::kQ8_1: return 2 + 2 + 32;       // f16 d, s; 32 x int8
    case GgmlType::kQ4_K: return 2 + 2 + 12 + 128; // f16 d, dmin; 6-bit scales; 256 x 4-bit
    case GgmlType::kQ5_K: return 2 + 2 + 12 + 32 + 128;
    case GgmlType::kQ6_K: return 128 + 64 + 16 + 2;  // ql, qh, int8 scales, f16 d
    case GgmlType::kQ8_K: return 4 + 256 + 32;       // f32 d; 256 x int8; 16 x int16 bsums
  }
  return 0;
}

std::optional<int64_t> RowBytes(GgmlType type, int64_t n) {
  const int64_t per_block = BlockElements(type);
  if (n < 0 || n % per_block != 0) return std::nullopt;
  const int64_t blocks = n / per_block;
  if (blocks > std::numeric_limits<int64_t>::max() / BlockBytes(type)) return std::nullopt;
  return blocks * BlockBytes(type);
}

}  // namespace spillway::engine
