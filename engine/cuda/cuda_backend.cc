#include "engine/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "engine/cuda/attention_plan.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/cuda_device.h"
#include "kernels/elementwise.h"
#include "kernels/gemv.h"
#include "kernels/lora.h"
#include "kernels/paged_attention.h"
#include "kernels/sampling.h"
#include "kvcache/ids.h"

namespace spillway::engine::cuda {
namespace {

static_assert(kvcache::kBlockTokens == 16, "kernels/paged_attention.cu assumes 16-token blocks");

// A 2-D weight is bf16 [rows, cols] row-major; a 1-D one (norm, bias) f32 [cols].
class CudaWeight final : public BackendWeight {
 public:
  CudaWeight(int64_t rows, int64_t cols, bool is_vector, DeviceBuffer buffer)
      : rows_(rows), cols_(cols), is_vector_(is_vector), buffer_(std::move(buffer)) {}
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  const uint16_t* bf16() const {
    SPW_CHECK(!is_vector_);
    return static_cast<const uint16_t*>(buffer_.get());
  }
  const float* f32() const {
    SPW_CHECK(is_vector_);
    return static_cast<const float*>(buffer_.get());
  }
  bool is_vector() const { return is_vector_; }

 private:
  int64_t rows_, cols_;
  bool is_vector_;
  DeviceBuffer buffer_;
};

const CudaWeight& AsCuda(const BackendWeight& w) { return static_cast<const CudaWeight&>(w); }

// An adapter's kernels::LoraTableEntry per slot, on the device.
class CudaLoraTable final : public BackendLoraTable {
 public:
  CudaLoraTable(int64_t num_slots, DeviceBuffer entries)
      : num_slots_(num_slots), entries_(std::move(entries)) {}
  int64_t num_slots() const { return num_slots_; }
  const kernels::LoraTableEntry* entries() const {
    return static_cast<const kernels::LoraTableEntry*>(entries_.get());
  }

 private:
  int64_t num_slots_;
  DeviceBuffer entries_;
};

// Host to device copy of a pageable buffer: cudaMemcpyAsync returns once `src` is staged, so
// the caller may reuse it at once.
void Upload(const void* src, void* dst, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  SPW_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int ordinal) {
  SPW_ASSIGN_OR_RETURN(const CudaDeviceInfo info, ProbeCudaDevice(ordinal));
  if (cudaError_t e = cudaSetDevice(ordinal); e != cudaSuccess) {
    return absl::UnavailableError(absl::StrFormat("cudaSetDevice: %s", cudaGetErrorString(e)));
  }
  cudaStream_t stream = nullptr;
  if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess) {
    return absl::UnavailableError(absl::StrFormat("cudaStreamCreate: %s", cudaGetErrorString(e)));
  }
  cublasHandle_t handle = nullptr;
  if (cublasStatus_t s = cublasCreate(&handle); s != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(stream);
    return absl::UnavailableError(absl::StrFormat("cublasCreate: %s", cublasGetStatusString(s)));
  }
  SPW_CUBLAS_CHECK(cublasSetStream(handle, stream));
  return std::unique_ptr<CudaBackend>(new CudaBackend(ordinal, info.sm_count, stream, handle));
}

CudaBackend::CudaBackend(int ordinal, int sm_count, CUstream_st* stream, cublasContext* cublas)
    : ordinal_(ordinal), sm_count_(sm_count), stream_(stream), cublas_(cublas) {}

CudaBackend::~CudaBackend() {
  cudaStreamSynchronize(stream_);
  for (auto& [key, graph] : graphs_) cudaGraphExecDestroy(graph.exec);
  cublasDestroy(cublas_);
  cudaStreamDestroy(stream_);
}

void CudaBackend::SetDecodeGemv(bool on) {
  if (on == decode_gemv_) return;
  SPW_CHECK(!graph_mode_);
  SPW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (auto& [key, graph] : graphs_) SPW_CUDA_CHECK(cudaGraphExecDestroy(graph.exec));
  graphs_.clear();
  decode_gemv_ = on;
}

int64_t CudaBackend::KvBlockBytes(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim) {
  return 2 * num_layers * kvcache::kBlockTokens * num_kv_heads * head_dim * int64_t{2};
}

const void* CudaBackend::DeviceData(const BackendWeight& w) {
  const auto* c = dynamic_cast<const CudaWeight*>(&w);
  if (c == nullptr) return nullptr;
  return c->is_vector() ? static_cast<const void*>(c->f32()) : c->bf16();
}

absl::StatusOr<std::unique_ptr<BackendWeight>> CudaBackend::LoadWeight(const WeightTensor& t) {
  const bool vector = t.shape.size() == 1;
  absl::StatusOr<DeviceBuffer> buf = vector ? UploadF32Vector(t) : UploadBf16Matrix(t);
  if (!buf.ok()) {
    if (!absl::IsResourceExhausted(buf.status())) return buf.status();
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s; it does not fit on the GPU after %d MiB of weights",
                        buf.status().message(), weight_bytes_ >> 20));
  }
  weight_bytes_ += static_cast<int64_t>(buf->size());
  SPW_CUDA_CHECK(cudaDeviceSynchronize());  // see AllocateKv
  const int64_t rows = vector ? 1 : t.shape[1];
  return std::make_unique<CudaWeight>(rows, t.shape[0], vector, *std::move(buf));
}

absl::Status CudaBackend::AllocateKv(const KvLayout& layout) {
  if (layout.head_dim > kernels::kMaxHeadDim || layout.head_dim % 2 != 0) {
    return absl::UnimplementedError(absl::StrFormat(
        "the CUDA attention kernels take head sizes up to %d (even); this model has %d",
        kernels::kMaxHeadDim, layout.head_dim));
  }
  const int64_t bytes = int64_t{layout.num_blocks} *
                        KvBlockBytes(layout.num_layers, layout.num_kv_heads, layout.head_dim);
  if (absl::Status s = kv_.Reserve(static_cast<size_t>(bytes)); !s.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("cannot allocate a GPU KV cache of %d blocks (%d MiB): %s",
                        layout.num_blocks, bytes >> 20, s.message()));
  }
  SPW_CUDA_CHECK(cudaMemset(kv_.get(), 0, static_cast<size_t>(bytes)));
  // NOTE(cuda): weights and this memset went through the legacy default stream, which the
  // backend's non-blocking stream does not wait for: finish them before the first forward.
  SPW_CUDA_CHECK(cudaDeviceSynchronize());
  kv_bytes_ = bytes;
  kv_layout_ = layout;
  return absl::OkStatus();
}

int64_t CudaBackend::kv_block_bytes() const {
  return kv_bytes_ == 0
             ? 0
             : KvBlockBytes(kv_layout_.num_layers, kv_layout_.num_kv_heads, kv_layout_.head_dim);
}

// The K and V arrays of all layers lie back to back (K0, V0, K1, ...), each `per_cache`
// values: a block's slice of each is one row of a 2-D copy with that pitch.
CudaBackend::KvSlices CudaBackend::KvBlockSlices(kvcache::BlockId block, size_t bytes) const {
  SPW_CHECK(block >= 0 && block < kv_layout_.num_blocks) << block;
  SPW_CHECK(static_cast<int64_t>(bytes) == kv_block_bytes()) << bytes;
  const size_t slice = bytes / (2 * kv_layout_.num_layers);
  return {.first = static_cast<std::byte*>(kv_.get()) + block * slice,
          .width = slice,
          .pitch = slice * kv_layout_.num_blocks,
          .rows = static_cast<size_t>(2 * kv_layout_.num_layers)};
}

// The synchronous copies go on the backend's stream (ordered after the forward passes that
// wrote or read the block) and are waited for, so `dst` is filled, and `src` may be reused, on
// return.
absl::Status CudaBackend::CopyKvBlock(kvcache::BlockId block, void* host, size_t bytes,
                                      bool to_host) {
  const KvSlices s = KvBlockSlices(block, bytes);
  cudaError_t e = to_host ? cudaMemcpy2DAsync(host, s.width, s.first, s.pitch, s.width, s.rows,
                                              cudaMemcpyDeviceToHost, stream_)
                          : cudaMemcpy2DAsync(s.first, s.pitch, host, s.width, s.width, s.rows,
                                              cudaMemcpyHostToDevice, stream_);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
  if (e != cudaSuccess) {
    return absl::InternalError(absl::StrFormat(
        "%s KV block %d: %s", to_host ? "reading" : "writing", block, cudaGetErrorString(e)));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::ReadKvBlock(kvcache::BlockId block, std::span<std::byte> dst) {
  return CopyKvBlock(block, dst.data(), dst.size(), /*to_host=*/true);
}

absl::Status CudaBackend::WriteKvBlock(kvcache::BlockId block, std::span<const std::byte> src) {
  // NOTE(cuda): const_cast only to share CopyKvBlock; a host-to-device copy never writes `src`.
  return CopyKvBlock(block, const_cast<std::byte*>(src.data()), src.size(), /*to_host=*/false);
}

KvCopyEngine& CudaBackend::KvCopies() {
  if (kv_copies_ == nullptr) {
    SPW_CUDA_CHECK(cudaSetDevice(ordinal_));
    absl::StatusOr<std::unique_ptr<KvCopyEngine>> engine = KvCopyEngine::Create();
    SPW_CHECK(engine.ok()) << engine.status();
    kv_copies_ = *std::move(engine);
  }
  return *kv_copies_;
}

kvcache::CopyTicket CudaBackend::StartKvBlockRead(kvcache::BlockId block,
                                                  std::span<std::byte> dst) {
  const KvSlices s = KvBlockSlices(block, dst.size());
  return KvCopies().StartToHost(stream_, dst.data(), s.first, s.width, s.pitch, s.rows);
}

kvcache::CopyTicket CudaBackend::StartKvBlockWrite(kvcache::BlockId block,
                                                   std::span<const std::byte> src) {
  const KvSlices s = KvBlockSlices(block, src.size());
  return KvCopies().StartToDevice(stream_, s.first, src.data(), s.width, s.pitch, s.rows);
}

void CudaBackend::PollKvCopies(std::vector<kvcache::CopyDone>& done) {
  if (kv_copies_ != nullptr) kv_copies_->Poll(done);
}

kvcache::CopyDone CudaBackend::WaitKvCopy(kvcache::CopyTicket ticket) {
  return KvCopies().Wait(ticket);
}

std::unique_ptr<kvcache::HostBuffer> CudaBackend::AllocateKvHostBuffer(int64_t bytes) {
  absl::StatusOr<std::unique_ptr<PinnedHostBuffer>> pinned = PinnedHostBuffer::Allocate(bytes);
  if (!pinned.ok()) {
    // NOTE(tiers): plain memory still works (the driver stages each copy, synchronously), so a
    // host too small to lock --kv-host-bytes runs slower rather than not at all.
    spdlog::warn("KV host tier in pageable memory, copies will not overlap: {}",
                 pinned.status().ToString());
    return nullptr;
  }
  return *std::move(pinned);
}

void CudaBackend::BeginForward(const BatchLayout& layout) {
  Stale();
  // The engine loop may run on another thread than the one that created the backend, and the
  // current device is per thread.
  SPW_CUDA_CHECK(cudaSetDevice(ordinal_));
  // Blocks loaded from the host tier are in before this pass reads them (a device-side wait).
  if (kv_copies_ != nullptr) kv_copies_->OrderBefore(stream_);
  layout_ = layout;
  next_scratch_ = 0;
  planned_heads_ = 0;
  max_keys_ = FillBatchHost(layout, static_cast<int64_t>(layout.tokens.size()));
  SPW_CHECK(batch_dev_.Reserve(batch_host_.size() * sizeof(int32_t)).ok());
  Upload(batch_host_.data(), batch_dev_.get(), batch_host_.size() * sizeof(int32_t), stream_);
  SPW_CHECK(row_lora_dev_.Reserve(layout.row_lora.size() * sizeof(void*)).ok());
  UploadRowLora(layout, row_lora_dev_);
}

int64_t CudaBackend::FillBatchHost(const BatchLayout& layout, int64_t stride) {
  const int64_t n = static_cast<int64_t>(layout.tokens.size());
  SPW_CHECK(n <= stride);
  tokens_off_ = 0;
  positions_off_ = stride;
  slots_off_ = 2 * stride;
  tables_off_ = 3 * stride;
  batch_host_.assign(3 * stride + layout.block_tables.size(), 0);
  std::copy(layout.tokens.begin(), layout.tokens.end(), batch_host_.begin() + tokens_off_);
  std::copy(layout.positions.begin(), layout.positions.end(), batch_host_.begin() + positions_off_);
  std::copy(layout.block_tables.begin(), layout.block_tables.end(),
            batch_host_.begin() + tables_off_);
  return KvSlots(layout, std::span<int32_t>(batch_host_).subspan(slots_off_, n));
}

const int32_t* CudaBackend::BatchBase() const {
  return static_cast<const int32_t*>(graph_mode_ ? graph_batch_.get() : batch_dev_.get());
}

void CudaBackend::ReserveGraphBuffer(DeviceBuffer& buf, size_t bytes) {
  SPW_CHECK(buf.size() >= bytes || graphs_.empty())
      << "a decode graph buffer would move (" << buf.size() << " -> " << bytes << " bytes)";
  const absl::Status s = buf.Reserve(bytes);
  SPW_CHECK(s.ok()) << s;
}

Activation CudaBackend::Scratch(int64_t rows, int64_t cols) {
  // No Stale(): a scratch buffer is handed out once per forward pass (BeginForward clears the
  // copy), so the one bf16_of_ names is not reallocated here; and the model takes its q/k/v and
  // gate/up outputs between the norm and their GEMMs.
  if (graph_mode_) {
    // Sized for the largest bucket, so every graph sees the same addresses.
    if (next_scratch_ == graph_scratch_.size()) graph_scratch_.emplace_back();
    DeviceBuffer& buf = graph_scratch_[next_scratch_++];
    ReserveGraphBuffer(
        buf, static_cast<size_t>(std::max(rows, kMaxDecodeGraphRows) * std::max<int64_t>(cols, 1)) *
                 sizeof(float));
    return {.data = static_cast<float*>(buf.get()), .rows = rows, .cols = cols};
  }
  if (next_scratch_ == scratch_.size()) scratch_.emplace_back();
  DeviceBuffer& buf = scratch_[next_scratch_++];
  const absl::Status s =
      buf.Reserve(static_cast<size_t>(std::max<int64_t>(rows * cols, 1)) * sizeof(float));
  SPW_CHECK(s.ok()) << s;
  return {.data = static_cast<float*>(buf.get()), .rows = rows, .cols = cols};
}

void CudaBackend::Embed(const BackendWeight& table, Activation out) {
  Stale();
  const CudaWeight& w = AsCuda(table);
  SPW_CHECK(out.cols == w.cols() && out.rows == static_cast<int64_t>(layout_.tokens.size()));
  const auto* tokens = BatchBase() + tokens_off_;
  SPW_CUDA_CHECK(kernels::EmbedBf16(w.bf16(), tokens, out.rows, out.cols, out.data, stream_));
}

void CudaBackend::RmsNorm(Activation x, const BackendWeight& w, float eps, Activation out) {
  Stale();
  SPW_CHECK(w.cols() == x.cols && out.cols == x.cols && out.rows == x.rows);
  SPW_CUDA_CHECK(kernels::RmsNorm(nullptr, x.data, AsCuda(w).f32(), x.rows, x.cols, eps, out.data,
                                  Bf16Copy(out), stream_));
}

void CudaBackend::AddRmsNorm(Activation residual, Activation x, const BackendWeight& w, float eps,
                             Activation out) {
  Stale();
  SPW_CHECK(w.cols() == x.cols && residual.cols == x.cols && residual.rows == x.rows);
  SPW_CUDA_CHECK(kernels::RmsNorm(residual.data, x.data, AsCuda(w).f32(), x.rows, x.cols, eps,
                                  out.data, Bf16Copy(out), stream_));
}

uint16_t* CudaBackend::Bf16Copy(Activation a) {
  if (graph_mode_) {
    ReserveGraphBuffer(graph_bf16_,
                       static_cast<size_t>(std::max(a.rows, kMaxDecodeGraphRows) * a.cols) * 2);
  } else {
    const absl::Status s = bf16_input_.Reserve(static_cast<size_t>(a.rows * a.cols) * 2);
    SPW_CHECK(s.ok()) << s;
  }
  bf16_of_ = a;
  return static_cast<uint16_t*>(Bf16Buffer().get());
}

const uint16_t* CudaBackend::Bf16Input(Activation x) {
  if (x.data == bf16_of_.data && x.rows == bf16_of_.rows && x.cols == bf16_of_.cols) {
    return static_cast<const uint16_t*>(Bf16Buffer().get());
  }
  uint16_t* xb = Bf16Copy(x);
  SPW_CUDA_CHECK(kernels::F32ToBf16(x.data, x.rows * x.cols, xb, stream_));
  return xb;
}

void CudaBackend::MatMul(const BackendWeight& w, Activation x, Activation y) {
  const CudaWeight& m = AsCuda(w);
  SPW_CHECK(x.cols == m.cols() && y.cols == m.rows() && x.rows == y.rows)
      << x.cols << " " << m.cols() << " " << y.cols << " " << m.rows();
  if (x.rows == 0) return;
  const uint16_t* xb = Bf16Input(x);
  if (y.data == x.data) Stale();  // (the model never multiplies in place)
  if (decode_gemv_ && kernels::GemvFits(x.rows, x.cols)) {
    SPW_CUDA_CHECK(kernels::GemvBf16(m.bf16(), xb, x.rows, x.cols, m.rows(), y.data, stream_));
    return;
  }
  // cuBLAS is column-major: the row-major W [out, in] is a column-major [in, out] matrix, x
  // [n, in] a column-major [in, n] one, and y [n, out] is yᵀ [out, n] = Wᵀ · x.
  const float alpha = 1.0f, beta = 0.0f;
  SPW_CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m.rows()),
                                static_cast<int>(x.rows), static_cast<int>(m.cols()), &alpha,
                                m.bf16(), CUDA_R_16BF, static_cast<int>(m.cols()), xb, CUDA_R_16BF,
                                static_cast<int>(x.cols), &beta, y.data, CUDA_R_32F,
                                static_cast<int>(y.cols), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::AddLora(Activation x, std::span<const LoraRows> segments, Activation y) {
  SPW_CHECK(x.rows == y.rows);
  const uint16_t* xb = Bf16Input(x);
  if (y.data == bf16_of_.data) Stale();
  // Decode-sized segments (a row or a few per sequence) go to the gathered kernels, up to
  // kMaxLoraSegments at a time, so a batch mixing many adapters costs two launches rather than
  // three per adapter; segments of many rows (prefill) go to cuBLAS, whose GEMMs read each
  // adapter's A once for all of its rows.
  std::array<kernels::LoraSegment, kernels::kMaxLoraSegments> gathered;
  int num_gathered = 0;
  int64_t gathered_rows = 0;
  auto flush = [&] {
    if (num_gathered == 0) return;
    SPW_CHECK(lora_u_
                  .Reserve(static_cast<size_t>(gathered_rows) * kernels::kMaxGatheredLoraRank *
                           sizeof(float))
                  .ok());
    SPW_CUDA_CHECK(kernels::AddLoraGathered(xb, x.cols, gathered.data(), num_gathered,
                                            static_cast<float*>(lora_u_.get()), y.data, y.cols,
                                            stream_));
    num_gathered = 0;
    gathered_rows = 0;
  };
  for (const LoraRows& s : segments) {
    const CudaWeight& a = AsCuda(*s.a);
    const CudaWeight& b = AsCuda(*s.b);
    SPW_CHECK(a.cols() == x.cols && b.rows() == y.cols && b.cols() == a.rows() && 0 <= s.begin &&
              s.begin <= s.end && s.end <= x.rows);
    const int64_t n = s.end - s.begin, rank = a.rows();
    if (n == 0) continue;
    if (n < kLoraGemmRows && rank <= kernels::kMaxGatheredLoraRank) {
      gathered[num_gathered++] = {.a = a.bf16(),
                                  .b = b.bf16(),
                                  .begin = s.begin,
                                  .end = s.end,
                                  .rank = static_cast<int32_t>(rank),
                                  .scale = s.scale};
      gathered_rows += n;
      if (num_gathered == kernels::kMaxLoraSegments) flush();
      continue;
    }
    SPW_CHECK(lora_gemm_u_.Reserve(static_cast<size_t>(n * rank) * sizeof(float)).ok());
    SPW_CHECK(lora_u_bf16_.Reserve(static_cast<size_t>(n * rank) * 2).ok());
    auto* u = static_cast<float*>(lora_gemm_u_.get());
    auto* ub = static_cast<uint16_t*>(lora_u_bf16_.get());
    const float one = 1.0f, zero = 0.0f;
    // Column-major as in MatMul: uᵀ [rank, n] = Aᵀ · x_segᵀ, then y_segᵀ += scale · Bᵀ · uᵀ.
    SPW_CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rank),
                                  static_cast<int>(n), static_cast<int>(x.cols), &one, a.bf16(),
                                  CUDA_R_16BF, static_cast<int>(x.cols), xb + s.begin * x.cols,
                                  CUDA_R_16BF, static_cast<int>(x.cols), &zero, u, CUDA_R_32F,
                                  static_cast<int>(rank), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    SPW_CUDA_CHECK(kernels::F32ToBf16(u, n * rank, ub, stream_));
    SPW_CUBLAS_CHECK(cublasGemmEx(
        cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(y.cols), static_cast<int>(n),
        static_cast<int>(rank), &s.scale, b.bf16(), CUDA_R_16BF, static_cast<int>(rank), ub,
        CUDA_R_16BF, static_cast<int>(rank), &one, y.data + s.begin * y.cols, CUDA_R_32F,
        static_cast<int>(y.cols), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  flush();
}

absl::StatusOr<std::unique_ptr<BackendLoraTable>> CudaBackend::MakeLoraTable(
    std::span<const LoraSlotWeights> slots, float scale) {
  std::vector<kernels::LoraTableEntry> entries(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i].a == nullptr) continue;
    const CudaWeight& a = AsCuda(*slots[i].a);
    const CudaWeight& b = AsCuda(*slots[i].b);
    SPW_CHECK(b.cols() == a.rows());
    // The by-row kernels keep a row's rank-sized product in shared memory; an adapter of a
    // larger rank runs its steps eagerly (AddLora sends it to cuBLAS).
    if (a.rows() > kernels::kMaxGatheredLoraRank) return nullptr;
    entries[i] = {
        .a = a.bf16(), .b = b.bf16(), .rank = static_cast<int32_t>(a.rows()), .scale = scale};
  }
  DeviceBuffer buf;
  SPW_RETURN_IF_ERROR(buf.Reserve(std::max<size_t>(1, entries.size()) * sizeof(entries[0])));
  // On the compute stream, so that the passes using the table run after the copy (a plain
  // cudaMemcpy from pageable memory may still be in flight when it returns).
  SPW_CUDA_CHECK(cudaSetDevice(ordinal_));
  Upload(entries.data(), buf.get(), entries.size() * sizeof(entries[0]), stream_);
  return std::make_unique<CudaLoraTable>(static_cast<int64_t>(slots.size()), std::move(buf));
}

void CudaBackend::UploadRowLora(const BatchLayout& layout, DeviceBuffer& dst) {
  row_lora_host_.clear();
  for (const BackendLoraTable* t : layout.row_lora) {
    row_lora_host_.push_back(t == nullptr ? nullptr
                                          : static_cast<const CudaLoraTable*>(t)->entries());
  }
  const size_t bytes = row_lora_host_.size() * sizeof(row_lora_host_[0]);
  SPW_CHECK(dst.size() >= bytes);
  Upload(row_lora_host_.data(), dst.get(), bytes, stream_);
}

void CudaBackend::AddLoraByRow(Activation x, std::span<const int64_t> slots,
                               std::span<const Activation> ys) {
  static_assert(kMaxLoraByRowSlots == kernels::kMaxLoraByRowOutputs);
  SPW_CHECK(slots.size() == ys.size() && slots.size() <= kMaxLoraByRowSlots);
  SPW_CHECK(static_cast<int64_t>(layout_.row_lora.size()) == x.rows)
      << "AddLoraByRow needs every row's adapter table in the layout";
  std::array<kernels::LoraByRowOutput, kernels::kMaxLoraByRowOutputs> outputs;
  for (size_t i = 0; i < slots.size(); ++i) {
    SPW_CHECK(ys[i].rows == x.rows);
    for (const BackendLoraTable* t : layout_.row_lora) {
      SPW_CHECK(t == nullptr ||
                (slots[i] >= 0 && slots[i] < static_cast<const CudaLoraTable*>(t)->num_slots()));
    }
    outputs[i] = {.slot = slots[i], .y = ys[i].data, .out = ys[i].cols};
  }
  const uint16_t* xb = Bf16Input(x);
  for (const Activation& y : ys) {
    if (y.data == bf16_of_.data) Stale();
  }
  // The graph's u is reserved for kMaxDecodeGraphRows rows by RunDecodeGraph.
  DeviceBuffer& u = graph_mode_ ? graph_lora_u_ : lora_u_;
  if (!graph_mode_) {
    SPW_CHECK(u.Reserve(kMaxLoraByRowSlots * static_cast<size_t>(x.rows) *
                        kernels::kMaxGatheredLoraRank * sizeof(float))
                  .ok());
  }
  const auto* tables = static_cast<const kernels::LoraTableEntry* const*>(
      (graph_mode_ ? graph_row_lora_ : row_lora_dev_).get());
  SPW_CUDA_CHECK(kernels::AddLoraByRow(xb, x.cols, tables, outputs.data(),
                                       static_cast<int>(slots.size()), static_cast<int>(x.rows),
                                       static_cast<float*>(u.get()), stream_));
}

void CudaBackend::AddBias(Activation y, const BackendWeight& bias) {
  Stale();
  SPW_CHECK(bias.cols() == y.cols);
  SPW_CUDA_CHECK(kernels::AddBias(y.data, AsCuda(bias).f32(), y.rows, y.cols, stream_));
}

void CudaBackend::Rope(Activation x, int64_t num_heads, const RopeTable& rope) {
  Stale();
  const int64_t d = x.cols / num_heads;
  SPW_CHECK(static_cast<int64_t>(rope.inv_freq.size()) * 2 == d)
      << rope.inv_freq.size() << " " << d;
  SPW_CHECK(x.rows == static_cast<int64_t>(layout_.positions.size()));
  if (rope_host_ != rope.inv_freq) {
    rope_host_ = rope.inv_freq;
    SPW_CHECK(rope_dev_.Reserve(rope_host_.size() * sizeof(float)).ok());
    Upload(rope_host_.data(), rope_dev_.get(), rope_host_.size() * sizeof(float), stream_);
  }
  const auto* positions = BatchBase() + positions_off_;
  SPW_CUDA_CHECK(kernels::Rope(x.data, positions, static_cast<const float*>(rope_dev_.get()),
                               x.rows, num_heads, d, rope.style == RopeStyle::kNeox, stream_));
}

void CudaBackend::SwiGlu(Activation gate, Activation up, Activation out) {
  Stale();
  SPW_CHECK(gate.rows == up.rows && gate.cols == up.cols && out.cols == gate.cols);
  SPW_CUDA_CHECK(
      kernels::SwiGlu(gate.data, up.data, gate.rows * gate.cols, out.data, Bf16Copy(out), stream_));
}

void CudaBackend::PlanForHeads(int64_t num_heads) {
  planned_heads_ = num_heads;
  plan_ = cuda::PlanAttention(layout_, num_heads, kv_layout_.num_kv_heads,
                              kernels::MaxAttentionRows(static_cast<int>(kv_layout_.head_dim)),
                              sm_count_, max_keys_);
  if (plan_.num_splits > 1) {
    const size_t n = static_cast<size_t>(layout_.tokens.size()) * num_heads * plan_.num_splits *
                     (kv_layout_.head_dim + 2) * sizeof(float);
    SPW_CHECK(partials_.Reserve(n).ok());
  }
  SPW_CHECK(items_dev_.Reserve(plan_.items.size() * sizeof(int32_t)).ok());
  Upload(plan_.items.data(), items_dev_.get(), plan_.items.size() * sizeof(int32_t), stream_);
}

void CudaBackend::Attention(int64_t layer, Activation q, Activation k, Activation v,
                            int64_t num_heads, Activation out) {
  Stale();
  const int64_t d = kv_layout_.head_dim;
  const int64_t width = kv_layout_.num_kv_heads * d;
  SPW_CHECK(layer >= 0 && layer < kv_layout_.num_layers);
  SPW_CHECK(k.cols == width && v.cols == width && q.cols == num_heads * d && out.cols == q.cols);
  SPW_CHECK(num_heads % kv_layout_.num_kv_heads == 0);
  const int64_t per_cache =
      int64_t{kv_layout_.num_blocks} * kvcache::kBlockTokens * width;  // values in K (or V)
  auto* cache_k = static_cast<uint16_t*>(kv_.get()) + 2 * layer * per_cache;
  auto* cache_v = cache_k + per_cache;
  const auto* base = BatchBase();
  SPW_CUDA_CHECK(kernels::WriteKv(k.data, v.data, base + slots_off_, k.rows, width, cache_k,
                                  cache_v, stream_));
  if (planned_heads_ != num_heads) {
    SPW_CHECK(!graph_mode_) << "a decode graph planned for " << planned_heads_ << " heads";
    PlanForHeads(num_heads);
  }
  kernels::AttentionArgs a;
  a.q = q.data;
  a.out = out.data;
  a.cache_k = cache_k;
  a.cache_v = cache_v;
  a.positions = base + positions_off_;
  a.block_tables = base + tables_off_;
  a.items = static_cast<const kernels::AttentionItem*>(graph_mode_ ? graph_items_.get()
                                                                   : items_dev_.get());
  a.num_items = plan_.num_items;
  a.max_item_tokens = plan_.max_item_tokens;
  a.num_tokens = static_cast<int32_t>(q.rows);
  a.num_heads = static_cast<int32_t>(num_heads);
  a.num_kv_heads = static_cast<int32_t>(kv_layout_.num_kv_heads);
  a.head_dim = static_cast<int32_t>(d);
  a.num_splits = plan_.num_splits;
  a.split_keys = plan_.split_keys;
  a.partials = static_cast<float*>(graph_mode_ ? graph_partials_.get() : partials_.get());
  SPW_CUDA_CHECK(kernels::PagedAttention(a, stream_));
}

void CudaBackend::GatherRows(Activation x, std::span<const int32_t> rows, Activation out) {
  SPW_CHECK(!graph_mode_) << "GatherRows uploads its rows: not in a decode graph";
  Stale();
  SPW_CHECK(out.cols == x.cols && out.rows == static_cast<int64_t>(rows.size()));
  SPW_CHECK(rows_dev_.Reserve(std::max<size_t>(rows.size(), 1) * sizeof(int32_t)).ok());
  Upload(rows.data(), rows_dev_.get(), rows.size() * sizeof(int32_t), stream_);
  SPW_CUDA_CHECK(kernels::GatherRows(x.data, static_cast<const int32_t*>(rows_dev_.get()), out.rows,
                                     x.cols, out.data, stream_));
}

void CudaBackend::CopyToHost(Activation x, float* dst) {
  SPW_CUDA_CHECK(cudaMemcpyAsync(dst, x.data, x.rows * x.cols * sizeof(float),
                                 cudaMemcpyDeviceToHost, stream_));
  SPW_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::SampleRows(Activation logits, const BatchSampling& sampling,
                             std::vector<SampleResult>* out) {
  Stale();
  const auto rows = static_cast<int64_t>(sampling.rows.size());
  SPW_CHECK(logits.rows == rows) << logits.rows << " logits rows, " << rows << " sampling rows";
  out->resize(rows);
  if (rows == 0) return;
  // One upload: the rows (8-byte aligned), then the edits.
  const size_t rows_bytes = rows * sizeof(SampleRow);
  const size_t edits_bytes = sampling.edits.size() * sizeof(TokenEdit);
  sampling_host_.resize(rows_bytes + edits_bytes);
  std::memcpy(sampling_host_.data(), sampling.rows.data(), rows_bytes);
  if (edits_bytes > 0) {
    std::memcpy(sampling_host_.data() + rows_bytes, sampling.edits.data(), edits_bytes);
  }
  SPW_CHECK(sampling_in_.Reserve(sampling_host_.size()).ok());
  Upload(sampling_host_.data(), sampling_in_.get(), sampling_host_.size(), stream_);
  if (!sampling.edits.empty()) {
    const absl::Status s =
        sampling_processed_.Reserve(static_cast<size_t>(rows * logits.cols) * sizeof(float));
    SPW_CHECK(s.ok()) << s;
  }
  constexpr int64_t kTop = kMaxDeviceTopLogprobs;
  const size_t out_bytes = static_cast<size_t>(rows * (2 + 2 * kTop)) * 4;
  SPW_CHECK(sampling_out_.Reserve(out_bytes).ok());
  auto* base = static_cast<std::byte*>(sampling_out_.get());
  kernels::SamplingArgs a;
  a.logits = logits.data;
  a.processed = static_cast<float*>(sampling_processed_.get());
  a.rows = static_cast<int32_t>(rows);
  a.vocab = logits.cols;
  a.params = static_cast<const SampleRow*>(sampling_in_.get());
  a.edits =
      reinterpret_cast<const TokenEdit*>(static_cast<std::byte*>(sampling_in_.get()) + rows_bytes);
  a.tokens = reinterpret_cast<int32_t*>(base);
  a.logprobs = reinterpret_cast<float*>(base + rows * 4);
  a.top_tokens = reinterpret_cast<int32_t*>(base + rows * 8);
  a.top_logprobs = reinterpret_cast<float*>(base + rows * (8 + 4 * kTop));
  for (const SampleRow& r : sampling.rows) {
    SPW_CHECK(r.logprobs <= kTop && r.edits_begin <= r.edits_end &&
              r.edits_end <= static_cast<int32_t>(sampling.edits.size()));
  }
  SPW_CUDA_CHECK(kernels::SampleRows(a, stream_));
  sampling_out_host_.resize(out_bytes);
  SPW_CUDA_CHECK(
      cudaMemcpyAsync(sampling_out_host_.data(), base, out_bytes, cudaMemcpyDeviceToHost, stream_));
  SPW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  const std::byte* h = sampling_out_host_.data();
  auto read = [&]<typename T>(T, int64_t offset) {
    T v;
    std::memcpy(&v, h + offset, sizeof(T));
    return v;
  };
  for (int64_t r = 0; r < rows; ++r) {
    SampleResult& res = (*out)[r];
    res.token = read(int32_t{}, r * 4);
    SPW_CHECK(res.token >= 0) << "row " << r << " has no finite logit to sample from";
    res.top.clear();
    const int32_t n = sampling.rows[r].logprobs;
    res.logprob = n >= 0 ? read(float{}, rows * 4 + r * 4) : 0.0f;
    for (int32_t i = 0; i < std::min<int64_t>(n, logits.cols); ++i) {
      const int64_t at = (r * kTop + i) * 4;
      res.top.push_back(
          {read(int32_t{}, rows * 8 + at), read(float{}, rows * (8 + 4 * kTop) + at)});
    }
  }
}

// NOTE(cuda): the attention plan of a graph is fixed at capture: one item per row (every
// chunk is one token) and the split-K choice made for the context class — the smallest power
// of two >= 1024 holding the step's longest context — rather than for the step's own longest
// context. The kernels read positions, block tables and items from device buffers uploaded
// before each replay, so only the split count and width are baked in; a step whose context is
// shorter than its class just leaves the last key ranges empty (their partials say -inf and
// the merge skips them). Reading lengths on the device to choose splits there would mean
// changing paged_attention.cu; a class per power of two costs at most half the splits' work
// and a few more graphs (rows buckets × classes, each captured on first use).
Activation CudaBackend::RunDecodeGraph(const BatchLayout& layout, int64_t num_heads,
                                       int64_t max_context, int64_t variant,
                                       const std::function<Activation()>& ops) {
  const auto rows = static_cast<int64_t>(layout.tokens.size());
  SPW_CHECK(rows > 0 && rows <= kMaxDecodeGraphRows) << rows;
  for (size_t c = 0; c + 1 < layout.chunk_starts.size(); ++c) {
    SPW_CHECK(layout.chunk_starts[c + 1] - layout.chunk_starts[c] == 1) << "not a decode step";
  }
  SPW_CUDA_CHECK(cudaSetDevice(ordinal_));
  Stale();
  if (kv_copies_ != nullptr) kv_copies_->OrderBefore(stream_);
  layout_ = layout;
  next_scratch_ = 0;
  // Inputs at fixed offsets (tokens, positions and slots strided by the largest bucket), the
  // block tables after them; room for every row's table at the model's context.
  max_keys_ = FillBatchHost(layout, kMaxDecodeGraphRows);
  const int64_t table_room =
      kMaxDecodeGraphRows * ((max_context + kvcache::kBlockTokens - 1) / kvcache::kBlockTokens);
  SPW_CHECK(static_cast<int64_t>(layout.block_tables.size()) <= table_room);
  ReserveGraphBuffer(graph_batch_,
                     static_cast<size_t>(3 * kMaxDecodeGraphRows + table_room) * sizeof(int32_t));
  Upload(batch_host_.data(), graph_batch_.get(), batch_host_.size() * sizeof(int32_t), stream_);
  SPW_CHECK(layout.row_lora.empty() || static_cast<int64_t>(layout.row_lora.size()) == rows);
  // The adapter buffers exist from the first graph on, adapters or not: a later graph with
  // adapters may not move buffers the earlier ones hold.
  ReserveGraphBuffer(graph_row_lora_, static_cast<size_t>(kMaxDecodeGraphRows) * sizeof(void*));
  ReserveGraphBuffer(graph_lora_u_, kMaxLoraByRowSlots * static_cast<size_t>(kMaxDecodeGraphRows) *
                                        kernels::kMaxGatheredLoraRank * sizeof(float));
  UploadRowLora(layout, graph_row_lora_);

  int64_t context_class = 1024;
  while (context_class < max_keys_) context_class *= 2;
  plan_ = cuda::PlanAttention(layout, num_heads, kv_layout_.num_kv_heads,
                              kernels::MaxAttentionRows(static_cast<int>(kv_layout_.head_dim)),
                              sm_count_, context_class);
  SPW_CHECK(plan_.num_items == rows && plan_.max_item_tokens == 1);
  planned_heads_ = num_heads;
  ReserveGraphBuffer(graph_items_, static_cast<size_t>(3 * kMaxDecodeGraphRows) * sizeof(int32_t));
  Upload(plan_.items.data(), graph_items_.get(), plan_.items.size() * sizeof(int32_t), stream_);
  ReserveGraphBuffer(graph_partials_, static_cast<size_t>(kMaxDecodeGraphRows * num_heads * 64 *
                                                          (kv_layout_.head_dim + 2)) *
                                          sizeof(float));
  if (cublas_workspace_.size() == 0) {
    // cuBLAS allocates nothing while a graph is captured once it has a workspace of its own.
    constexpr size_t kWorkspace = size_t{32} << 20;
    ReserveGraphBuffer(cublas_workspace_, kWorkspace);
    SPW_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_.get(), kWorkspace));
  }

  graph_mode_ = true;
  const GraphKey key{rows, context_class, variant};
  Activation logits;
  if (auto it = graphs_.find(key); it != graphs_.end()) {
    SPW_CUDA_CHECK(cudaGraphLaunch(it->second.exec, stream_));
    logits = it->second.logits;
  } else {
    // First run of this shape: eagerly (on the graph buffers, which it sizes), then captured
    // (nothing allocates then; the captured kernels do not run).
    logits = ops();
    Stale();
    next_scratch_ = 0;
    SPW_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const Activation captured = ops();
    cudaGraph_t graph = nullptr;
    SPW_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    SPW_CHECK(captured.data == logits.data && captured.rows == logits.rows);
    cudaGraphExec_t exec = nullptr;
    SPW_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    SPW_CUDA_CHECK(cudaGraphDestroy(graph));
    graphs_[key] = {.exec = exec, .logits = logits};
  }
  graph_mode_ = false;
  Stale();  // the host did not run the ops of a replay; no bf16 copy is known
  return logits;
}

void CudaBackend::CopyFromHost(const float* src, float* dst, int64_t n) {
  Stale();
  Upload(src, dst, n * sizeof(float), stream_);
  SPW_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

std::vector<uint16_t> CudaBackend::KvToHost(int64_t layer, bool values) const {
  const int64_t per_cache = int64_t{kv_layout_.num_blocks} * kvcache::kBlockTokens *
                            kv_layout_.num_kv_heads * kv_layout_.head_dim;
  std::vector<uint16_t> out(per_cache);
  const auto* src =
      static_cast<const uint16_t*>(kv_.get()) + (2 * layer + (values ? 1 : 0)) * per_cache;
  SPW_CUDA_CHECK(cudaStreamSynchronize(stream_));
  SPW_CUDA_CHECK(cudaMemcpy(out.data(), src, per_cache * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  return out;
}

}  // namespace spillway::engine::cuda
