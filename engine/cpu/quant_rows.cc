#include "engine/cpu/quant_rows.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/check.h"
#include "engine/cpu/fp16.h"
#include "engine/cpu/quant_blocks.h"

namespace spillway::engine::cpu {
namespace {

void DequantizeQ4_0(const BlockQ4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(x[i].d);
    for (int j = 0; j < kQk / 2; ++j) {
      y[i * kQk + j] = static_cast<float>((x[i].qs[j] & 0x0F) - 8) * d;
      y[i * kQk + j + kQk / 2] = static_cast<float>((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void DequantizeQ4_1(const BlockQ4_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(x[i].d);
    const float m = F16ToF32(x[i].m);
    for (int j = 0; j < kQk / 2; ++j) {
      y[i * kQk + j] = static_cast<float>(x[i].qs[j] & 0x0F) * d + m;
      y[i * kQk + j + kQk / 2] = static_cast<float>(x[i].qs[j] >> 4) * d + m;
    }
  }
}

void DequantizeQ8_0(const BlockQ8_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(x[i].d);
    for (int j = 0; j < kQk; ++j) y[i * kQk + j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

void DequantizeQ4_K(const BlockQ4_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(x[i].d);
    const float dmin = F16ToF32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    for (int j = 0; j < 8; j += 2) {
      uint8_t sc, m;
      ScaleMinK4(j, x[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      ScaleMinK4(j + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
      q += 32;
    }
  }
}

void DequantizeQ5_K(const BlockQ5_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(x[i].d);
    const float dmin = F16ToF32(x[i].dmin);
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    for (int j = 0; j < 8; j += 2) {
      uint8_t sc, m;
      ScaleMinK4(j, x[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      ScaleMinK4(j + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) {
        const int q = (ql[l] & 0xF) + (((qh[l] >> j) & 1) << 4);
        *y++ = d1 * static_cast<float>(q) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        const int q = (ql[l] >> 4) + (((qh[l] >> (j + 1)) & 1) << 4);
        *y++ = d2 * static_cast<float>(q) - m2;
      }
      ql += 32;
    }
  }
}

void DequantizeQ6_K(const BlockQ6_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int n = 0; n < kQkK; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * static_cast<float>(q1);
        y[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
        y[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
        y[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

void QuantizeQ4_0(const float* x, BlockQ4_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQk) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQk; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = F32ToF16(d);
    for (int j = 0; j < kQk / 2; ++j) {
      const uint8_t lo = static_cast<uint8_t>(std::min(15, static_cast<int>(x[j] * id + 8.5f)));
      const uint8_t hi =
          static_cast<uint8_t>(std::min(15, static_cast<int>(x[j + kQk / 2] * id + 8.5f)));
      y[i].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void QuantizeQ4_1(const float* x, BlockQ4_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQk) {
    float min = x[0], max = x[0];
    for (int j = 1; j < kQk; ++j) {
      min = std::min(min, x[j]);
      max = std::max(max, x[j]);
    }
    const float d = (max - min) / 15;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = F32ToF16(d);
    y[i].m = F32ToF16(min);
    for (int j = 0; j < kQk / 2; ++j) {
      const uint8_t lo =
          static_cast<uint8_t>(std::min(15, static_cast<int>((x[j] - min) * id + 0.5f)));
      const uint8_t hi =
          static_cast<uint8_t>(std::min(15, static_cast<int>((x[j + kQk / 2] - min) * id + 0.5f)));
      y[i].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void QuantizeQ8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQk) {
    float amax = 0.0f;
    for (int j = 0; j < kQk; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = F32ToF16(d);
    for (int j = 0; j < kQk; ++j) y[i].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
  }
}

}  // namespace

void DequantizeRowInto(GgmlType type, const void* src, float* dst, int64_t n) {
  const int64_t per_block = BlockElements(type);
  SPW_CHECK(n % per_block == 0) << n << " values is not a whole number of " << GgmlTypeName(type)
                                << " blocks";
  const int64_t nb = n / per_block;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::kF16:
      F16ToF32Row(static_cast<const uint16_t*>(src), dst, n);
      return;
    case GgmlType::kBF16:
      Bf16ToF32Row(static_cast<const uint16_t*>(src), dst, n);
      return;
    case GgmlType::kQ4_0:
      return DequantizeQ4_0(static_cast<const BlockQ4_0*>(src), dst, nb);
    case GgmlType::kQ4_1:
      return DequantizeQ4_1(static_cast<const BlockQ4_1*>(src), dst, nb);
    case GgmlType::kQ8_0:
      return DequantizeQ8_0(static_cast<const BlockQ8_0*>(src), dst, nb);
    case GgmlType::kQ4_K:
      return DequantizeQ4_K(static_cast<const BlockQ4_K*>(src), dst, nb);
    case GgmlType::kQ5_K:
      return DequantizeQ5_K(static_cast<const BlockQ5_K*>(src), dst, nb);
    case GgmlType::kQ6_K:
      return DequantizeQ6_K(static_cast<const BlockQ6_K*>(src), dst, nb);
    default:
      break;
  }
  SPW_CHECK(false) << "DequantizeRow does not support " << GgmlTypeName(type);
}

bool QuantizeRowSupported(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ8_0:
      return true;
    default:
      return false;
  }
}

void QuantizeRow(GgmlType type, const float* src, void* dst, int64_t n) {
  SPW_CHECK(QuantizeRowSupported(type)) << "QuantizeRow does not support " << GgmlTypeName(type);
  const int64_t per_block = BlockElements(type);
  SPW_CHECK(n % per_block == 0) << n << " values is not a whole number of " << GgmlTypeName(type)
                                << " blocks";
  const int64_t nb = n / per_block;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::kF16:
      return F32ToF16Row(src, static_cast<uint16_t*>(dst), n);
    case GgmlType::kBF16:
      return F32ToBf16Row(src, static_cast<uint16_t*>(dst), n);
    case GgmlType::kQ4_0:
      return QuantizeQ4_0(src, static_cast<BlockQ4_0*>(dst), nb);
    case GgmlType::kQ4_1:
      return QuantizeQ4_1(src, static_cast<BlockQ4_1*>(dst), nb);
    case GgmlType::kQ8_0:
      return QuantizeQ8_0(src, static_cast<BlockQ8_0*>(dst), nb);
    default:
      return;
  }
}

}  // namespace spillway::engine::cpu
