// Backend: the operations the Llama model is written in (DESIGN.md "Backend"). The CPU and CUDA
// backends implement the same interface, so one Model runs on both. Activations are 2-D f32
// buffers in the backend's memory; weights are opaque handles made from a WeightTensor; the KV
// cache tensors are allocated once by AllocateKv and addressed by kvcache::BlockId.
//
// A forward pass is: BeginForward(layout) once, then ops in order, then Logits read back.
// All calls come from the engine-loop thread; a backend parallelises inside each op.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/sampler/batch_sampling.h"
#include "engine/tokenizer/tokenizer_spec.h"
#include "engine/weights/model_file.h"
#include "kvcache/block_io.h"
#include "kvcache/ids.h"

namespace spillway::engine {

// [rows, cols] f32, row-major with row stride `cols`, in the backend's memory.
struct Activation {
  float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

// A weight in the backend's preferred form (the CPU keeps file types; CUDA may convert).
class BackendWeight {
 public:
  virtual ~BackendWeight() = default;
  virtual int64_t rows() const = 0;  // output features (1 for a vector)
  virtual int64_t cols() const = 0;  // input features
};

// Shape of the paged KV cache: per layer, K and V of [num_blocks, kBlockTokens, num_kv_heads,
// head_dim].
struct KvLayout {
  int32_t num_blocks = 0;
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// One flat batch as the backend needs it. Chunk c covers batch rows
// [chunk_starts[c], chunk_starts[c+1]) at positions first_positions[c] + i, and reads/writes
// the KV blocks block_tables[block_table_starts[c] .. block_table_starts[c+1]).
class BackendLoraTable;
struct BatchLayout {
  std::span<const TokenId> tokens;              // [num_tokens]
  std::span<const int32_t> positions;           // [num_tokens]
  std::span<const int32_t> chunk_starts;        // [num_chunks + 1]
  std::span<const int32_t> first_positions;     // [num_chunks]
  std::span<const int32_t> block_table_starts;  // [num_chunks + 1]
  std::span<const kvcache::BlockId> block_tables;
  // For AddLoraByRow: each row's adapter table ([num_tokens], null for a row without one), or
  // empty when the pass makes no AddLoraByRow call.
  std::span<const BackendLoraTable* const> row_lora = {};
};

// LoRA on one projection for rows [begin, end) of a flat batch: y += scale · (x·aᵀ)·bᵀ, with
// a = A ([rank, in]) and b = B ([out, rank]) loaded by LoadWeight (engine/lora/backend_adapter.h).
struct LoraRows {
  int32_t begin = 0;
  int32_t end = 0;
  const BackendWeight* a = nullptr;
  const BackendWeight* b = nullptr;
  float scale = 1.0f;
};

// An adapter's matrices gathered for AddLoraByRow (Backend::MakeLoraTable): what a decode
// graph reads to find each row's adapter at replay time. Opaque; owned by the adapter.
class BackendLoraTable {
 public:
  virtual ~BackendLoraTable() = default;
};

// One slot of an adapter (a layer's projection) for MakeLoraTable: its A and B as LoraRows
// has them, both null where the adapter leaves the projection alone.
struct LoraSlotWeights {
  const BackendWeight* a = nullptr;
  const BackendWeight* b = nullptr;
};

// Rotary embedding: pair i of a head (i < rope_dims/2) turns by position * inv_freq[i].
struct RopeTable {
  RopeStyle style = RopeStyle::kNormal;
  std::vector<float> inv_freq = {};  // [head_dim / 2]
};

// The most rows (sequences) a decode graph takes; larger decode steps run eagerly. Buckets
// are the powers of two up to it.
inline constexpr int64_t kMaxDecodeGraphRows = 64;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // Makes a backend weight of a 1-D (norm, bias) or 2-D (linear, embedding) tensor.
  virtual absl::StatusOr<std::unique_ptr<BackendWeight>> LoadWeight(const WeightTensor& t) = 0;
  // Allocates the KV cache tensors; fails with ResourceExhausted if they do not fit.
  [[nodiscard]] virtual absl::Status AllocateKv(const KvLayout& layout) = 0;

  // KV block moves for the tiered cache (kvcache/tier_manager.h): one block's K and V of every
  // layer, packed layer by layer (K then V), to or from host memory. kv_block_bytes() is that
  // size after AllocateKv (0 when the backend cannot move blocks; the tiers stay off). The
  // defaults say Unimplemented, so a backend that has not written them still builds.
  virtual int64_t kv_block_bytes() const { return 0; }
  // REQUIRES: dst.size() == kv_block_bytes(); 0 <= block < num_blocks.
  [[nodiscard]] virtual absl::Status ReadKvBlock([[maybe_unused]] kvcache::BlockId block,
                                                 [[maybe_unused]] std::span<std::byte> dst) {
    return absl::UnimplementedError("this backend does not move KV blocks");
  }
  // REQUIRES: src.size() == kv_block_bytes(); 0 <= block < num_blocks.
  [[nodiscard]] virtual absl::Status WriteKvBlock([[maybe_unused]] kvcache::BlockId block,
                                                  [[maybe_unused]] std::span<const std::byte> src) {
    return absl::UnimplementedError("this backend does not move KV blocks");
  }

  // The KV cache reserved `blocks` for other use of their memory (KvCache::Reserve, a
  // fine-tuning job's, issue #7): their contents are no longer needed, and a backend may give
  // their memory back until they are written again. The default keeps it.
  // NOTE(ftmem): on CUDA the reservation is accounting only (this default): the pool is one
  // cudaMalloc that cannot be shrunk in place, so CudaTrainModel allocates its pass arena in
  // the headroom --gpu-memory-utilization leaves (docs/fine-tuning.md "Not done yet" says how
  // the reserved blocks' own memory could be used instead).
  virtual void DiscardKvBlocks([[maybe_unused]] std::span<const kvcache::BlockId> blocks) {}

  // Asynchronous KV block moves (the rules: kvcache/block_io.h). A backend that returns true
  // from kv_copies_async() implements the four calls below, and its BeginForward orders the
  // pass after every block write started before it; the tiers otherwise run ReadKvBlock /
  // WriteKvBlock synchronously. Tickets increase; 0 is never one.
  virtual bool kv_copies_async() const { return false; }
  virtual kvcache::CopyTicket StartKvBlockRead([[maybe_unused]] kvcache::BlockId block,
                                               [[maybe_unused]] std::span<std::byte> dst) {
    return 0;
  }
  virtual kvcache::CopyTicket StartKvBlockWrite([[maybe_unused]] kvcache::BlockId block,
                                                [[maybe_unused]] std::span<const std::byte> src) {
    return 0;
  }
  // Appends the copies that finished (and were not waited for) to `done`; never blocks.
  virtual void PollKvCopies([[maybe_unused]] std::vector<kvcache::CopyDone>& done) {}
  // Blocks until copy `ticket` finished; PollKvCopies will not report it.
  virtual kvcache::CopyDone WaitKvCopy(kvcache::CopyTicket ticket) {
    return {.ticket = ticket, .status = absl::UnimplementedError("no asynchronous KV copies")};
  }
  // Host memory for `bytes` of host-tier slots in the form this backend copies fastest
  // (CUDA: pinned); null: plain memory will do.
  virtual std::unique_ptr<kvcache::HostBuffer> AllocateKvHostBuffer(
      [[maybe_unused]] int64_t bytes) {
    return nullptr;
  }

  // Starts a forward pass over `layout`; scratch activations of the previous pass are reused.
  virtual void BeginForward(const BatchLayout& layout) = 0;
  // A scratch activation valid until the next BeginForward.
  virtual Activation Scratch(int64_t rows, int64_t cols) = 0;

  // out[t] = table row tokens[t].                                 out: [num_tokens, hidden]
  virtual void Embed(const BackendWeight& table, Activation out) = 0;
  // out = rmsnorm(x) * w.
  virtual void RmsNorm(Activation x, const BackendWeight& w, float eps, Activation out) = 0;
  // residual += x; out = rmsnorm(residual) * w (the fused residual add).
  virtual void AddRmsNorm(Activation residual, Activation x, const BackendWeight& w, float eps,
                          Activation out) = 0;
  // y = x · wᵀ.                                x: [n, w.cols()]  y: [n, w.rows()]
  virtual void MatMul(const BackendWeight& w, Activation x, Activation y) = 0;
  // ys[i] = x · ws[i]ᵀ for each i: projections that read the same input (q/k/v; gate/up), the
  // same results as one MatMul each. A backend may convert x once for all of them (the CPU
  // quantizes it once); the default makes one MatMul per weight. REQUIRES: same sizes.
  virtual void MatMulShared(Activation x, std::span<const BackendWeight* const> ws,
                            std::span<const Activation> ys) {
    for (size_t i = 0; i < ws.size(); ++i) MatMul(*ws[i], x, ys[i]);
  }
  // y[t] += bias.
  virtual void AddBias(Activation y, const BackendWeight& bias) = 0;
  // Rotates each head of x ([num_tokens, num_heads * head_dim]) by its token's position.
  virtual void Rope(Activation x, int64_t num_heads, const RopeTable& rope) = 0;
  // out = silu(gate) * up.
  virtual void SwiGlu(Activation gate, Activation up, Activation out) = 0;
  // Writes k, v ([num_tokens, num_kv_heads * head_dim]) into layer `layer`'s paged cache at
  // the tokens' positions, then causal GQA attention of q ([num_tokens, num_heads * head_dim])
  // over each chunk's whole context; out: like q.
  virtual void Attention(int64_t layer, Activation q, Activation k, Activation v, int64_t num_heads,
                         Activation out) = 0;
  // Whether AddLora is implemented (LlamaModel refuses batches with adapters otherwise).
  virtual bool SupportsLora() const { return false; }
  // For each segment, y[begin, end) += scale · (x[begin, end)·aᵀ)·bᵀ: several adapters (or
  // none, for rows no segment covers) in one batch. Called only when SupportsLora().
  virtual void AddLora([[maybe_unused]] Activation x,
                       [[maybe_unused]] std::span<const LoraRows> segments,
                       [[maybe_unused]] Activation y) {}
  // LoRA inside decode graphs (docs/gpu.md "CUDA graphs"), where the adapters of the rows
  // change between replays of one graph: MakeLoraTable gathers an adapter's slots (one per
  // layer and projection, in the order the model numbers them) with its scale into a table
  // the backend's kernels read; null when this backend cannot (then steps with the adapter run
  // eagerly through AddLora). AddLoraByRow: for each i, ys[i][r] += scale · (x[r]·aᵀ)·bᵀ of
  // slot slots[i] of row r's table (BatchLayout::row_lora), for every row whose table adapts
  // that slot; the same launches whichever adapters the rows have. Projections that read the
  // same x (q/k/v, gate/up) come in one call, up to kMaxLoraByRowSlots. Called only with
  // row_lora set.
  static constexpr size_t kMaxLoraByRowSlots = 3;
  virtual absl::StatusOr<std::unique_ptr<BackendLoraTable>> MakeLoraTable(
      [[maybe_unused]] std::span<const LoraSlotWeights> slots, [[maybe_unused]] float scale) {
    return nullptr;
  }
  virtual void AddLoraByRow([[maybe_unused]] Activation x,
                            [[maybe_unused]] std::span<const int64_t> slots,
                            [[maybe_unused]] std::span<const Activation> ys) {}
  // out[i] = x[rows[i]].
  virtual void GatherRows(Activation x, std::span<const int32_t> rows, Activation out) = 0;
  // Copies x to host memory `dst` ([x.rows * x.cols] floats).
  virtual void CopyToHost(Activation x, float* dst) = 0;
  // Sampling where the logits are (engine/sampler/batch_sampling.h, docs/gpu.md): whether
  // SampleRows is implemented; then SampleRows sets out[i] to what Sampler::Sample makes of
  // row i of `logits` ([rows, vocab]) as sampling.rows[i] describes it, and may overwrite
  // `logits`. Only ids and logprobs come back to the host. Called only when SupportsSampling().
  virtual bool SupportsSampling() const { return false; }
  virtual void SampleRows([[maybe_unused]] Activation logits,
                          [[maybe_unused]] const BatchSampling& sampling,
                          [[maybe_unused]] std::vector<SampleResult>* out) {}
  // CUDA graphs for decode steps (docs/gpu.md "CUDA graphs"): whether RunDecodeGraph is
  // implemented. LlamaModel then allocates one KV block beyond the cache's, which the padding
  // rows of a graph write.
  virtual bool SupportsDecodeGraphs() const { return false; }
  // Does BeginForward(layout) and then runs `ops` — the pass's ops from Embed to the logits
  // activation it returns — as a graph captured once per (rows, context class, variant) and
  // replayed afterwards with this layout's inputs. `layout` holds one-token chunks only, at
  // most kMaxDecodeGraphRows of them, and `ops` must issue the same calls for the same row
  // count and `variant` (no AddLora, no GatherRows; AddLoraByRow with the same slots).
  // `num_heads` and `max_context` (the model's) size the graph's fixed buffers. Returns the
  // logits ([rows, vocab]), valid until the next forward.
  virtual Activation RunDecodeGraph([[maybe_unused]] const BatchLayout& layout,
                                    [[maybe_unused]] int64_t num_heads,
                                    [[maybe_unused]] int64_t max_context,
                                    [[maybe_unused]] int64_t variant,
                                    [[maybe_unused]] const std::function<Activation()>& ops) {
    return {};
  }
};

}  // namespace spillway::engine
