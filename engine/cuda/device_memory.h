// Device memory of the CUDA code: DeviceBuffer (an allocation that frees itself) and the
// uploads of a model file's weights (bf16 matrices, f32 vectors). Used by the CudaBackend
// (cuda_backend.h includes this header) and by CudaTrainModel; kept apart from the backend so
// that code needing only these (the training path, and its CPU emulation in tests/emu/) does
// not pull in graphs, events and KV copies. Any thread.
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/weights/model_file.h"

namespace spillway::engine::cuda {

// A device allocation that frees itself; Reserve grows it (contents not kept).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;

  // Makes the buffer at least `bytes` long; ResourceExhausted when the device is full.
  absl::Status Reserve(size_t bytes);
  void* get() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// LoadWeight's uploads, for other users of the device's weights (CudaTrainModel): a 2-D
// tensor as bf16 [rows, cols] row-major (quantized GGUF types dequantized on the host first),
// a 1-D one as f32. Synchronous: the data is on the device when they return, for work on any
// stream. Any thread. InvalidArgument for a tensor of another rank or an inconsistent size;
// ResourceExhausted when the device is full.
absl::StatusOr<DeviceBuffer> UploadBf16Matrix(const WeightTensor& t);
absl::StatusOr<DeviceBuffer> UploadF32Vector(const WeightTensor& t);

}  // namespace spillway::engine::cuda
