// cuBLAS of the CPU emulation (cublas_v2.h states the subset): a reference GEMM with cuBLAS's
// column-major contract, accumulating in double, queued on the handle's stream. Checked against
// a naive row-major reference by tests/emu/cublas_emu_test.cc.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/cpu/fp16.h"
#include "tests/emu/emu.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace {

float Load(const void* base, cudaDataType_t type, int64_t index) {
  if (type == CUDA_R_32F) return static_cast<const float*>(base)[index];
  return spillway::engine::cpu::Bf16ToF32(static_cast<const uint16_t*>(base)[index]);
}

size_t Bytes(cudaDataType_t type) { return type == CUDA_R_32F ? 4 : 2; }

// C = alpha · op(A) · op(B) + beta · C, column-major: element (i, j) of a matrix with leading
// dimension ld is at i + j · ld; op(A) is m × k (A is stored m × k, or k × m when transposed),
// op(B) is k × n, C is m × n, f32.
cublasStatus_t Gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, float alpha, const void* a, cudaDataType_t at, int lda, const void* b,
                    cudaDataType_t bt, int ldb, float beta, float* c, int ldc, const char* api) {
  if (h == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool a_t = ta != CUBLAS_OP_N, b_t = tb != CUBLAS_OP_N;  // real types: C is T
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, a_t ? k : m) || ldb < std::max(1, b_t ? n : k) ||
      ldc < std::max(1, m)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const bool reads_ab = k > 0 && alpha != 0.0f;
  const std::string what = std::string(api) + " " + std::to_string(m) + "x" + std::to_string(n) +
                           "x" + std::to_string(k);
  if (reads_ab) {
    // Stored A: (a_t ? k : m) rows by (a_t ? m : k) columns; the last column ends at row count.
    const int64_t a_rows = a_t ? k : m, a_cols = a_t ? m : k;
    const int64_t b_rows = b_t ? n : k, b_cols = b_t ? k : n;
    spw_emu::RequireDeviceRange(a, ((a_cols - 1) * int64_t{lda} + a_rows) * Bytes(at), what + " A");
    spw_emu::RequireDeviceRange(b, ((b_cols - 1) * int64_t{ldb} + b_rows) * Bytes(bt), what + " B");
  }
  spw_emu::RequireDeviceRange(c, ((n - 1) * int64_t{ldc} + m) * sizeof(float), what + " C");
  spw_emu::Enqueue(h->stream, what, [=] {
    // op(B) by columns once, then op(A) a row at a time (a decode step's lm_head would
    // otherwise be a vocabulary x hidden matrix of doubles per call), in double: each C
    // element one dot product.
    std::vector<double> b_cols(reads_ab ? size_t(k) * n : 0), a_row(reads_ab ? k : 0);
    for (int64_t j = 0; reads_ab && j < n; ++j) {
      for (int64_t p = 0; p < k; ++p) {
        b_cols[j * k + p] = Load(b, bt, b_t ? j + p * ldb : p + j * ldb);
      }
    }
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t p = 0; reads_ab && p < k; ++p) {
        a_row[p] = Load(a, at, a_t ? p + i * lda : i + p * lda);
      }
      for (int64_t j = 0; j < n; ++j) {
        // Four partial sums (p mod 4), added at the end: the compiler may vectorise them.
        double part[4] = {0, 0, 0, 0};
        const double* bj = b_cols.data() + j * k;
        int64_t p = 0;
        for (; reads_ab && p + 4 <= k; p += 4) {
          for (int q = 0; q < 4; ++q) part[q] += a_row[p + q] * bj[p + q];
        }
        for (; reads_ab && p < k; ++p) part[p % 4] += a_row[p] * bj[p];
        const double acc = (part[0] + part[1]) + (part[2] + part[3]);
        float& out = c[i + j * int64_t{ldc}];
        // beta == 0: C is output only (it may hold NaN), as cuBLAS documents.
        const double prior = beta == 0.0f ? 0.0 : double{beta} * out;
        out = static_cast<float>(double{alpha} * acc + prior);
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  const auto lock = spw_emu::ApiLock();
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  const auto lock = spw_emu::ApiLock();
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  cudaDeviceSynchronize();  // as cuBLAS: it waits for the handle's work
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  const auto lock = spw_emu::ApiLock();
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream) {
  const auto lock = spw_emu::ApiLock();
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  const auto lock = spw_emu::ApiLock();
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  spw_emu::RequireDeviceRange(workspace, bytes, "cublasSetWorkspace");
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  const auto lock = spw_emu::ApiLock();
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN_ERROR";
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float* alpha,
                           const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  const auto lock = spw_emu::ApiLock();
  return Gemm(handle, transa, transb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb,
              *beta, C, ldc, "cublasSgemm");
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C,
                            cudaDataType_t Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo) {
  const auto lock = spw_emu::ApiLock();
  const bool inputs_ok = Atype == Btype && (Atype == CUDA_R_16BF || Atype == CUDA_R_32F);
  const bool compute_ok =
      computeType == CUBLAS_COMPUTE_32F || computeType == CUBLAS_COMPUTE_32F_PEDANTIC;
  if (!inputs_ok || Ctype != CUDA_R_32F || !compute_ok) return CUBLAS_STATUS_NOT_SUPPORTED;
  return Gemm(handle, transa, transb, m, n, k, *static_cast<const float*>(alpha), A, Atype, lda, B,
              Btype, ldb, *static_cast<const float*>(beta), static_cast<float*>(C), ldc,
              "cublasGemmEx");
}
