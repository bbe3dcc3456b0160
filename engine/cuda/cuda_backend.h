// CudaBackend: the Backend on one NVIDIA GPU (docs/gpu.md). Weights live on the device in
// BF16 (GGUF quantized types are dequantized on the host at load with the CPU backend's
// dequantizers; 1-D weights stay f32); activations are f32 device buffers as backend.h says;
// GEMMs are cuBLAS bf16 x bf16 with f32 accumulation (the activation is rounded to bf16 first);
// the paged KV cache is f16 like the CPU backend's, written and read by kernels/. Every op is
// enqueued on one stream; CopyToHost waits for it. Engine-loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/cuda/attention_plan.h"
#include "engine/cuda/device_memory.h"
#include "engine/cuda/kv_copy_engine.h"

struct CUstream_st;
struct CUgraphExec_st;
struct cublasContext;

namespace spillway::engine::cuda {

class CudaBackend final : public Backend {
 public:
  // Creates the backend on device `ordinal` (a stream and a cuBLAS handle); Unavailable when
  // there is no such device.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int ordinal = 0);
  ~CudaBackend() override;

  std::string_view name() const override { return "cuda"; }
  // Bytes of device memory taken by weights and by the KV cache so far.
  int64_t weight_bytes() const { return weight_bytes_; }
  int64_t kv_bytes() const { return kv_bytes_; }
  // Bytes one KV block takes over all layers (K and V, f16).
  static int64_t KvBlockBytes(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim);
  // Whether MatMul sends steps of at most 4 rows to the decode GEMV (kernels/gemv.h) rather
  // than cuBLAS; on by default. gpu_bench times decode both ways. A change drops the decode
  // graphs captured so far (they hold the other path); not during a forward pass.
  void SetDecodeGemv(bool on);

  absl::StatusOr<std::unique_ptr<BackendWeight>> LoadWeight(const WeightTensor& t) override;
  // The device data of a weight LoadWeight made: bf16 [rows, cols] of a matrix, f32 of a
  // vector (UploadBf16Matrix's and UploadF32Vector's layouts); null for another backend's
  // weight. CudaTrainModel trains on the serving model's weights through it.
  static const void* DeviceData(const BackendWeight& w);
  [[nodiscard]] absl::Status AllocateKv(const KvLayout& layout) override;
  // Block moves for the tiered cache: one cudaMemcpy2D over the 2 * num_layers K/V slices,
  // packed as the CPU backend packs them (layer by layer, K then V).
  int64_t kv_block_bytes() const override;
  [[nodiscard]] absl::Status ReadKvBlock(kvcache::BlockId block, std::span<std::byte> dst) override;
  [[nodiscard]] absl::Status WriteKvBlock(kvcache::BlockId block,
                                          std::span<const std::byte> src) override;

  // The same moves, asynchronous: on a copy stream of their own with an event per copy
  // (kv_copy_engine.h), created on first use; BeginForward makes the compute stream wait for
  // the loads started before it. Host-tier memory is pinned (cudaHostAlloc), or plain memory
  // with a warning when the driver cannot lock that much.
  bool kv_copies_async() const override { return true; }
  kvcache::CopyTicket StartKvBlockRead(kvcache::BlockId block, std::span<std::byte> dst) override;
  kvcache::CopyTicket StartKvBlockWrite(kvcache::BlockId block,
                                        std::span<const std::byte> src) override;
  void PollKvCopies(std::vector<kvcache::CopyDone>& done) override;
  kvcache::CopyDone WaitKvCopy(kvcache::CopyTicket ticket) override;
  std::unique_ptr<kvcache::HostBuffer> AllocateKvHostBuffer(int64_t bytes) override;

  void BeginForward(const BatchLayout& layout) override;
  Activation Scratch(int64_t rows, int64_t cols) override;

  void Embed(const BackendWeight& table, Activation out) override;
  void RmsNorm(Activation x, const BackendWeight& w, float eps, Activation out) override;
  void AddRmsNorm(Activation residual, Activation x, const BackendWeight& w, float eps,
                  Activation out) override;
  void MatMul(const BackendWeight& w, Activation x, Activation y) override;
  void AddBias(Activation y, const BackendWeight& bias) override;
  void Rope(Activation x, int64_t num_heads, const RopeTable& rope) override;
  void SwiGlu(Activation gate, Activation up, Activation out) override;
  void Attention(int64_t layer, Activation q, Activation k, Activation v, int64_t num_heads,
                 Activation out) override;
  // LoRA on the bf16 copy of x the base MatMul made, u = x·aᵀ rounded to bf16, then
  // y += scale · u·bᵀ: segments of fewer than kLoraGemmRows rows through the gathered kernels
  // (kernels/lora.h), longer ones as two cuBLAS GEMMs each.
  bool SupportsLora() const override { return true; }
  void AddLora(Activation x, std::span<const LoraRows> segments, Activation y) override;
  // Decode graphs with adapters: a table of kernels::LoraTableEntry on the device per adapter
  // (null for a rank above kernels::kMaxGatheredLoraRank), read by kernels::AddLoraByRow
  // through the rows' table pointers, uploaded with the pass's inputs. The same arithmetic as
  // AddLora's gathered kernels.
  absl::StatusOr<std::unique_ptr<BackendLoraTable>> MakeLoraTable(
      std::span<const LoraSlotWeights> slots, float scale) override;
  void AddLoraByRow(Activation x, std::span<const int64_t> slots,
                    std::span<const Activation> ys) override;
  void GatherRows(Activation x, std::span<const int32_t> rows, Activation out) override;
  void CopyToHost(Activation x, float* dst) override;
  // Sampling on the device (kernels/sampling.h): one kernel for the batch, then one copy of
  // the ids and logprobs back.
  bool SupportsSampling() const override { return true; }
  void SampleRows(Activation logits, const BatchSampling& sampling,
                  std::vector<SampleResult>* out) override;
  // Decode graphs: the first step of a (rows, context class) runs its ops eagerly on the
  // graph's own buffers and then captures them; later ones upload their inputs and replay.
  bool SupportsDecodeGraphs() const override { return true; }
  Activation RunDecodeGraph(const BatchLayout& layout, int64_t num_heads, int64_t max_context,
                            int64_t variant, const std::function<Activation()>& ops) override;
  // Graphs captured so far (tests).
  int64_t num_decode_graphs() const { return static_cast<int64_t>(graphs_.size()); }

  // Copies `n` f32 values from host to device memory `dst` (tests fill activations with it).
  void CopyFromHost(const float* src, float* dst, int64_t n);
  // The f16 K or V cache of `layer` copied to the host ([num_blocks * kBlockTokens *
  // num_kv_heads * head_dim] values), for tests.
  std::vector<uint16_t> KvToHost(int64_t layer, bool values) const;

 private:
  CudaBackend(int ordinal, int sm_count, CUstream_st* stream, cublasContext* cublas);
  // One block's K/V slices between the cache and `host` (kv_block_bytes() bytes).
  absl::Status CopyKvBlock(kvcache::BlockId block, void* host, size_t bytes, bool to_host);
  // Where block `block`'s 2 * num_layers slices lie: the first one, each slice's bytes and the
  // distance between them. REQUIRES: bytes == kv_block_bytes().
  struct KvSlices {
    std::byte* first = nullptr;
    size_t width = 0, pitch = 0, rows = 0;
  };
  KvSlices KvBlockSlices(kvcache::BlockId block, size_t bytes) const;
  KvCopyEngine& KvCopies();
  // Uploads the attention work items of the current forward pass for `num_heads` query heads.
  void PlanForHeads(int64_t num_heads);
  // Copies the layout into the pass's host arrays at the given offsets and returns the most
  // keys a token sees (BeginForward, RunDecodeGraph).
  int64_t FillBatchHost(const BatchLayout& layout, int64_t stride);
  // The buffers of the current mode: eager, or a decode graph's fixed ones.
  const int32_t* BatchBase() const;
  DeviceBuffer& Bf16Buffer() { return graph_mode_ ? graph_bf16_ : bf16_input_; }
  // Makes `buf` at least `bytes`; once graphs exist, a graph buffer may not move.
  void ReserveGraphBuffer(DeviceBuffer& buf, size_t bytes);
  // Uploads the device tables of layout.row_lora into `dst` (row_lora_dev_ or
  // graph_row_lora_, reserved by the caller).
  void UploadRowLora(const BatchLayout& layout, DeviceBuffer& dst);

  int ordinal_;
  int sm_count_;
  CUstream_st* stream_;
  cublasContext* cublas_;
  int64_t weight_bytes_ = 0;
  int64_t kv_bytes_ = 0;
  KvLayout kv_layout_;
  DeviceBuffer kv_;  // per layer: K then V, each [num_blocks, kBlockTokens, kv_heads, head_dim]

  // The current forward pass: host copies and their device mirror `batch_dev_` holding
  // tokens, positions, KV slots and block tables back to back.
  BatchLayout layout_;
  std::vector<int32_t> batch_host_;
  DeviceBuffer batch_dev_;
  int64_t tokens_off_ = 0, positions_off_ = 0, slots_off_ = 0, tables_off_ = 0;
  int64_t max_keys_ = 0;
  // Attention work (attention_plan.h), planned at the forward's first Attention call (the
  // query head count is known then).
  int64_t planned_heads_ = 0;
  AttentionPlan plan_;
  DeviceBuffer items_dev_;
  DeviceBuffer partials_;

  std::vector<DeviceBuffer> scratch_;
  size_t next_scratch_ = 0;
  DeviceBuffer bf16_input_;  // MatMul's activation rounded to bf16
  // The activation bf16_input_ holds, so that MatMuls of the same input (q/k/v, gate/up) round
  // it once. Every op may write activations and first clears it (Stale()); RmsNorm,
  // AddRmsNorm and SwiGlu then write their output's bf16 copy too (the next op is a MatMul of
  // it), and MatMul rounds its input only when it is not the one held.
  Activation bf16_of_;
  void Stale() { bf16_of_ = {}; }
  // Makes bf16_input_ the copy of `a` (to be written by the caller) and returns it.
  uint16_t* Bf16Copy(Activation a);
  // The bf16 copy of `x` for a GEMM or LoRA input: the one held, or a new one converted now.
  const uint16_t* Bf16Input(Activation x);
  DeviceBuffer rows_dev_;  // GatherRows' row list
  // AddLora's x·aᵀ: the gathered kernels' (rows × the largest gathered rank) and a cuBLAS
  // segment's (f32, then bf16).
  DeviceBuffer lora_u_, lora_gemm_u_, lora_u_bf16_;
  // AddLoraByRow's row tables (BatchLayout::row_lora as device pointers) and their host copy.
  DeviceBuffer row_lora_dev_;
  std::vector<const void*> row_lora_host_;
  // Segments of at least this many rows go to cuBLAS in AddLora, shorter ones to the gathered
  // kernels (kernels/lora.h).
  static constexpr int64_t kLoraGemmRows = 64;
  std::vector<float> rope_host_;  // the inv_freq last uploaded to rope_dev_
  // SampleRows: its rows and edits uploaded, the processed logits, and the results (tokens,
  // logprobs, top tokens, top logprobs) with their host copy.
  std::vector<std::byte> sampling_host_;
  DeviceBuffer sampling_in_, sampling_processed_, sampling_out_;
  std::vector<std::byte> sampling_out_host_;
  // Decode graphs (RunDecodeGraph). In graph mode every op takes its buffers from here:
  // scratch sized for kMaxDecodeGraphRows rows whatever the bucket, so that all graphs share
  // one set of addresses, which never move once a graph exists (their kernels hold them).
  struct DecodeGraph {
    CUgraphExec_st* exec = nullptr;
    Activation logits;
  };
  // By (rows, context class, variant).
  using GraphKey = std::tuple<int64_t, int64_t, int64_t>;
  std::map<GraphKey, DecodeGraph> graphs_;
  bool graph_mode_ = false;
  bool decode_gemv_ = true;
  std::vector<DeviceBuffer> graph_scratch_;
  DeviceBuffer graph_bf16_, graph_batch_, graph_items_, graph_partials_, cublas_workspace_;
  DeviceBuffer graph_row_lora_, graph_lora_u_;
  DeviceBuffer rope_dev_;
  // The asynchronous KV block copies (null until the first). Declared last, so destroyed
  // first: it waits for the copies in flight, which use kv_.
  std::unique_ptr<KvCopyEngine> kv_copies_;
};

}  // namespace spillway::engine::cuda
