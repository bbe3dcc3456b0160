#include "engine/cuda/kv_copy_engine.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/check.h"

namespace spillway::engine::cuda {
namespace {

absl::Status CudaError(const char* what, cudaError_t e) {
  return absl::InternalError(absl::StrFormat("%s: %s", what, cudaGetErrorString(e)));
}

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PinnedHostBuffer>> PinnedHostBuffer::Allocate(int64_t bytes) {
  const size_t size = static_cast<size_t>(std::max<int64_t>(bytes, 0));
  void* data = nullptr;
  // NOTE(tiers): portable, so the pages are pinned for every context of the process.
  if (cudaError_t e = cudaHostAlloc(&data, std::max<size_t>(size, 1), cudaHostAllocPortable);
      e != cudaSuccess) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cudaHostAlloc of %d MiB of pinned host memory: %s", size >> 20, cudaGetErrorString(e)));
  }
  return std::unique_ptr<PinnedHostBuffer>(
      new PinnedHostBuffer(static_cast<std::byte*>(data), size));
}

PinnedHostBuffer::~PinnedHostBuffer() { cudaFreeHost(data_); }

absl::StatusOr<std::unique_ptr<KvCopyEngine>> KvCopyEngine::Create() {
  cudaStream_t stream = nullptr;
  if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess) {
    return absl::UnavailableError(
        absl::StrFormat("the KV copy stream: cudaStreamCreate: %s", cudaGetErrorString(e)));
  }
  cudaEvent_t ready = nullptr, writes = nullptr;
  cudaError_t e = cudaEventCreateWithFlags(&ready, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&writes, cudaEventDisableTiming);
  if (e != cudaSuccess) {
    if (ready != nullptr) cudaEventDestroy(ready);
    cudaStreamDestroy(stream);
    return absl::UnavailableError(
        absl::StrFormat("the KV copy events: cudaEventCreate: %s", cudaGetErrorString(e)));
  }
  return std::unique_ptr<KvCopyEngine>(new KvCopyEngine(stream, ready, writes));
}

KvCopyEngine::~KvCopyEngine() {
  cudaStreamSynchronize(stream_);
  for (auto& [ticket, copy] : in_flight_) {
    if (copy.done != nullptr) cudaEventDestroy(copy.done);
  }
  for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
  cudaEventDestroy(compute_ready_);
  cudaEventDestroy(writes_done_);
  cudaStreamDestroy(stream_);
}

CUevent_st* KvCopyEngine::TakeEvent() {
  if (!free_events_.empty()) {
    cudaEvent_t e = free_events_.back();
    free_events_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) return nullptr;
  return e;
}

kvcache::CopyTicket KvCopyEngine::StartToHost(CUstream_st* compute, void* host, const void* device,
                                              size_t width, size_t pitch, size_t rows) {
  return Start(compute, host, width, device, pitch, width, rows, /*to_device=*/false);
}

kvcache::CopyTicket KvCopyEngine::StartToDevice(CUstream_st* compute, void* device,
                                                const void* host, size_t width, size_t pitch,
                                                size_t rows) {
  return Start(compute, device, pitch, host, width, width, rows, /*to_device=*/true);
}

kvcache::CopyTicket KvCopyEngine::Start(CUstream_st* compute, void* dst, size_t dst_pitch,
                                        const void* src, size_t src_pitch, size_t width,
                                        size_t rows, bool to_device) {
  const kvcache::CopyTicket ticket = next_ticket_++;
  Copy& copy = in_flight_[ticket];
  copy.start = std::chrono::steady_clock::now();
  // The copy stream waits for what the compute stream has enqueued so far: the kernels that
  // wrote the block (a spill), or may still read its old contents (a load). The event can be
  // re-recorded at once: cudaStreamWaitEvent takes the work it names at the time of the call.
  cudaError_t e = cudaEventRecord(compute_ready_, compute);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(stream_, compute_ready_, 0);
  if (e == cudaSuccess) {
    e = cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows,
                          to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, stream_);
  }
  if (e == cudaSuccess) {
    copy.done = TakeEvent();
    if (copy.done == nullptr) {
      e = cudaErrorMemoryAllocation;
    } else {
      e = cudaEventRecord(copy.done, stream_);
    }
  }
  if (e == cudaSuccess && to_device) {
    e = cudaEventRecord(writes_done_, stream_);
    writes_pending_ = true;
  }
  if (e != cudaSuccess) {
    copy.status =
        CudaError(to_device ? "starting a KV block load" : "starting a KV block spill", e);
  }
  return ticket;
}

kvcache::CopyDone KvCopyEngine::Finish(std::map<kvcache::CopyTicket, Copy>::iterator it,
                                       absl::Status status) {
  kvcache::CopyDone done{
      .ticket = it->first, .status = std::move(status), .seconds = Since(it->second.start)};
  if (it->second.done != nullptr) free_events_.push_back(it->second.done);
  in_flight_.erase(it);
  return done;
}

void KvCopyEngine::Poll(std::vector<kvcache::CopyDone>& done) {
  // One stream runs the copies in order: the first one not done ends the poll (with 256
  // loads in flight, one query per step instead of 256).
  while (!in_flight_.empty()) {
    const auto it = in_flight_.begin();
    if (!it->second.status.ok()) {
      done.push_back(Finish(it, it->second.status));
      continue;
    }
    const cudaError_t e = cudaEventQuery(it->second.done);
    if (e == cudaErrorNotReady) return;
    done.push_back(
        Finish(it, e == cudaSuccess ? absl::OkStatus() : CudaError("a KV block copy", e)));
  }
}

kvcache::CopyDone KvCopyEngine::Wait(kvcache::CopyTicket ticket) {
  auto it = in_flight_.find(ticket);
  SPW_CHECK(it != in_flight_.end()) << "Wait of unknown KV copy " << ticket;
  if (!it->second.status.ok()) return Finish(it, it->second.status);
  const cudaError_t e = cudaEventSynchronize(it->second.done);
  return Finish(it, e == cudaSuccess ? absl::OkStatus() : CudaError("a KV block copy", e));
}

void KvCopyEngine::OrderBefore(CUstream_st* compute) {
  if (!writes_pending_) return;
  writes_pending_ = false;
  const cudaError_t e = cudaStreamWaitEvent(compute, writes_done_, 0);
  // NOTE(tiers): without this wait a forward pass could read a block before its load; that
  // would be wrong tokens, so a failure here is fatal (it is a broken device anyway).
  SPW_CHECK(e == cudaSuccess) << "cudaStreamWaitEvent: " << cudaGetErrorString(e);
}

}  // namespace spillway::engine::cuda
