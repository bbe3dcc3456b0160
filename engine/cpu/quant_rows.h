// Row conversions between f32 and the tensor types of model files: dequantization of every
// type the CPU kernels read, and reference quantizers for the types that are cheap to produce
// (F16, BF16, Q4_0, Q4_1, Q8_0). The quantizers follow ggml's quantize_row_*_ref, so rows they
// write are valid GGUF data; they are used by tests and are fine for small things such as a
// quantized KV cache, but are not tuned for speed. Stateless; usable from any thread.
#pragma once

#include <cstdint>

#include "engine/weights/ggml_types.h"

namespace spillway::engine::cpu {

// DequantizeRowInto: converts `n` values of `type` at `src` to f32 at `dst`.
// Supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K.
// REQUIRES: `n` is a multiple of BlockElements(type); a supported type (checked).
// (engine/cpu/matmul.h's DequantizeRow is the same function.)
void DequantizeRowInto(GgmlType type, const void* src, float* dst, int64_t n);

// QuantizeRowSupported: whether QuantizeRow can write `type`.
bool QuantizeRowSupported(GgmlType type);

// QuantizeRow: writes `n` values from `src` as `type` to `dst` (RowBytes(type, n) bytes).
// F16/BF16 round to nearest even; Q4_0/Q4_1/Q8_0 use ggml's reference rounding (Q4_0: the
// value of largest magnitude maps to -8; Q4_1: min/max per block; Q8_0: amax / 127).
// REQUIRES: QuantizeRowSupported(type); `n` is a multiple of BlockElements(type).
void QuantizeRow(GgmlType type, const float* src, void* dst, int64_t n);

}  // namespace spillway::engine::cpu
