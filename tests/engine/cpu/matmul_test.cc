// MatMul of every weight type against a double-precision reference (dequantized weights times
// the f32 activations), on every instruction set this CPU runs, over awkward shapes.
//
// Tolerances. F32/F16/BF16 weights multiply f32 activations in f32, so the only error is f32
// rounding of the sums: |y - ref| <= 1e-5 * sum_c |w_c x_c|.
// Quantized weights multiply activations quantized to int8 per block (32 values for
// Q4_0/Q4_1/Q8_0, 256 for K-quants) with step d_b = max|x| / 127 over the block. Rounding moves
// each x_c by at most d_b / 2, so |y - ref| <= sum_c |w_c| * d_b(c) / 2 exactly (plus the f32
// slack above); that bound is checked for every output. For Gaussian x it is about 1% of
// sum_c |w_c x_c|, and the error is typically much smaller: the errors are independent, so
// the RMS error over many (>= 100) outputs, relative to the RMS of the outputs, is ~0.3-0.7%; the
// test requires it below 1.5%.
#include "engine/cpu/matmul.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cpu/fp16.h"
#include "engine/cpu/matmul_kernels.h"
#include "engine/cpu/quant_rows.h"

namespace spillway::engine::cpu {
namespace {

constexpr GgmlType kAllTypes[] = {GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16,
                                  GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0,
                                  GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

bool IsQuantized(GgmlType t) { return BlockElements(t) > 1; }

std::vector<MatMulIsa> SupportedIsas() {
  std::vector<MatMulIsa> out;
  for (MatMulIsa isa : {MatMulIsa::kScalar, MatMulIsa::kAvx2, MatMulIsa::kAvx512}) {
    if (MatMulIsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

struct Weights {
  GgmlType type;
  int64_t rows, cols;
  std::vector<uint8_t> data;
  std::vector<double> dense;  // dequantized, [rows, cols]
  WeightMatrix matrix() const {
    return WeightMatrix{.type = type,
                        .rows = rows,
                        .cols = cols,
                        .data = data.data(),
                        .row_bytes = RowBytes(type, cols).value()};
  }
};

// Random weights of `type`: Gaussian values quantized with QuantizeRow where it can, random
// block bytes with realistic f16 scales for the K-quants.
Weights MakeWeights(GgmlType type, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Weights w{type, rows, cols, {}, {}};
  const int64_t row_bytes = RowBytes(type, cols).value();
  w.data.resize(static_cast<size_t>(rows * row_bytes));
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = w.data.data() + r * row_bytes;
    if (QuantizeRowSupported(type)) {
      for (float& v : row) v = normal(rng) * 0.05f + 0.01f;
      QuantizeRow(type, row.data(), dst, cols);
    } else {
      for (int64_t i = 0; i < row_bytes; ++i) dst[i] = static_cast<uint8_t>(rng());
      const int64_t block_bytes = BlockBytes(type);
      for (int64_t b = 0; b < row_bytes / block_bytes; ++b) {
        uint8_t* blk = dst + b * block_bytes;
        const uint16_t d = F32ToF16(0.002f + 0.001f * (rng() % 8));
        const uint16_t dmin = F32ToF16(0.001f + 0.001f * (rng() % 4));
        if (type == GgmlType::kQ6_K) {
          std::memcpy(blk + 208, &d, 2);
        } else {
          std::memcpy(blk, &d, 2);
          std::memcpy(blk + 2, &dmin, 2);
        }
      }
    }
  }
  std::vector<float> deq(cols);
  w.dense.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRow(type, w.data.data() + r * row_bytes, deq.data(), cols);
    std::copy(deq.begin(), deq.end(), w.dense.begin() + r * cols);
  }
  return w;
}

std::vector<float> MakeActivations(int64_t n_tokens, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n_tokens * cols));
  for (float& v : x) v = normal(rng);
  if (!x.empty()) x[0] = 0.0f;
  return x;
}

struct Reference {
  std::vector<double> y;      // [n_tokens, rows]
  std::vector<double> bound;  // per output: the tolerance described at the top
  double rms = 0;
};

Reference ComputeReference(const Weights& w, const std::vector<float>& x, int64_t n_tokens) {
  Reference ref;
  ref.y.resize(static_cast<size_t>(n_tokens * w.rows));
  ref.bound.resize(ref.y.size());
  const int64_t block =
      w.type == GgmlType::kQ4_K || w.type == GgmlType::kQ5_K || w.type == GgmlType::kQ6_K ? 256
                                                                                          : 32;
  std::vector<double> half_step(w.cols);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xt = x.data() + t * w.cols;
    for (int64_t c0 = 0; c0 < w.cols; c0 += block) {
      float amax = 0;
      for (int64_t c = c0; c < std::min(w.cols, c0 + block); ++c)
        amax = std::max(amax, std::fabs(xt[c]));
      for (int64_t c = c0; c < std::min(w.cols, c0 + block); ++c) half_step[c] = amax / 127.0 / 2;
    }
    for (int64_t r = 0; r < w.rows; ++r) {
      double sum = 0, abs_sum = 0, quant_err = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        const double wv = w.dense[r * w.cols + c];
        sum += wv * xt[c];
        abs_sum += std::fabs(wv * xt[c]);
        quant_err += std::fabs(wv) * half_step[c];
      }
      ref.y[t * w.rows + r] = sum;
      // The quantization bound, plus f32 rounding slack (inflated a little for the f32 sums
      // of the quantization bound itself).
      ref.bound[t * w.rows + r] =
          (IsQuantized(w.type) ? quant_err * 1.001 : 0.0) + 1e-5 * abs_sum + 1e-30;
      ref.rms += sum * sum;
    }
  }
  ref.rms = std::sqrt(ref.rms / std::max<size_t>(1, ref.y.size()));
  return ref;
}

void CheckAgainstReference(const Weights& w, const std::vector<float>& x, int64_t n_tokens,
                           const Reference& ref, ThreadPool& pool) {
  std::vector<float> y(static_cast<size_t>(n_tokens * w.rows), NAN);
  MatMul(w.matrix(), x.data(), n_tokens, y.data(), pool);
  double err2 = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    ASSERT_LE(std::fabs(y[i] - ref.y[i]), ref.bound[i])
        << "output " << i << " (token " << i / w.rows << ", row " << i % w.rows << "): got " << y[i]
        << ", want " << ref.y[i];
    err2 += (y[i] - ref.y[i]) * (y[i] - ref.y[i]);
  }
  // The RMS statement is statistical: only meaningful over many outputs.
  if (y.size() < 100) return;
  const double rel_rms = std::sqrt(err2 / y.size()) / std::max(ref.rms, 1e-30);
  EXPECT_LT(rel_rms, IsQuantized(w.type) ? 1.5e-2 : 1e-6);
}

class MatMulTest : public ::testing::TestWithParam<GgmlType> {
 protected:
  void TearDown() override { ResetMatMulIsaForTesting(); }
};

TEST_P(MatMulTest, MatchesDoubleReferenceOnEveryIsa) {
  const GgmlType type = GetParam();
  const int64_t block = BlockElements(type);
  std::vector<int64_t> col_choices;
  if (block == 1) col_choices = {1, 7, 40, 576};
  if (block == 32) col_choices = {32, 96, 576};
  if (block == 256) col_choices = {256, 768};
  ThreadPool pool(2);
  uint32_t seed = 1;
  for (int64_t cols : col_choices) {
    for (int64_t rows : {1, 5, 17, 192}) {
      const Weights w = MakeWeights(type, rows, cols, seed++);
      for (int64_t n_tokens : {1, 3, 7, 33, 70}) {
        // 70 tokens takes the prefill split (token blocks of 64); one row count covers it.
        if (n_tokens == 70 && rows != 17) continue;
        const auto x = MakeActivations(n_tokens, cols, seed++);
        const Reference ref = ComputeReference(w, x, n_tokens);
        for (MatMulIsa isa : SupportedIsas()) {
          SCOPED_TRACE(testing::Message()
                       << GgmlTypeName(type) << " " << MatMulIsaName(isa) << " rows " << rows
                       << " cols " << cols << " tokens " << n_tokens);
          SetMatMulIsaForTesting(isa);
          CheckAgainstReference(w, x, n_tokens, ref, pool);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// Batch invariance: row t of the output depends only on row t of the input, bit for bit,
// whatever else shares the call (n_tokens, its position in the call, the other tokens), the
// thread count and so the task split. Calls of up to 64 tokens split by rows, longer calls by
// rows x token blocks; 23 rows leave micro-tiles of 4 and 3 rows, and the column counts leave
// partial runs of blocks (odd and even) and partial vectors.
TEST_P(MatMulTest, BatchInvariantOnEveryIsa) {
  const GgmlType type = GetParam();
  const int64_t block = BlockElements(type);
  std::vector<int64_t> col_choices;
  if (block == 1) col_choices = {37, 576};
  if (block == 32) col_choices = {544, 576};
  if (block == 256) col_choices = {512};
  constexpr int64_t kMaxTokens = 130;
  ThreadPool one(1), two(2);
  for (int64_t cols : col_choices) {
    const Weights w = MakeWeights(type, 23, cols, 300 + static_cast<uint32_t>(cols));
    const auto x = MakeActivations(kMaxTokens, cols, 400 + static_cast<uint32_t>(cols));
    for (MatMulIsa isa : SupportedIsas()) {
      SCOPED_TRACE(testing::Message()
                   << GgmlTypeName(type) << " " << MatMulIsaName(isa) << " cols " << cols);
      SetMatMulIsaForTesting(isa);
      // Each token alone.
      std::vector<float> alone(kMaxTokens * w.rows);
      for (int64_t t = 0; t < kMaxTokens; ++t) {
        MatMul(w.matrix(), x.data() + t * cols, 1, alone.data() + t * w.rows, one);
      }
      // The same tokens in calls of n, starting at several offsets, with 1 and 2 threads.
      for (int64_t n : {2, 3, 4, 5, 8, 17, 33, 64, 65, 130}) {
        for (ThreadPool* pool : {&one, &two}) {
          for (int64_t first = 0; first + n <= kMaxTokens; first += std::max<int64_t>(n, 61)) {
            std::vector<float> y(n * w.rows, NAN);
            MatMul(w.matrix(), x.data() + first * cols, n, y.data(), *pool);
            for (int64_t t = 0; t < n; ++t) {
              ASSERT_EQ(std::memcmp(y.data() + t * w.rows, alone.data() + (first + t) * w.rows,
                                    w.rows * sizeof(float)),
                        0)
                  << "token " << first + t << " in a call of " << n << " from " << first << " with "
                  << pool->num_threads() << " threads";
            }
          }
        }
      }
    }
  }
}

TEST_P(MatMulTest, IsasAgreeBitForBit) {
  // Every ISA quantizes the activations to the same int8 values, sums integers exactly and
  // follows the same order of f32 operations (matmul_kernels.h), so results are identical.
  const GgmlType type = GetParam();
  const int64_t cols = BlockElements(type) == 256 ? 512 : BlockElements(type) == 32 ? 544 : 579;
  const Weights w = MakeWeights(type, 37, cols, 99);
  const int64_t n_tokens = 9;
  const auto x = MakeActivations(n_tokens, cols, 100);
  ThreadPool pool(2);
  std::vector<float> want(n_tokens * w.rows), got(n_tokens * w.rows);
  SetMatMulIsaForTesting(MatMulIsa::kScalar);
  MatMul(w.matrix(), x.data(), n_tokens, want.data(), pool);
  for (MatMulIsa isa : SupportedIsas()) {
    SetMatMulIsaForTesting(isa);
    MatMul(w.matrix(), x.data(), n_tokens, got.data(), pool);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
        << MatMulIsaName(isa);
  }
}

// PackWeight only rearranges: MatMul on the packed matrix gives the plain matrix's bits, on
// every ISA, for runs of blocks that are whole, partial (odd and even) or all there is, and for
// decode, batched and prefill splits.
TEST_P(MatMulTest, PackedMatchesPlainOnEveryIsa) {
  const GgmlType type = GetParam();
  const int64_t block = BlockElements(type);
  std::vector<int64_t> col_choices;
  if (block == 1) col_choices = {37, 576};
  if (block == 32) col_choices = {96, 544, 576, 1024};
  if (block == 256) col_choices = {256, 768};
  ThreadPool pool(2);
  for (int64_t cols : col_choices) {
    const Weights w = MakeWeights(type, 23, cols, 500 + static_cast<uint32_t>(cols));
    const absl::StatusOr<std::unique_ptr<PackedWeight>> packed = PackWeight(w.matrix());
    ASSERT_TRUE(packed.ok()) << packed.status();
    const PackedWeight& p = **packed;
    EXPECT_EQ(p.type(), type);
    EXPECT_EQ(p.rows(), w.rows);
    EXPECT_EQ(p.cols(), cols);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p.data()) % 64, 0u);
    EXPECT_EQ(p.row_stride() % 64, 0);
    EXPECT_GE(p.row_stride(), RowBytes(type, cols).value());
    for (int64_t n_tokens : {1, 5, 70}) {
      const auto x = MakeActivations(n_tokens, cols, 600 + static_cast<uint32_t>(cols));
      for (MatMulIsa isa : SupportedIsas()) {
        SetMatMulIsaForTesting(isa);
        std::vector<float> want(n_tokens * w.rows, NAN), got(n_tokens * w.rows, NAN);
        MatMul(w.matrix(), x.data(), n_tokens, want.data(), pool);
        MatMul(p, x.data(), n_tokens, got.data(), pool);
        EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
            << GgmlTypeName(type) << " " << MatMulIsaName(isa) << " cols " << cols << " tokens "
            << n_tokens;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatMulTest, ::testing::ValuesIn(kAllTypes),
                         [](const auto& info) { return std::string(GgmlTypeName(info.param)); });

// MatMulShared quantizes x once for weights that read the same conversion: the bits of one
// MatMul per weight, on every ISA and split, and also where the weights' conversions differ
// (a K-quant beside legacy blocks, f32 beside Q4_1: one MatMul each).
TEST(MatMulShared, MatchesOneMatMulPerWeightOnEveryIsa) {
  const std::vector<std::vector<GgmlType>> sets = {
      {GgmlType::kQ4_1, GgmlType::kQ4_1, GgmlType::kQ4_1},
      {GgmlType::kQ4_0, GgmlType::kQ8_0, GgmlType::kQ4_1},
      {GgmlType::kQ4_K, GgmlType::kQ6_K},
      {GgmlType::kQ4_1, GgmlType::kQ6_K},
      {GgmlType::kF32, GgmlType::kQ4_1},
  };
  const int64_t cols = 768;
  const int64_t rows[] = {96, 24, 40};
  ThreadPool pool(2);
  for (const std::vector<GgmlType>& types : sets) {
    std::vector<std::unique_ptr<PackedWeight>> packed;
    for (size_t i = 0; i < types.size(); ++i) {
      const Weights w = MakeWeights(types[i], rows[i], cols, 900 + static_cast<uint32_t>(i));
      absl::StatusOr<std::unique_ptr<PackedWeight>> p = PackWeight(w.matrix());
      ASSERT_TRUE(p.ok()) << p.status();
      packed.push_back(*std::move(p));
    }
    for (int64_t n_tokens : {1, 3, 32, 70}) {
      const auto x = MakeActivations(n_tokens, cols, 950 + static_cast<uint32_t>(n_tokens));
      for (MatMulIsa isa : SupportedIsas()) {
        SetMatMulIsaForTesting(isa);
        std::vector<const PackedWeight*> ws;
        std::vector<std::vector<float>> want(types.size()), got(types.size());
        std::vector<float*> ys;
        for (size_t i = 0; i < types.size(); ++i) {
          ws.push_back(packed[i].get());
          want[i].assign(n_tokens * rows[i], NAN);
          got[i].assign(n_tokens * rows[i], NAN);
          MatMul(*packed[i], x.data(), n_tokens, want[i].data(), pool);
          ys.push_back(got[i].data());
        }
        MatMulShared(ws, x.data(), n_tokens, ys, pool);
        for (size_t i = 0; i < types.size(); ++i) {
          EXPECT_EQ(std::memcmp(got[i].data(), want[i].data(), got[i].size() * sizeof(float)), 0)
              << GgmlTypeName(types[i]) << " (weight " << i << ") " << MatMulIsaName(isa)
              << " tokens " << n_tokens;
        }
      }
    }
  }
  ResetMatMulIsaForTesting();
}

TEST(MatMul, SingleThreadPoolGivesSameResult) {
  const Weights w = MakeWeights(GgmlType::kQ4_1, 64, 576, 5);
  const auto x = MakeActivations(5, 576, 6);
  ThreadPool one(1), two(2);
  std::vector<float> a(5 * 64), b(5 * 64);
  MatMul(w.matrix(), x.data(), 5, a.data(), one);
  MatMul(w.matrix(), x.data(), 5, b.data(), two);
  EXPECT_EQ(a, b);
}

TEST(MatMul, PackWeightRejectsWhatMatMulCannotRun) {
  std::vector<uint8_t> data(1024);
  const WeightMatrix q8_1{
      .type = GgmlType::kQ8_1, .rows = 2, .cols = 32, .data = data.data(), .row_bytes = 36};
  EXPECT_EQ(PackWeight(q8_1).status().code(), absl::StatusCode::kInvalidArgument);
  const WeightMatrix ragged{
      .type = GgmlType::kQ4_1, .rows = 2, .cols = 48, .data = data.data(), .row_bytes = 40};
  EXPECT_EQ(PackWeight(ragged).status().code(), absl::StatusCode::kInvalidArgument);
  const WeightMatrix short_rows{
      .type = GgmlType::kQ4_1, .rows = 2, .cols = 64, .data = data.data(), .row_bytes = 39};
  EXPECT_EQ(PackWeight(short_rows).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MatMul, RowStrideLargerThanRow) {
  // row_bytes may exceed the packed row size (e.g. padded rows).
  const Weights w = MakeWeights(GgmlType::kQ8_0, 6, 64, 8);
  const int64_t packed = RowBytes(GgmlType::kQ8_0, 64).value();
  std::vector<uint8_t> padded(6 * (packed + 10));
  for (int r = 0; r < 6; ++r) std::memcpy(&padded[r * (packed + 10)], &w.data[r * packed], packed);
  WeightMatrix m = w.matrix();
  m.data = padded.data();
  m.row_bytes = packed + 10;
  const auto x = MakeActivations(2, 64, 9);
  ThreadPool pool(2);
  std::vector<float> a(12), b(12), c(12);
  MatMul(w.matrix(), x.data(), 2, a.data(), pool);
  MatMul(m, x.data(), 2, b.data(), pool);
  EXPECT_EQ(a, b);
  MatMul(*PackWeight(m).value(), x.data(), 2, c.data(), pool);
  EXPECT_EQ(a, c);
}

// The AVX-512 batch kernel (4 rows x up to 6 tokens from an unpacked panel, a last run of W
// blocks packed 4 or 8 lanes per row) against the scalar kernel and the 4 x 4 kernel before it,
// bit for bit, at every kind of last run: W = 0, 2 (4 lanes), 6, 7 (8 lanes), 11 (16), alone
// (nb < 16) and after whole runs; row counts leave groups of 1-3 rows and token counts every
// micro-tile width, in one call and in the prefill split.
TEST(MatMulWide, LastRunsAndTileEdgesMatchScalarBitForBit) {
  if (!MatMulIsaSupported(MatMulIsa::kAvx512)) GTEST_SKIP() << "no AVX-512 here";
  ThreadPool pool(2);
  uint32_t seed = 700;
  for (GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    for (int64_t cols : {224, 704, 864, 1024, 576}) {
      for (int64_t rows : {6, 23}) {
        const Weights w = MakeWeights(type, rows, cols, seed++);
        const absl::StatusOr<std::unique_ptr<PackedWeight>> packed = PackWeight(w.matrix());
        ASSERT_TRUE(packed.ok()) << packed.status();
        for (int64_t n_tokens : {4, 5, 7, 8, 11, 13, 19, 70}) {
          if (n_tokens == 70 && rows != 23) continue;
          const auto x = MakeActivations(n_tokens, cols, seed++);
          std::vector<float> want(n_tokens * rows, NAN), got(n_tokens * rows, NAN),
              base(n_tokens * rows, NAN);
          SetMatMulIsaForTesting(MatMulIsa::kScalar);
          MatMul(w.matrix(), x.data(), n_tokens, want.data(), pool);
          SetMatMulIsaForTesting(MatMulIsa::kAvx512);
          MatMul(**packed, x.data(), n_tokens, got.data(), pool);
          internal::SetKernelSetForTesting(internal::Avx512BaselineKernels());
          MatMul(**packed, x.data(), n_tokens, base.data(), pool);
          internal::SetKernelSetForTesting(nullptr);
          ResetMatMulIsaForTesting();
          ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
              << GgmlTypeName(type) << " cols " << cols << " rows " << rows << " tokens "
              << n_tokens;
          ASSERT_EQ(std::memcmp(base.data(), want.data(), base.size() * sizeof(float)), 0)
              << "baseline " << GgmlTypeName(type) << " cols " << cols << " rows " << rows
              << " tokens " << n_tokens;
        }
      }
    }
  }
}

TEST(MatMulQuantize, SimdQuantizersMatchScalarBitForBit) {
  std::vector<const internal::KernelSet*> sets = {&internal::ScalarKernels()};
  if (MatMulIsaSupported(MatMulIsa::kAvx2)) sets.push_back(internal::Avx2Kernels());
  if (MatMulIsaSupported(MatMulIsa::kAvx512)) sets.push_back(internal::Avx512Kernels());
  // 32 blocks: whole runs; 18 and 7: a partial last run (zero padding checked).
  for (int64_t cols : {1024, 576, 224}) {
    auto x = MakeActivations(1, cols, 11);
    x[100] = 0.5f * 127;                        // exact halves after scaling probe the rounding
    for (int i = 32; i < 64; ++i) x[i] = 0.0f;  // an all-zero block
    const int64_t bytes = internal::Run32RowBytes(cols);
    const int64_t scales = (cols / 32 + 15) / 16 * 16;
    std::vector<int8_t> q0(bytes, 1), q1(bytes, 2);
    std::vector<float> d0(scales, 1), d1(scales, 2), s0(scales, 1), s1(scales, 2);
    std::vector<int32_t> n0(scales, 1), n1(scales, 2);
    internal::QuantizeRow32Scalar(x.data(), cols, q0.data(), d0.data(), s0.data(), n0.data());
    for (int64_t b = 0; b < cols / 32; ++b) {
      int sum = 0;
      for (int i = 0; i < 32; ++i) sum += q0[internal::RunOffset(b, i)];
      ASSERT_EQ(sum, n0[b]) << "block " << b;
      ASSERT_EQ(s0[b], d0[b] * static_cast<float>(sum)) << "block " << b;
    }
    for (int64_t b = cols / 32; b < scales; ++b) {
      for (int i = 0; i < 32; ++i) ASSERT_EQ(q0[internal::RunOffset(b, i)], 0) << "padding " << b;
      ASSERT_EQ(d0[b], 0.0f);
      ASSERT_EQ(s0[b], 0.0f);
      ASSERT_EQ(n0[b], 0);
    }
    for (const auto* k : sets) {
      k->quantize32(x.data(), cols, q1.data(), d1.data(), s1.data(), n1.data());
      EXPECT_EQ(q0, q1) << k->name << " " << cols;
      EXPECT_EQ(d0, d1) << k->name << " " << cols;
      EXPECT_EQ(s0, s1) << k->name << " " << cols;
      EXPECT_EQ(n0, n1) << k->name << " " << cols;
    }
  }
  const int64_t cols = 1024;
  const auto x = MakeActivations(1, cols, 11);
  std::vector<int8_t> q0(cols), q1(cols);
  std::vector<float> d0(cols / 256), d1(cols / 256);
  std::vector<int16_t> b0(cols / 16), b1(cols / 16);
  internal::QuantizeRow256Scalar(x.data(), cols, q0.data(), d0.data(), b0.data());
  for (const auto* k : sets) {
    k->quantize256(x.data(), cols, q1.data(), d1.data(), b1.data());
    EXPECT_EQ(q0, q1) << k->name;
    EXPECT_EQ(d0, d1) << k->name;
    EXPECT_EQ(b0, b1) << k->name;
  }
}

}  // namespace
}  // namespace spillway::engine::cpu
