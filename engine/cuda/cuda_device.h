// The CUDA device this process would run on: whether there is one, its name, memory and SM
// count. Used by the CLI to resolve `--device auto|cuda` and to size the KV pool from
// `--gpu-memory-utilization`, and by tests/gpu/ to skip without a GPU. Any thread.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace spillway::engine::cuda {

struct CudaDeviceInfo {
  int ordinal = 0;
  int device_count = 0;
  std::string name;
  int64_t total_bytes = 0;
  int64_t free_bytes = 0;
  int sm_count = 0;
  int compute_major = 0;
  int compute_minor = 0;
};

// Device `ordinal` of cudaGetDeviceCount's list; Unavailable naming the CUDA error (e.g. "no
// CUDA-capable device is detected") when there is none or the driver is missing.
absl::StatusOr<CudaDeviceInfo> ProbeCudaDevice(int ordinal = 0);

}  // namespace spillway::engine::cuda
