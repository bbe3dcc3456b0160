// KvCopyEngine: the CUDA backend's asynchronous KV block copies (kvcache/block_io.h has the
// rules): a copy stream of their own (cudaStreamNonBlocking), one event per copy in flight from
// a pool of events created with cudaEventDisableTiming, and the ordering against the compute
// stream done on the device, never by a host wait:
//   - every copy first makes the copy stream wait on an event recorded on the compute stream,
//     so a device -> host copy sees every kernel enqueued before it that wrote the block (and a
//     host -> device copy cannot overtake a kernel still reading the block's old contents);
//   - OrderBefore(compute) makes the compute stream wait on the copy stream's last write
//     (cudaStreamWaitEvent), so the next forward pass reads loaded blocks only once they are in.
// Host buffers should be pinned (PinnedHostBuffer) for the copies to be asynchronous and at
// full PCIe speed; pageable memory works, but the driver then stages it synchronously.
//
// Engine-loop thread only (with the device current), like the backend that owns it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kvcache/block_io.h"

struct CUstream_st;
struct CUevent_st;

namespace spillway::engine::cuda {

// Page-locked host memory (cudaHostAlloc): what the host tier's slots live in on a GPU.
class PinnedHostBuffer final : public kvcache::HostBuffer {
 public:
  // ResourceExhausted when the driver cannot lock that much memory.
  static absl::StatusOr<std::unique_ptr<PinnedHostBuffer>> Allocate(int64_t bytes);
  ~PinnedHostBuffer() override;
  PinnedHostBuffer(const PinnedHostBuffer&) = delete;
  PinnedHostBuffer& operator=(const PinnedHostBuffer&) = delete;
  std::span<std::byte> bytes() override { return {data_, size_}; }
  bool pinned() const override { return true; }

 private:
  PinnedHostBuffer(std::byte* data, size_t size) : data_(data), size_(size) {}
  std::byte* data_;
  size_t size_;
};

class KvCopyEngine {
 public:
  // Creates the copy stream on the current device.
  static absl::StatusOr<std::unique_ptr<KvCopyEngine>> Create();
  // Waits for the copies in flight, then frees the stream and the events.
  ~KvCopyEngine();
  KvCopyEngine(const KvCopyEngine&) = delete;
  KvCopyEngine& operator=(const KvCopyEngine&) = delete;

  // A 2-D copy of `rows` rows of `width` bytes, between host memory (rows back to back) and
  // device memory (rows `pitch` bytes apart), after the work enqueued on `compute` so far.
  // `host` must stay valid until the copy is reported done. A copy that cannot be enqueued is
  // reported done at once with its error.
  kvcache::CopyTicket StartToHost(CUstream_st* compute, void* host, const void* device,
                                  size_t width, size_t pitch, size_t rows);
  kvcache::CopyTicket StartToDevice(CUstream_st* compute, void* device, const void* host,
                                    size_t width, size_t pitch, size_t rows);
  // Appends finished copies (cudaEventQuery, oldest first, up to the first one still in
  // flight: the stream runs them in order) to `done`; never blocks.
  void Poll(std::vector<kvcache::CopyDone>& done);
  // Blocks until copy `ticket` finished (cudaEventSynchronize); Poll will not report it.
  kvcache::CopyDone Wait(kvcache::CopyTicket ticket);
  // Makes `compute` wait, on the device, for every host -> device copy started so far.
  void OrderBefore(CUstream_st* compute);
  int32_t num_in_flight() const { return static_cast<int32_t>(in_flight_.size()); }

 private:
  struct Copy {
    CUevent_st* done = nullptr;  // null: failed at enqueue (status says why)
    absl::Status status = {};
    std::chrono::steady_clock::time_point start;
  };
  KvCopyEngine(CUstream_st* stream, CUevent_st* compute_ready, CUevent_st* writes_done)
      : stream_(stream), compute_ready_(compute_ready), writes_done_(writes_done) {}
  kvcache::CopyTicket Start(CUstream_st* compute, void* dst, size_t dst_pitch, const void* src,
                            size_t src_pitch, size_t width, size_t rows, bool to_device);
  kvcache::CopyDone Finish(std::map<kvcache::CopyTicket, Copy>::iterator it, absl::Status status);
  CUevent_st* TakeEvent();

  CUstream_st* stream_;
  CUevent_st* compute_ready_;    // re-recorded on the compute stream before each copy
  CUevent_st* writes_done_;      // re-recorded on the copy stream after each host -> device copy
  bool writes_pending_ = false;  // a write since the last OrderBefore
  std::vector<CUevent_st*> free_events_;
  std::map<kvcache::CopyTicket, Copy> in_flight_;  // oldest first
  kvcache::CopyTicket next_ticket_ = 1;
};

}  // namespace spillway::engine::cuda
