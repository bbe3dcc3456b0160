// Checks of CUDA runtime and cuBLAS calls that cannot fail unless the program or the device is
// broken (a launch with bad arguments, a lost device): SPW_CHECK with the error's name. Calls
// that can fail for an expected reason (allocation, device probing) return a Status instead.
// engine/cuda/*.cc only.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "common/check.h"

#define SPW_CUDA_CHECK(expr)                                                                 \
  do {                                                                                       \
    const cudaError_t spw_cuda_e = (expr);                                                   \
    SPW_CHECK(spw_cuda_e == cudaSuccess) << #expr << ": " << cudaGetErrorString(spw_cuda_e); \
  } while (0)

#define SPW_CUBLAS_CHECK(expr)                                   \
  do {                                                           \
    const cublasStatus_t spw_cublas_s = (expr);                  \
    SPW_CHECK(spw_cublas_s == CUBLAS_STATUS_SUCCESS)             \
        << #expr << ": " << cublasGetStatusString(spw_cublas_s); \
  } while (0)
