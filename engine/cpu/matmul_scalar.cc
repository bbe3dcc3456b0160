// The portable kernel set: plain C++ tile kernels for every weight type, and the scalar
// activation quantizers that the SIMD quantizers reproduce bit for bit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/fp16.h"
#include "engine/cpu/matmul_kernels.h"
#include "engine/cpu/quant_blocks.h"
#include "engine/cpu/quant_rows.h"

namespace spillway::engine::cpu::internal {
namespace {

constexpr int64_t kTokenChunk = 64;

// Quantizes 32 values to int8 with d = amax / 127 (see matmul_kernels.h). Returns sum(q).
int QuantizeBlock32(const float* x, int8_t* q, float* d_out) {
  float amax = 0.0f;
  for (int j = 0; j < kQk; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int sum = 0;
  for (int j = 0; j < kQk; ++j) {
    const int v = static_cast<int>(std::lrintf(x[j] * id));
    q[j] = static_cast<int8_t>(v);
    sum += v;
  }
  *d_out = d;
  return sum;
}

// Dot products of one row, dequantized to f32, with a range of tokens, in the canonical order
// (matmul_kernels.h): column c goes to lane c % 16 by FMA, then ReduceLanes.
template <GgmlType kType>
void FloatTile(const PackedView& w, int64_t row_begin, int64_t row_end, const Activations& x,
               int64_t tok_begin, int64_t tok_end, float* y, int64_t ldy) {
  thread_local std::vector<float> row;
  row.resize(static_cast<size_t>(w.cols));
  for (int64_t r = row_begin; r < row_end; ++r) {
    DequantizeRowInto(kType, w.row(r), row.data(), w.cols);
    for (int64_t t = tok_begin; t < tok_end; ++t) {
      const float* xt = x.x + t * w.cols;
      float lanes[kLanes] = {};
      for (int64_t c = 0; c < w.cols; ++c) {
        lanes[c % kLanes] = std::fma(row[c], xt[c], lanes[c % kLanes]);
      }
      y[t * ldy + r] = ReduceLanes(lanes);
    }
  }
}

// Q4_0 / Q4_1 / Q8_0 in the canonical order (matmul_kernels.h): the exact integer dot of each
// 32-block (signed weights for Q4_0 and Q8_0, unsigned nibbles for Q4_1), then per block
// lane[b % 16] = fma(d_w * d_x, isum, lane) (and fma(m_w, s_x, lane) for Q4_1). `row` is a
// packed row (matmul_kernels.h).
template <GgmlType kType>
float DotLegacyRow(const uint8_t* row, int64_t nb, const int8_t* xq, const float* xd,
                   const float* xs) {
  const uint8_t* scales = row + PackedScaleOffset(kType, nb);
  auto f16 = [scales](int64_t i) {
    uint16_t h;
    std::memcpy(&h, scales + 2 * i, 2);
    return F16ToF32(h);
  };
  float lanes[kLanes] = {};
  int8_t q[kQk];
  for (int64_t b = 0; b < nb; ++b) {
    for (int i = 0; i < kQk; ++i) q[i] = xq[RunOffset(b, i)];
    const int64_t b0 = b / kRunBlocks * kRunBlocks;
    const int64_t step = 4 * std::min<int64_t>(kRunBlocks, nb - b0);
    // Byte i (0..3) of step k of this block.
    const uint8_t* wq = row + PackedRunOffset(kType, b0) + 4 * (b - b0);
    auto byte = [wq, step](int k, int i) { return wq[k * step + i]; };
    float& lane = lanes[b % kLanes];
    int isum = 0;
    if constexpr (kType == GgmlType::kQ8_0) {
      for (int j = 0; j < kQk; ++j) {
        isum += static_cast<int8_t>(byte(j / 4, j % 4) ^ 0x80) * q[j];
      }
    } else {
      constexpr int kOffset = kType == GgmlType::kQ4_0 ? 8 : 0;
      for (int j = 0; j < kQk / 2; ++j) {
        const uint8_t v = byte(j / 4, j % 4);
        isum += ((v & 0xF) - kOffset) * q[j] + ((v >> 4) - kOffset) * q[j + kQk / 2];
      }
    }
    lane = std::fma(f16(b) * xd[b], static_cast<float>(isum), lane);
    if constexpr (kType == GgmlType::kQ4_1) lane = std::fma(f16(nb + b), xs[b], lane);
  }
  return ReduceLanes(lanes);
}

template <GgmlType kType>
void LegacyTile(const PackedView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                int64_t tok_begin, int64_t tok_end, float* y, int64_t ldy) {
  const int64_t nb = w.cols / kQk;
  const QuantizedActivations& a = x.q;
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t t = tok_begin; t < tok_end; ++t) {
      y[t * ldy + r] = DotLegacyRow<kType>(w.row(r), nb, a.q + t * a.q_stride,
                                           a.d + t * a.scale_stride, a.s + t * a.scale_stride);
    }
  }
}

// One K-quant super-block as integers: q[256] unsigned, and per sub-block scale/min.
struct DecodedK {
  uint8_t q[kQkK];
  int scale[16];  // 8 sub-blocks of 32 (Q4_K/Q5_K) or 16 of 16 (Q6_K)
  int min[8];     // Q4_K/Q5_K only
  float d = 0.0f;
  float dmin = 0.0f;
};

void DecodeQ4_K(const BlockQ4_K& b, DecodedK* out) {
  out->d = F16ToF32(b.d);
  out->dmin = F16ToF32(b.dmin);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    ScaleMinK4(j, b.scales, &sc, &m);
    out->scale[j] = sc;
    out->min[j] = m;
  }
  for (int j = 0; j < 4; ++j) {
    for (int l = 0; l < 32; ++l) {
      out->q[64 * j + l] = b.qs[32 * j + l] & 0xF;
      out->q[64 * j + 32 + l] = b.qs[32 * j + l] >> 4;
    }
  }
}

void DecodeQ5_K(const BlockQ5_K& b, DecodedK* out) {
  out->d = F16ToF32(b.d);
  out->dmin = F16ToF32(b.dmin);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    ScaleMinK4(j, b.scales, &sc, &m);
    out->scale[j] = sc;
    out->min[j] = m;
  }
  for (int j = 0; j < 4; ++j) {
    for (int l = 0; l < 32; ++l) {
      out->q[64 * j + l] = (b.qs[32 * j + l] & 0xF) | (((b.qh[l] >> (2 * j)) & 1) << 4);
      out->q[64 * j + 32 + l] = (b.qs[32 * j + l] >> 4) | (((b.qh[l] >> (2 * j + 1)) & 1) << 4);
    }
  }
}

void DecodeQ6_K(const BlockQ6_K& b, DecodedK* out) {
  out->d = F16ToF32(b.d);
  for (int j = 0; j < 16; ++j) out->scale[j] = b.scales[j];
  for (int n = 0; n < 2; ++n) {
    const uint8_t* ql = b.ql + 64 * n;
    const uint8_t* qh = b.qh + 32 * n;
    uint8_t* q = out->q + 128 * n;
    for (int l = 0; l < 32; ++l) {
      q[l] = (ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4);
      q[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
      q[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
      q[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
    }
  }
}

template <GgmlType kType>
void KTile(const PackedView& w, int64_t row_begin, int64_t row_end, const Activations& x,
           int64_t tok_begin, int64_t tok_end, float* y, int64_t ldy) {
  const int64_t nb = w.cols / kQkK;
  const QuantizedActivations& a = x.q;
  DecodedK dec;
  float acc[kTokenChunk];
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t t0 = tok_begin; t0 < tok_end; t0 += kTokenChunk) {
      const int64_t t1 = std::min(tok_end, t0 + kTokenChunk);
      std::fill(acc, acc + (t1 - t0), 0.0f);
      for (int64_t b = 0; b < nb; ++b) {
        if constexpr (kType == GgmlType::kQ4_K) {
          DecodeQ4_K(reinterpret_cast<const BlockQ4_K*>(w.row(r))[b], &dec);
        } else if constexpr (kType == GgmlType::kQ5_K) {
          DecodeQ5_K(reinterpret_cast<const BlockQ5_K*>(w.row(r))[b], &dec);
        } else {
          DecodeQ6_K(reinterpret_cast<const BlockQ6_K*>(w.row(r))[b], &dec);
        }
        for (int64_t t = t0; t < t1; ++t) {
          const int8_t* q = a.q + t * a.q_stride + b * kQkK;
          const int16_t* bs = a.bsums + t * a.bsum_stride + b * 16;
          const float dx = a.d[t * a.scale_stride + b];
          if constexpr (kType == GgmlType::kQ6_K) {
            // value = d * scale_j * (q - 32) over sub-blocks j of 16.
            int sumi = 0;
            for (int j = 0; j < 16; ++j) {
              int dot = 0;
              for (int l = 0; l < 16; ++l) dot += dec.q[16 * j + l] * q[16 * j + l];
              sumi += dec.scale[j] * (dot - 32 * bs[j]);
            }
            acc[t - t0] += dec.d * dx * static_cast<float>(sumi);
          } else {
            // value = d * scale_j * q - dmin * min_j over sub-blocks j of 32.
            int sumi = 0, summ = 0;
            for (int j = 0; j < 8; ++j) {
              int dot = 0;
              for (int l = 0; l < 32; ++l) dot += dec.q[32 * j + l] * q[32 * j + l];
              sumi += dec.scale[j] * dot;
              summ += dec.min[j] * (bs[2 * j] + bs[2 * j + 1]);
            }
            acc[t - t0] +=
                dx * (dec.d * static_cast<float>(sumi) - dec.dmin * static_cast<float>(summ));
          }
        }
      }
      for (int64_t t = t0; t < t1; ++t) y[t * ldy + r] = acc[t - t0];
    }
  }
}

}  // namespace

void QuantizeRow32Scalar(const float* x, int64_t cols, int8_t* q, float* d, float* s,
                         int32_t* qsum) {
  const int64_t nb = cols / kQk;
  const int64_t nb_padded = (nb + kRunBlocks - 1) / kRunBlocks * kRunBlocks;
  if (nb % kRunBlocks != 0) {
    const int64_t last_run = nb / kRunBlocks * kRunBytes;
    std::memset(q + last_run, 0, kRunBytes);
  }
  int8_t block[kQk];
  for (int64_t b = 0; b < nb; ++b) {
    const int sum = QuantizeBlock32(x + b * kQk, block, &d[b]);
    for (int i = 0; i < kQk; ++i) q[RunOffset(b, i)] = block[i];
    s[b] = d[b] * static_cast<float>(sum);
    qsum[b] = sum;
  }
  for (int64_t b = nb; b < nb_padded; ++b) {
    d[b] = 0.0f;
    s[b] = 0.0f;
    qsum[b] = 0;
  }
}

void QuantizeRow256Scalar(const float* x, int64_t cols, int8_t* q, float* d, int16_t* bsums) {
  const int64_t nb = cols / kQkK;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kQkK;
    float amax = 0.0f;
    for (int j = 0; j < kQkK; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float db = amax / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) {
        const int v = static_cast<int>(std::lrintf(xb[16 * g + l] * id));
        q[b * kQkK + 16 * g + l] = static_cast<int8_t>(v);
        sum += v;
      }
      bsums[b * 16 + g] = static_cast<int16_t>(sum);
    }
    d[b] = db;
  }
}

const KernelSet& ScalarKernels() {
  static const KernelSet kSet = {
      .name = "scalar",
      .f32 = FloatTile<GgmlType::kF32>,
      .f16 = FloatTile<GgmlType::kF16>,
      .bf16 = FloatTile<GgmlType::kBF16>,
      .q4_0 = LegacyTile<GgmlType::kQ4_0>,
      .q4_1 = LegacyTile<GgmlType::kQ4_1>,
      .q8_0 = LegacyTile<GgmlType::kQ8_0>,
      .q4_k = KTile<GgmlType::kQ4_K>,
      .q5_k = KTile<GgmlType::kQ5_K>,
      .q6_k = KTile<GgmlType::kQ6_K>,
      .quantize32 = QuantizeRow32Scalar,
      .quantize256 = QuantizeRow256Scalar,
  };
  return kSet;
}

}  // namespace spillway::engine::cpu::internal
