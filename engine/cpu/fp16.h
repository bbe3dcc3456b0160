// Scalar conversions between f32 and the 16-bit float formats of model files: IEEE half (f16,
// as GGUF stores F16 tensors and the d/m scales of quantized blocks) and bfloat16 (bf16, as
// Hugging Face safetensors often store weights). Used by the CPU kernels and the CPU backend.
// Header-only, no state, usable from any thread.
//
// Where the translation unit is compiled with F16C (-mf16c or -march=...), the f16 conversions
// use the F16C instructions; otherwise exact bit manipulations that give the same bits, so
// every translation unit gets identical results whatever its compile flags (the SIMD kernels
// convert whole vectors with F16C/AVX-512 instructions, which round the same way). f32 -> f16/bf16
// rounds to nearest, ties to even; NaN stays NaN, overflow gives infinity.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace spillway::engine::cpu {

namespace fp16_internal {

inline float BitsToF32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint32_t F32ToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

}  // namespace fp16_internal

// F16ToF32: the f32 value of the IEEE half `h` (exact; subnormals, inf and NaN included).
inline float F16ToF32(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  using fp16_internal::BitsToF32;
  using fp16_internal::F32ToBits;
  // NOTE(kernels): the exponent-rebias trick: shift the half's exponent+mantissa into an f32
  // and scale by 2^-112 (normal numbers), or build subnormals as (0.5 + m) - 0.5 exactly.
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const uint32_t exp_offset = 0xE0u << 23;
  const float normalized = BitsToF32((two_w >> 4) + exp_offset) * 0x1.0p-112f;
  const float denormalized = BitsToF32((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t denormalized_cutoff = 1u << 27;
  const uint32_t result =
      sign | (two_w < denormalized_cutoff ? F32ToBits(denormalized) : F32ToBits(normalized));
  return BitsToF32(result);
#endif
}

// F32ToF16: `f` rounded to the nearest IEEE half (ties to even; overflow -> inf; NaN -> NaN).
inline uint16_t F32ToF16(float f) {
#if defined(__F16C__)
  return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
  using fp16_internal::BitsToF32;
  using fp16_internal::F32ToBits;
  // NOTE(kernels): scaling |f| up by 2^112 and back down by 2^-110 lets the FPU do the
  // rounding of the mantissa (and overflow to inf); the bias term aligns the rounding point.
  float base = (__builtin_fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = F32ToBits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = BitsToF32((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = F32ToBits(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
#endif
}

// Bf16ToF32: the f32 value of the bfloat16 `b` (exact).
inline float Bf16ToF32(uint16_t b) {
  return fp16_internal::BitsToF32(static_cast<uint32_t>(b) << 16);
}

// F32ToBf16: `f` rounded to the nearest bfloat16 (ties to even); NaN stays a quiet NaN.
inline uint16_t F32ToBf16(float f) {
  const uint32_t bits = fp16_internal::F32ToBits(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// Row conversions (plain loops; the compiler vectorizes them where it can).
inline void F16ToF32Row(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(src[i]);
}
inline void F32ToF16Row(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToF16(src[i]);
}
inline void Bf16ToF32Row(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToF32(src[i]);
}
inline void F32ToBf16Row(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToBf16(src[i]);
}

}  // namespace spillway::engine::cpu
