#include "kvcache/block_io.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iterator>
#include <utility>

#include "common/check.h"

namespace spillway::kvcache {
namespace {

class PlainHostBuffer final : public HostBuffer {
 public:
  explicit PlainHostBuffer(int64_t bytes)
      : size_(static_cast<size_t>(std::max<int64_t>(bytes, 0))) {
    constexpr size_t kAlign = 4096;
    const size_t rounded = std::max<size_t>((size_ + kAlign - 1) / kAlign * kAlign, kAlign);
    data_ = static_cast<std::byte*>(std::aligned_alloc(kAlign, rounded));
    SPW_CHECK(data_ != nullptr) << "cannot allocate " << rounded << " bytes of host memory";
  }
  ~PlainHostBuffer() override { std::free(data_); }
  PlainHostBuffer(const PlainHostBuffer&) = delete;
  PlainHostBuffer& operator=(const PlainHostBuffer&) = delete;
  std::span<std::byte> bytes() override { return {data_, size_}; }

 private:
  size_t size_;
  std::byte* data_ = nullptr;
};

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::unique_ptr<HostBuffer> AllocatePlainHostBuffer(int64_t bytes) {
  return std::make_unique<PlainHostBuffer>(bytes);
}

CopyTicket BlockIo::StartRead(BlockId block, std::span<std::byte> dst) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = Read(block, dst);
  done_.push_back({.ticket = next_ticket_, .status = std::move(status), .seconds = Since(start)});
  return next_ticket_++;
}

CopyTicket BlockIo::StartWrite(BlockId block, std::span<const std::byte> src) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = Write(block, src);
  done_.push_back({.ticket = next_ticket_, .status = std::move(status), .seconds = Since(start)});
  return next_ticket_++;
}

void BlockIo::PollCopies(std::vector<CopyDone>& done) {
  std::move(done_.begin(), done_.end(), std::back_inserter(done));
  done_.clear();
}

CopyDone BlockIo::WaitCopy(CopyTicket ticket) {
  auto it = std::find_if(done_.begin(), done_.end(),
                         [&](const CopyDone& d) { return d.ticket == ticket; });
  SPW_CHECK(it != done_.end()) << "WaitCopy of unknown copy " << ticket;
  CopyDone d = std::move(*it);
  done_.erase(it);
  return d;
}

}  // namespace spillway::kvcache
