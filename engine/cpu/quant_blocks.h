// The byte layout of ggml's quantized blocks, exactly as GGUF files store them, for the CPU
// kernels (engine/cpu/). A row of a quantized tensor is an array of these blocks.
// Scales (d, m, dmin) are IEEE halves stored as raw bits (see fp16.h). Plain data, no state.
//
//   type  values  bytes  value j of the block
//   Q4_0    32     18    d * ((qs[j % 16] >> (4 * (j / 16))) & 15) - 8 * d
//   Q4_1    32     20    d * ((qs[j % 16] >> (4 * (j / 16))) & 15) + m
//   Q8_0    32     34    d * qs[j]
//   Q4_K   256    144    8 sub-blocks of 32 with 6-bit scale/min (ScaleMinK4); see DequantizeRow
//   Q5_K   256    176    like Q4_K plus one high bit per value in qh
//   Q6_K   256    210    16 sub-blocks of 16 with int8 scales; 4 low bits in ql, 2 high in qh
#pragma once

#include <cstdint>

namespace spillway::engine::cpu {

inline constexpr int kQk = 32;    // values per Q4_0/Q4_1/Q8_0 block
inline constexpr int kQkK = 256;  // values per K-quant super-block

struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQk / 2];  // value j in the low nibble of qs[j], value j + 16 in the high nibble
};
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQk / 2];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQk];
};
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];  // 8 x (6-bit scale, 6-bit min), packed; see ScaleMinK4
  uint8_t qs[kQkK / 2];
};
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQkK / 8];
  uint8_t qs[kQkK / 2];
};
struct BlockQ6_K {
  uint8_t ql[kQkK / 2];
  uint8_t qh[kQkK / 4];
  int8_t scales[kQkK / 16];
  uint16_t d;
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);

// ScaleMinK4: the 6-bit scale and min of sub-block `j` (0..7) of a Q4_K/Q5_K block
// (ggml's get_scale_min_k4): sub-blocks 0-3 use the low 6 bits of bytes j and j + 4; sub-blocks
// 4-7 take their low 4 bits from byte j + 4 and their top 2 bits from bytes j - 4 and j.
inline void ScaleMinK4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

}  // namespace spillway::engine::cpu
