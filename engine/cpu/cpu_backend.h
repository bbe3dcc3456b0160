// CpuBackend: the Backend on the host CPU. Weights stay in their file types: matrices are
// repacked once at load into the MatMul kernels' layout (engine/cpu/matmul.h; a copy about the
// tensor's size), and embedding rows are read from the model file's mapping; activations are
// f32; the KV cache is f16. Parallel inside each op through one ThreadPool. Engine-loop thread
// only.
#pragma once

#include <memory>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/attention.h"
#include "engine/cpu/thread_pool.h"
#include "kvcache/copy_queue.h"

namespace spillway::engine::cpu {

class CpuBackend final : public Backend {
 public:
  // `num_threads` counts the calling thread; 0 = all cores this process may use.
  explicit CpuBackend(int num_threads = 0);

  std::string_view name() const override { return "cpu"; }
  int num_threads() const { return pool_.num_threads(); }

  absl::StatusOr<std::unique_ptr<BackendWeight>> LoadWeight(const WeightTensor& t) override;
  [[nodiscard]] absl::Status AllocateKv(const KvLayout& layout) override;
  int64_t kv_block_bytes() const override;
  [[nodiscard]] absl::Status ReadKvBlock(kvcache::BlockId block, std::span<std::byte> dst) override;
  [[nodiscard]] absl::Status WriteKvBlock(kvcache::BlockId block,
                                          std::span<const std::byte> src) override;
  // madvise(MADV_DONTNEED) on the whole pages of the blocks' slices, consecutive blocks
  // together: the pages go back to the OS and read as zeros until written again.
  void DiscardKvBlocks(std::span<const kvcache::BlockId> blocks) override;

  // KV block copies run on a copy thread (kvcache/copy_queue.h), started on first use; a
  // forward pass waits (BeginForward) for the block writes started before it.
  bool kv_copies_async() const override { return true; }
  kvcache::CopyTicket StartKvBlockRead(kvcache::BlockId block, std::span<std::byte> dst) override;
  kvcache::CopyTicket StartKvBlockWrite(kvcache::BlockId block,
                                        std::span<const std::byte> src) override;
  void PollKvCopies(std::vector<kvcache::CopyDone>& done) override;
  kvcache::CopyDone WaitKvCopy(kvcache::CopyTicket ticket) override;

  void BeginForward(const BatchLayout& layout) override;
  Activation Scratch(int64_t rows, int64_t cols) override;

  void Embed(const BackendWeight& table, Activation out) override;
  void RmsNorm(Activation x, const BackendWeight& w, float eps, Activation out) override;
  void AddRmsNorm(Activation residual, Activation x, const BackendWeight& w, float eps,
                  Activation out) override;
  void MatMul(const BackendWeight& w, Activation x, Activation y) override;
  void MatMulShared(Activation x, std::span<const BackendWeight* const> ws,
                    std::span<const Activation> ys) override;
  void AddBias(Activation y, const BackendWeight& bias) override;
  void Rope(Activation x, int64_t num_heads, const RopeTable& rope) override;
  void SwiGlu(Activation gate, Activation up, Activation out) override;
  void Attention(int64_t layer, Activation q, Activation k, Activation v, int64_t num_heads,
                 Activation out) override;
  bool SupportsLora() const override { return true; }
  void AddLora(Activation x, std::span<const LoraRows> segments, Activation y) override;
  void GatherRows(Activation x, std::span<const int32_t> rows, Activation out) override;
  void CopyToHost(Activation x, float* dst) override;

 private:
  ThreadPool pool_;
  BatchLayout layout_;
  KvLayout kv_layout_;
  std::vector<std::vector<uint16_t>> k_cache_, v_cache_;  // per layer
  // Scratch buffers handed out in call order; a forward pass makes the same calls each time,
  // so after the first pass no allocation happens.
  std::vector<std::vector<float>> scratch_;
  size_t next_scratch_ = 0;
  // cos/sin of every (token, pair) angle of this forward pass, for the table `rope_table_`.
  const RopeTable* rope_table_ = nullptr;
  std::vector<AttentionScratch> attention_scratch_;
  std::vector<float> rope_cos_, rope_sin_;
  // AddLora's x·aᵀ, one rank-sized slice per pool thread.
  std::vector<float> lora_u_;
  // The KV block copies' thread, and the last block write started on it. Declared last: its
  // destructor runs the queued copies, which use the KV cache above.
  std::unique_ptr<kvcache::CopyQueue> kv_copies_;
  kvcache::CopyTicket last_kv_write_ = 0;
};

}  // namespace spillway::engine::cpu
