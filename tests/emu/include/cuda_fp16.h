// Stand-in for cuda_fp16.h in the CPU emulation: __half and __half2 as their bits, with the
// conversions the kernels use (round to nearest even, as the device's __float2half_rn; the
// host's own conversions in engine/cpu/fp16.h do the arithmetic).
#pragma once

#include <cstdint>

#include "engine/cpu/fp16.h"
#include "tests/emu/emu.h"

struct __half {
  uint16_t x;
};
struct __half2 {
  __half x, y;
};

inline float __half2float(__half h) { return spillway::engine::cpu::F16ToF32(h.x); }
inline __half __float2half_rn(float f) { return {spillway::engine::cpu::F32ToF16(f)}; }
inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
