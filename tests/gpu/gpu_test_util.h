// Helpers of the gpu tier (tests/gpu/): skipping without a device, one op run on the CPU and
// CUDA backends side by side from the same host inputs, and batch layouts built chunk by chunk.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_device.h"
#include "gtest/gtest.h"
#include "kvcache/ids.h"
#include "tests/test_paths.h"

namespace spillway::engine::testing {

// GTEST_SKIP()s the calling test when cudaGetDeviceCount finds no device.
#define SPW_SKIP_WITHOUT_GPU()                                                                   \
  do {                                                                                           \
    if (absl::StatusOr<cuda::CudaDeviceInfo> spw_gpu = cuda::ProbeCudaDevice(); !spw_gpu.ok()) { \
      GTEST_SKIP() << "no GPU: " << spw_gpu.status().message();                                  \
    }                                                                                            \
  } while (0)

// The real model the GPU tests run on: $SPILLWAY_GPU_MODEL, else the default model when it is
// in the cache; empty when neither (the test then skips).
inline std::string GpuModelPath() {
  if (const char* p = std::getenv("SPILLWAY_GPU_MODEL"); p != nullptr && *p != '\0') return p;
  const std::string d = spillway::testing::DefaultModelPath();
  return std::filesystem::exists(d) ? d : "";
}

inline std::vector<float> RandomFloats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// An activation holding `values` on each backend.
struct ActivationPair {
  Activation cpu, gpu;
};

inline ActivationPair Upload(cpu::CpuBackend& c, cuda::CudaBackend& g, int64_t rows, int64_t cols,
                             const std::vector<float>& values) {
  ActivationPair p{c.Scratch(rows, cols), g.Scratch(rows, cols)};
  std::copy(values.begin(), values.end(), p.cpu.data);
  g.CopyFromHost(values.data(), p.gpu.data, rows * cols);
  return p;
}

inline std::vector<float> ToHost(Backend& b, Activation a) {
  std::vector<float> v(a.rows * a.cols);
  b.CopyToHost(a, v.data());
  return v;
}

// Largest |a - b| over the elements, and the root mean square of `a` (the tolerance scale).
struct Diff {
  double max_abs = 0, rms = 0;
};
inline Diff Compare(const std::vector<float>& a, const std::vector<float>& b) {
  Diff d;
  EXPECT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    d.max_abs = std::max(d.max_abs, std::abs(double{a[i]} - b[i]));
    d.rms += double{a[i]} * a[i];
  }
  d.rms = std::sqrt(d.rms / std::max<size_t>(a.size(), 1));
  return d;
}

// Host arrays behind a BatchLayout of chunks (first position, tokens, block table).
struct Layout {
  std::vector<TokenId> tokens;
  std::vector<int32_t> positions, chunk_starts{0}, first_positions, table_starts{0};
  std::vector<kvcache::BlockId> tables;

  void AddChunk(int32_t first, int32_t count, const std::vector<kvcache::BlockId>& table) {
    for (int32_t i = 0; i < count; ++i) {
      tokens.push_back(static_cast<TokenId>((first + i) % 7));
      positions.push_back(first + i);
    }
    chunk_starts.push_back(chunk_starts.back() + count);
    first_positions.push_back(first);
    tables.insert(tables.end(), table.begin(), table.end());
    table_starts.push_back(static_cast<int32_t>(tables.size()));
  }
  BatchLayout View() const {
    return {tokens, positions, chunk_starts, first_positions, table_starts, tables};
  }
  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
};

}  // namespace spillway::engine::testing
