// Stand-in for cuda_bf16.h in the CPU emulation: __nv_bfloat16 as its 16 bits, with the
// conversions the kernels use (round to nearest even, as the device's __float2bfloat16_rn;
// the host's own conversions in engine/cpu/fp16.h do the arithmetic).
#pragma once

#include <cstdint>

#include "engine/cpu/fp16.h"

struct __nv_bfloat16 {
  uint16_t x;
};

inline float __bfloat162float(__nv_bfloat16 h) { return spillway::engine::cpu::Bf16ToF32(h.x); }

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {spillway::engine::cpu::F32ToBf16(f)}; }
