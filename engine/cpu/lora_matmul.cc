#include "engine/cpu/lora_matmul.h"

#include <immintrin.h>

#include "common/check.h"
#include "engine/cpu/vec_math.h"

namespace spillway::engine::cpu {
namespace {

float DotScalar(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  if (i + 8 <= n) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    i += 8;
  }
  float r = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

// y[o..o+8) += scale * B[o..o+8) · u, eight rows at a time: the eight dot products are summed
// horizontally together (one transpose of the accumulators) instead of one by one.
__attribute__((target("avx2,fma"))) void BlockAvx2(const LoraMatrixF32& b, const float* u,
                                                   float scale, float* y) {
  const int64_t rank = b.cols;
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t o = 0;
  for (; o + 8 <= b.rows; o += 8) {
    __m256 acc[8];
    for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= rank; j += 8) {
      const __m256 uj = _mm256_loadu_ps(u + j);
      for (int k = 0; k < 8; ++k) {
        acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(b.data + (o + k) * b.stride + j), uj, acc[k]);
      }
    }
    // Sum each acc[k] into lane k.
    const __m256 h01 = _mm256_hadd_ps(acc[0], acc[1]);
    const __m256 h23 = _mm256_hadd_ps(acc[2], acc[3]);
    const __m256 h45 = _mm256_hadd_ps(acc[4], acc[5]);
    const __m256 h67 = _mm256_hadd_ps(acc[6], acc[7]);
    const __m256 h0123 = _mm256_hadd_ps(h01, h23);
    const __m256 h4567 = _mm256_hadd_ps(h45, h67);
    // Lanes of h0123: [0,1,2,3 (low half) | 0,1,2,3 (high half)]; same for h4567 with 4..7.
    const __m256 lo = _mm256_permute2f128_ps(h0123, h4567, 0x20);
    const __m256 hi = _mm256_permute2f128_ps(h0123, h4567, 0x31);
    __m256 sum = _mm256_add_ps(lo, hi);
    if (j < rank) {
      alignas(32) float tail[8];
      for (int k = 0; k < 8; ++k)
        tail[k] = DotScalar(b.data + (o + k) * b.stride + j, u + j, rank - j);
      sum = _mm256_add_ps(sum, _mm256_load_ps(tail));
    }
    _mm256_storeu_ps(y + o, _mm256_fmadd_ps(vscale, sum, _mm256_loadu_ps(y + o)));
  }
  for (; o < b.rows; ++o) y[o] += scale * DotAvx2(b.data + o * b.stride, u, rank);
}

}  // namespace

void LoraAddRow(const float* x, const LoraMatrixF32& a, const LoraMatrixF32& b, float scale,
                float* u, float* y) {
  SPW_CHECK(b.cols == a.rows);
  if (HasAvx2Fma()) {
    for (int64_t j = 0; j < a.rows; ++j) u[j] = DotAvx2(a.data + j * a.stride, x, a.cols);
    BlockAvx2(b, u, scale, y);
    return;
  }
  for (int64_t j = 0; j < a.rows; ++j) u[j] = DotScalar(a.data + j * a.stride, x, a.cols);
  for (int64_t o = 0; o < b.rows; ++o) y[o] += scale * DotScalar(b.data + o * b.stride, u, b.cols);
}

}  // namespace spillway::engine::cpu
