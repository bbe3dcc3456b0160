#include "engine/cuda/device_memory.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "engine/cpu/fp16.h"
#include "engine/cpu/quant_rows.h"
#include "engine/cuda/cuda_check.h"

namespace spillway::engine::cuda {
namespace {

// cudaMemcpy from pageable memory returns once the source is staged, with the copy to the
// device possibly still in flight on the legacy default stream, which work on a non-blocking
// stream (CudaTrainModel's, the CudaBackend's) is not ordered after. Waiting for that stream
// makes the uploads complete, as their header promises, without waiting for other streams.
// NOTE(emu): found by the CUDA emulation (tests/emu/), whose legacy stream runs an upload
// only when something waits for it: CudaTrainModel read NaN weights.
void WaitForUploads() { SPW_CUDA_CHECK(cudaStreamSynchronize(nullptr)); }

}  // namespace

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

absl::Status DeviceBuffer::Reserve(size_t bytes) {
  if (bytes <= bytes_) return absl::OkStatus();
  // cudaFree waits for the device, so kernels still reading the old buffer have finished.
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  if (const cudaError_t e = cudaMalloc(&ptr_, bytes); e != cudaSuccess) {
    ptr_ = nullptr;
    (void)cudaGetLastError();  // clear the sticky-free allocation error
    return absl::ResourceExhaustedError(absl::StrFormat("cannot allocate %d MiB of GPU memory: %s",
                                                        bytes >> 20, cudaGetErrorString(e)));
  }
  bytes_ = bytes;
  return absl::OkStatus();
}

absl::StatusOr<DeviceBuffer> UploadF32Vector(const WeightTensor& t) {
  if (t.shape.size() != 1) {
    return absl::InvalidArgumentError("tensor " + t.name + " is not a vector");
  }
  const std::optional<int64_t> row_bytes = RowBytes(t.type, t.shape[0]);
  if (!row_bytes.has_value() || *row_bytes > t.nbytes) {
    return absl::InvalidArgumentError("tensor " + t.name + " has an inconsistent size");
  }
  std::vector<float> values(t.shape[0]);
  cpu::DequantizeRowInto(t.type, t.data, values.data(), t.shape[0]);
  DeviceBuffer buf;
  SPW_RETURN_IF_ERROR(buf.Reserve(values.size() * sizeof(float)));
  SPW_CUDA_CHECK(
      cudaMemcpy(buf.get(), values.data(), values.size() * sizeof(float), cudaMemcpyHostToDevice));
  WaitForUploads();
  return buf;
}

absl::StatusOr<DeviceBuffer> UploadBf16Matrix(const WeightTensor& t) {
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor %s has %d dimensions; weights have 1 or 2", t.name, t.shape.size()));
  }
  const int64_t cols = t.shape[0], rows = t.shape[1];
  const std::optional<int64_t> row_bytes = RowBytes(t.type, cols);
  if (!row_bytes.has_value() || *row_bytes * rows != t.nbytes) {
    return absl::InvalidArgumentError("tensor " + t.name + " has an inconsistent size");
  }
  DeviceBuffer buf;
  const size_t bytes = static_cast<size_t>(rows * cols) * sizeof(uint16_t);
  if (absl::Status s = buf.Reserve(bytes); !s.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("tensor %s (%d x %d bf16): %s", t.name, rows, cols, s.message()));
  }
  if (t.type == GgmlType::kBF16) {
    SPW_CUDA_CHECK(cudaMemcpy(buf.get(), t.data, bytes, cudaMemcpyHostToDevice));
  } else {
    // Groups of rows of about 8 M values: dequantize to f32, round to bf16, upload.
    const int64_t group = std::max<int64_t>(1, (int64_t{8} << 20) / cols);
    std::vector<float> f32(static_cast<size_t>(std::min(group, rows) * cols));
    std::vector<uint16_t> bf16(f32.size());
    for (int64_t r0 = 0; r0 < rows; r0 += group) {
      const int64_t n = std::min(group, rows - r0);
      for (int64_t r = 0; r < n; ++r) {
        cpu::DequantizeRowInto(t.type, t.data + (r0 + r) * *row_bytes, f32.data() + r * cols, cols);
      }
      cpu::F32ToBf16Row(f32.data(), bf16.data(), n * cols);
      SPW_CUDA_CHECK(cudaMemcpy(static_cast<uint16_t*>(buf.get()) + r0 * cols, bf16.data(),
                                n * cols * sizeof(uint16_t), cudaMemcpyHostToDevice));
    }
  }
  WaitForUploads();
  return buf;
}

}  // namespace spillway::engine::cuda
