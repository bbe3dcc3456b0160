// The emulated cuBLAS (tests/emu/cublas.cc) against naive references, because a wrong
// emulated GEMM would make every emu test that goes through it worthless:
// - the column-major contract written out from cuBLAS's documentation (element (i, j) of a
//   matrix with leading dimension ld at i + j·ld; op(A) m×k; C = alpha·op(A)·op(B) + beta·C),
//   all four op combinations, padded leading dimensions, beta 0 over a NaN C;
// - the row-major call CudaTrainModel makes (C[M,N] = op(A)·op(B) as Cᵀ = op(B)ᵀ·op(A)ᵀ, B
//   first) against a triple loop over row-major arrays, for Sgemm and for GemmEx on bf16;
// - cuBLAS's argument errors and quick returns;
// and the emulated runtime's stream order: work on a non-blocking stream is not seen before
// that stream is synchronised, and a legacy-stream upload is not ordered before it.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "engine/cpu/fp16.h"
#include "gtest/gtest.h"

namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

template <typename T>
class Dev {
 public:
  explicit Dev(const std::vector<T>& v) : n_(v.size()) {
    EXPECT_EQ(cudaMalloc(&p_, n_ * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~Dev() { cudaFree(p_); }
  T* get() const { return p_; }
  std::vector<T> Get() const {
    std::vector<T> v(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }

 private:
  size_t n_;
  T* p_ = nullptr;
};

class CublasEmuTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(cublasCreate(&h_), CUBLAS_STATUS_SUCCESS); }
  void TearDown() override { cublasDestroy(h_); }
  cublasHandle_t h_ = nullptr;
};

// Random values, rounded to bf16 when `bf16` (the values a bf16 GEMM sees exactly).
std::vector<float> Values(size_t n, uint32_t seed, bool bf16) {
  std::vector<float> v = Random(n, seed);
  if (bf16) {
    for (float& x : v) x = spillway::engine::cpu::Bf16ToF32(spillway::engine::cpu::F32ToBf16(x));
  }
  return v;
}

std::vector<uint16_t> AsBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = spillway::engine::cpu::F32ToBf16(v[i]);
  return out;
}

TEST_F(CublasEmuTest, GemmsFollowTheColumnMajorContract) {
  struct Shape {
    int m, n, k, pad;
  };
  for (const bool bf16 : {false, true}) {
    for (const Shape s :
         {Shape{5, 7, 3, 0}, Shape{1, 9, 17, 2}, Shape{13, 1, 4, 1}, Shape{6, 6, 1, 3}}) {
      for (int ta = 0; ta < 2; ++ta) {
        for (int tb = 0; tb < 2; ++tb) {
          for (const float beta : {0.0f, 0.5f}) {
            const int lda = (ta ? s.k : s.m) + s.pad, ldb = (tb ? s.n : s.k) + s.pad;
            const int ldc = s.m + s.pad;
            const std::vector<float> a = Values(size_t(lda) * (ta ? s.m : s.k), 1, bf16);
            const std::vector<float> b = Values(size_t(ldb) * (tb ? s.k : s.n), 2, bf16);
            std::vector<float> c = Random(size_t(ldc) * s.n, 3);
            if (beta == 0.0f) c.assign(c.size(), NAN);  // must not be read
            const float alpha = 1.5f;
            // op(A)(i, p) = A(i, p) or A(p, i); X(r, c) = X[r + c·ld].
            std::vector<double> want(c.begin(), c.end());
            for (int i = 0; i < s.m; ++i) {
              for (int j = 0; j < s.n; ++j) {
                double dot = 0;
                for (int p = 0; p < s.k; ++p) {
                  const double av = ta ? a[p + size_t(i) * lda] : a[i + size_t(p) * lda];
                  const double bv = tb ? b[j + size_t(p) * ldb] : b[p + size_t(j) * ldb];
                  dot += av * bv;
                }
                const double prior = beta == 0.0f ? 0.0 : beta * double{c[i + size_t(j) * ldc]};
                want[i + size_t(j) * ldc] = alpha * dot + prior;
              }
            }
            const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
            const cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
            Dev<float> dc(c);
            if (bf16) {
              Dev<uint16_t> da(AsBf16(a)), db(AsBf16(b));
              ASSERT_EQ(cublasGemmEx(h_, opa, opb, s.m, s.n, s.k, &alpha, da.get(), CUDA_R_16BF,
                                     lda, db.get(), CUDA_R_16BF, ldb, &beta, dc.get(), CUDA_R_32F,
                                     ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                        CUBLAS_STATUS_SUCCESS);
            } else {
              Dev<float> da(a), db(b);
              ASSERT_EQ(cublasSgemm(h_, opa, opb, s.m, s.n, s.k, &alpha, da.get(), lda, db.get(),
                                    ldb, &beta, dc.get(), ldc),
                        CUBLAS_STATUS_SUCCESS);
            }
            const std::vector<float> got = dc.Get();
            for (size_t x = 0; x < got.size(); ++x) {
              const bool in_c = static_cast<int>(x % ldc) < s.m;
              if (!in_c) {  // the padding rows of C are left alone
                EXPECT_TRUE(beta == 0.0f ? std::isnan(got[x]) : got[x] == c[x]) << x;
                continue;
              }
              EXPECT_NEAR(got[x], want[x], 1e-6 * (1 + std::abs(want[x])))
                  << (bf16 ? "GemmEx" : "Sgemm") << " m" << s.m << " n" << s.n << " k" << s.k
                  << " ta" << ta << " tb" << tb << " beta" << beta << " at " << x;
            }
          }
        }
      }
    }
  }
}

// CudaTrainModel's call: row-major C[M,N] = alpha · op(A) · op(B) + beta · C with A [M,K]
// ([K,M] when ta) and B [K,N] ([N,K] when tb), as column-major Cᵀ = op(B)ᵀ · op(A)ᵀ.
template <typename T>
void RowMajorCase(cublasHandle_t h, bool ta, bool tb, int M, int N, int K, float alpha, float beta,
                  bool bf16) {
  // The stored values (bf16 or f32) and the f32 values the GEMM sees.
  auto stored = [](const std::vector<float>& f, std::vector<T>& s, std::vector<float>& seen) {
    s.resize(f.size());
    seen.resize(f.size());
    for (size_t i = 0; i < f.size(); ++i) {
      if constexpr (sizeof(T) == 2) {
        s[i] = spillway::engine::cpu::F32ToBf16(f[i]);
        seen[i] = spillway::engine::cpu::Bf16ToF32(s[i]);
      } else {
        s[i] = f[i];
        seen[i] = f[i];
      }
    }
  };
  std::vector<T> a, b;
  std::vector<float> av, bv;
  stored(Random(size_t(M) * K, 11), a, av);
  stored(Random(size_t(K) * N, 12), b, bv);
  const std::vector<float> c0 = Random(size_t(M) * N, 13);
  std::vector<double> want(c0.size());
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double dot = 0;
      for (int p = 0; p < K; ++p) {
        const double x = ta ? av[size_t(p) * M + i] : av[size_t(i) * K + p];
        const double y = tb ? bv[size_t(j) * K + p] : bv[size_t(p) * N + j];
        dot += x * y;
      }
      want[size_t(i) * N + j] = alpha * dot + beta * double{c0[size_t(i) * N + j]};
    }
  }
  Dev<T> da(a), db(b);
  Dev<float> dc(c0);
  const cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (bf16) {
    ASSERT_EQ(cublasGemmEx(h, opa, opb, N, M, K, &alpha, db.get(), CUDA_R_16BF, tb ? K : N,
                           da.get(), CUDA_R_16BF, ta ? M : K, &beta, dc.get(), CUDA_R_32F, N,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
  } else {
    ASSERT_EQ(cublasSgemm(h, opa, opb, N, M, K, &alpha, reinterpret_cast<const float*>(db.get()),
                          tb ? K : N, reinterpret_cast<const float*>(da.get()), ta ? M : K, &beta,
                          dc.get(), N),
              CUBLAS_STATUS_SUCCESS);
  }
  const std::vector<float> got = dc.Get();
  for (size_t x = 0; x < got.size(); ++x) {
    EXPECT_NEAR(got[x], want[x], 1e-6 * (1 + std::abs(want[x])))
        << "M" << M << " N" << N << " K" << K << " ta" << ta << " tb" << tb << " at " << x;
  }
}

TEST_F(CublasEmuTest, RowMajorCallsMatchANaiveRowMajorProduct) {
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      RowMajorCase<float>(h_, ta, tb, 7, 5, 11, 1.0f, 0.0f, false);
      RowMajorCase<float>(h_, ta, tb, 3, 17, 4, 0.5f, 1.0f, false);
      RowMajorCase<uint16_t>(h_, ta, tb, 9, 6, 13, 1.0f, 0.0f, true);
      RowMajorCase<uint16_t>(h_, ta, tb, 1, 33, 8, 2.0f, 1.0f, true);
    }
  }
}

TEST_F(CublasEmuTest, ArgumentErrorsAndQuickReturns) {
  const float one = 1.0f, zero = 0.0f;
  Dev<float> a(std::vector<float>(64, 1.0f)), c(std::vector<float>(64, 7.0f));
  // lda below m (op N) or below k (op T); ldc below m; a negative size.
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, a.get(), 3, a.get(), 3, &zero,
                        c.get(), 4),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_T, CUBLAS_OP_N, 4, 2, 3, &one, a.get(), 2, a.get(), 3, &zero,
                        c.get(), 4),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, a.get(), 4, a.get(), 3, &zero,
                        c.get(), 3),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 3, &one, a.get(), 4, a.get(), 3, &zero,
                        c.get(), 4),
            CUBLAS_STATUS_INVALID_VALUE);
  // f16 inputs are not emulated; say so rather than compute something else.
  EXPECT_EQ(cublasGemmEx(h_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a.get(), CUDA_R_16F, 2,
                         a.get(), CUDA_R_16F, 2, &zero, c.get(), CUDA_R_32F, 2, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_NOT_SUPPORTED);
  // m = 0 touches nothing; k = 0 scales C by beta.
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 0, 2, 3, &one, a.get(), 1, a.get(), 3, &zero,
                        c.get(), 1),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(c.Get()[0], 7.0f);
  const float half = 0.5f;
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 0, &one, a.get(), 2, a.get(), 1, &half,
                        c.get(), 2),
            CUBLAS_STATUS_SUCCESS);
  const std::vector<float> got = c.Get();
  EXPECT_EQ(got[0], 3.5f);
  EXPECT_EQ(got[3], 3.5f);
  EXPECT_EQ(got[4], 7.0f);
}

TEST_F(CublasEmuTest, HostPointersAndShortAllocationsStopTheProgram) {
  const float one = 1.0f, zero = 0.0f;
  std::vector<float> host(16, 1.0f);
  Dev<float> d(std::vector<float>(16, 1.0f));
  EXPECT_DEATH(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, host.data(), 4, d.get(), 4,
                           &zero, d.get(), 4),
               "A: not device memory");
  // C of 5 × 4 with ldc 5 needs 20 floats (80 bytes).
  EXPECT_DEATH(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 5, 4, 2, &one, d.get(), 5, d.get(), 2,
                           &zero, d.get(), 5),
               "C: 80 bytes at offset 0 run past the end of a 64-byte device allocation");
  EXPECT_DEATH(cudaMemcpy(host.data(), d.get(), 64, cudaMemcpyHostToDevice),
               "destination: not device memory");
}

TEST(CudaEmuStreamTest, NonBlockingStreamWorkIsSeenOnlyAfterItsSynchronize) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSetStream(h, s), CUBLAS_STATUS_SUCCESS);
  Dev<float> a(std::vector<float>{2.0f}), c(std::vector<float>{0.0f});
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const float one = 1.0f, zero = 0.0f;
  ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a.get(), 1, a.get(), 1, &zero,
                        c.get(), 1),
            CUBLAS_STATUS_SUCCESS);
  float v = -1;
  // The legacy stream does not wait for a non-blocking stream: this copy reads C as it was.
  ASSERT_EQ(cudaMemcpy(&v, c.get(), sizeof(v), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(v, 0.0f);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(&v, c.get(), sizeof(v), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(v, 4.0f);

  // An upload on the legacy stream is not ordered before the non-blocking stream's work: the
  // stream copies what was there before (cudaMalloc's NaN fill) unless the host waits first.
  float* fresh = nullptr;
  ASSERT_EQ(cudaMalloc(&fresh, sizeof(float)), cudaSuccess);
  const float three = 3.0f;
  ASSERT_EQ(cudaMemcpy(fresh, &three, sizeof(three), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(&v, fresh, sizeof(v), cudaMemcpyDeviceToHost, s), cudaSuccess);
  EXPECT_TRUE(std::isnan(v));
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(&v, fresh, sizeof(v), cudaMemcpyDeviceToHost, s), cudaSuccess);
  EXPECT_EQ(v, 3.0f);
  cudaFree(fresh);
  cublasDestroy(h);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

}  // namespace
