#include "engine/cpu/lora_matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace spillway::engine::cpu {
namespace {

std::vector<float> Random(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = d(rng);
  return v;
}

// Ranks, output sizes and input sizes around the 8-wide blocks and tails of the AVX2 path, with
// row strides wider than the rows (as in packed weights).
TEST(LoraAddRow, MatchesDoubleReference) {
  std::mt19937 rng(7);
  for (int64_t rank : {1, 3, 8, 16, 19}) {
    for (int64_t out : {1, 7, 8, 17, 64}) {
      for (int64_t in : {5, 16, 40, 576}) {
        const int64_t a_stride = in + 3, b_stride = rank + 5;
        const std::vector<float> a = Random(rank * a_stride, rng);
        const std::vector<float> b = Random(out * b_stride, rng);
        const std::vector<float> x = Random(in, rng);
        std::vector<float> y = Random(out, rng);
        const std::vector<float> y0 = y;
        std::vector<float> u(static_cast<size_t>(rank));
        const float scale = 0.75f;
        LoraAddRow(x.data(), {.data = a.data(), .rows = rank, .cols = in, .stride = a_stride},
                   {.data = b.data(), .rows = out, .cols = rank, .stride = b_stride}, scale,
                   u.data(), y.data());
        for (int64_t o = 0; o < out; ++o) {
          double want = 0.0;
          for (int64_t j = 0; j < rank; ++j) {
            double uj = 0.0;
            for (int64_t c = 0; c < in; ++c) uj += double{a[j * a_stride + c]} * x[c];
            want += double{b[o * b_stride + j]} * uj;
          }
          want = y0[o] + scale * want;
          ASSERT_NEAR(y[o], want, 1e-4 * std::sqrt(double(in)) * std::sqrt(double(rank)))
              << "rank " << rank << " out " << out << " in " << in << " o " << o;
        }
      }
    }
  }
}

}  // namespace
}  // namespace spillway::engine::cpu
