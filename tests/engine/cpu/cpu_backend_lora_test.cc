#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/weights/model_file.h"

namespace spillway::engine::cpu {
namespace {

struct Adapter {
  std::vector<float> a, b;  // [rank, in], [out, rank]
  std::unique_ptr<BackendWeight> wa, wb;
};

// AddLora's one dispatch over every segment's rows: segments of uneven sizes, an empty one,
// rows no segment covers (left alone), two segments sharing an adapter, 1 and 3 threads.
TEST(CpuBackendAddLora, MatchesPerRowReference) {
  constexpr int64_t kIn = 40, kOut = 24, kRank = 5, kRows = 13;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (int threads : {1, 3}) {
    CpuBackend backend(threads);
    std::vector<Adapter> adapters(3);
    for (Adapter& ad : adapters) {
      ad.a.resize(kRank * kIn);
      ad.b.resize(kOut * kRank);
      for (float& f : ad.a) f = d(rng);
      for (float& f : ad.b) f = d(rng);
      auto wa = backend.LoadWeight({.name = "a",
                                    .type = GgmlType::kF32,
                                    .shape = {kIn, kRank},
                                    .data = reinterpret_cast<const uint8_t*>(ad.a.data()),
                                    .nbytes = 4 * kRank * kIn});
      auto wb = backend.LoadWeight({.name = "b",
                                    .type = GgmlType::kF32,
                                    .shape = {kRank, kOut},
                                    .data = reinterpret_cast<const uint8_t*>(ad.b.data()),
                                    .nbytes = 4 * kRank * kOut});
      ASSERT_TRUE(wa.ok() && wb.ok());
      ad.wa = *std::move(wa);
      ad.wb = *std::move(wb);
    }
    std::vector<float> x(kRows * kIn), y(kRows * kOut);
    for (float& f : x) f = d(rng);
    for (float& f : y) f = d(rng);
    const std::vector<float> y0 = y;
    const std::vector<std::pair<LoraRows, int>> segs = {
        {{.begin = 0, .end = 3, .scale = 0.5f}, 0},
        {{.begin = 3, .end = 3, .scale = 1.0f}, 1},
        {{.begin = 3, .end = 4, .scale = 2.0f}, 1},
        {{.begin = 6, .end = 11, .scale = 1.5f}, 2},
        {{.begin = 11, .end = 13, .scale = 0.25f}, 0}};
    std::vector<LoraRows> rows;
    for (auto [s, i] : segs) {
      s.a = adapters[i].wa.get();
      s.b = adapters[i].wb.get();
      rows.push_back(s);
    }
    backend.AddLora({x.data(), kRows, kIn}, rows, {y.data(), kRows, kOut});
    std::vector<double> want(y0.begin(), y0.end());
    for (const auto& [s, i] : segs) {
      const Adapter& ad = adapters[i];
      for (int64_t t = s.begin; t < s.end; ++t) {
        for (int64_t o = 0; o < kOut; ++o) {
          double acc = 0.0;
          for (int64_t j = 0; j < kRank; ++j) {
            double u = 0.0;
            for (int64_t c = 0; c < kIn; ++c) u += double{ad.a[j * kIn + c]} * x[t * kIn + c];
            acc += double{ad.b[o * kRank + j]} * u;
          }
          want[t * kOut + o] += s.scale * acc;
        }
      }
    }
    for (int64_t i = 0; i < kRows * kOut; ++i) {
      ASSERT_NEAR(y[i], want[i], 1e-4) << "threads " << threads << " index " << i;
    }
  }
}

}  // namespace
}  // namespace spillway::engine::cpu
