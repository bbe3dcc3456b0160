// Tensor element types as GGUF numbers them (ggml's `ggml_type`), with their block layout.
// Quantized types store a row as consecutive blocks of `BlockElements(type)` values, each block
// `BlockBytes(type)` bytes. Used by the model-file readers and the CPU kernels. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace spillway::engine {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

// The type with GGUF number `raw`, or nullopt if spillway does not support it.
std::optional<GgmlType> GgmlTypeFromRaw(uint32_t raw);
// "f32", "q4_1", ... for messages.
std::string_view GgmlTypeName(GgmlType type);
// Values per block (1 for F32/F16/BF16, 32 for Q4_0/Q4_1/Q8_0/Q8_1, 256 for K-quants).
int64_t BlockElements(GgmlType type);
// Bytes per block.
int64_t BlockBytes(GgmlType type);
// Bytes of one row of `n` values, or nullopt when `n` is not a multiple of the block size or
// the result would overflow.
std::optional<int64_t> RowBytes(GgmlType type, int64_t n);

}  // namespace spillway::engine
