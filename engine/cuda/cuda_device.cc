#include "engine/cuda/cuda_device.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_format.h"

namespace spillway::engine::cuda {

absl::StatusOr<CudaDeviceInfo> ProbeCudaDevice(int ordinal) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    return absl::UnavailableError(
        absl::StrFormat("no CUDA device is available (cudaGetDeviceCount: %s)",
                        e != cudaSuccess ? cudaGetErrorString(e) : "0 devices"));
  }
  if (ordinal < 0 || ordinal >= count) {
    return absl::InvalidArgumentError(
        absl::StrFormat("CUDA device %d does not exist (%d devices)", ordinal, count));
  }
  cudaDeviceProp prop{};
  if (cudaError_t p = cudaGetDeviceProperties(&prop, ordinal); p != cudaSuccess) {
    return absl::UnavailableError(
        absl::StrFormat("cudaGetDeviceProperties(%d): %s", ordinal, cudaGetErrorString(p)));
  }
  CudaDeviceInfo info{.ordinal = ordinal,
                      .device_count = count,
                      .name = prop.name,
                      .total_bytes = static_cast<int64_t>(prop.totalGlobalMem),
                      .sm_count = prop.multiProcessorCount,
                      .compute_major = prop.major,
                      .compute_minor = prop.minor};
  size_t free_bytes = 0, total = 0;
  if (cudaSetDevice(ordinal) == cudaSuccess && cudaMemGetInfo(&free_bytes, &total) == cudaSuccess) {
    info.free_bytes = static_cast<int64_t>(free_bytes);
  }
  return info;
}

}  // namespace spillway::engine::cuda
