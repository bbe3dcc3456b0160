// LlamaModel's side of CUDA graphs for decode steps, on the CPU: a backend that claims decode
// graphs (and runs the ops it is handed directly) gets one-token steps padded to their power of
// two bucket — padding rows writing only the spare block past the cache's blocks, no
// GatherRows inside — and steps that are not pure decode eagerly, while every logit equals
// the eager model's bit for bit (the CPU backend computes each row on its own). The CUDA
// capture and replay themselves are tests/gpu/decode_graph_test.cc.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/llama/llama_model.h"
#include "engine/lora/backend_adapter.h"
#include "tests/engine/decode_steps.h"
#include "tests/engine/train/tiny_random_model.h"

namespace spillway::engine {
namespace {

constexpr int32_t kBlocks = 24;

// The CPU backend, claiming decode graphs: RunDecodeGraph records the padded layout and runs
// the ops once.
class GraphClaimingBackend final : public Backend {
 public:
  explicit GraphClaimingBackend(Backend& inner) : inner_(inner) {}
  std::string_view name() const override { return "graph-claiming cpu"; }
  absl::StatusOr<std::unique_ptr<BackendWeight>> LoadWeight(const WeightTensor& t) override {
    return inner_.LoadWeight(t);
  }
  absl::Status AllocateKv(const KvLayout& layout) override {
    num_kv_blocks_ = layout.num_blocks;
    return inner_.AllocateKv(layout);
  }
  int64_t kv_block_bytes() const override { return inner_.kv_block_bytes(); }
  absl::Status ReadKvBlock(kvcache::BlockId block, std::span<std::byte> dst) override {
    return inner_.ReadKvBlock(block, dst);
  }
  void BeginForward(const BatchLayout& layout) override { inner_.BeginForward(layout); }
  Activation Scratch(int64_t rows, int64_t cols) override { return inner_.Scratch(rows, cols); }
  void Embed(const BackendWeight& table, Activation out) override { inner_.Embed(table, out); }
  void RmsNorm(Activation x, const BackendWeight& w, float eps, Activation out) override {
    inner_.RmsNorm(x, w, eps, out);
  }
  void AddRmsNorm(Activation residual, Activation x, const BackendWeight& w, float eps,
                  Activation out) override {
    inner_.AddRmsNorm(residual, x, w, eps, out);
  }
  void MatMul(const BackendWeight& w, Activation x, Activation y) override {
    inner_.MatMul(w, x, y);
  }
  void MatMulShared(Activation x, std::span<const BackendWeight* const> ws,
                    std::span<const Activation> ys) override {
    inner_.MatMulShared(x, ws, ys);
  }
  void AddBias(Activation y, const BackendWeight& bias) override { inner_.AddBias(y, bias); }
  void Rope(Activation x, int64_t num_heads, const RopeTable& rope) override {
    inner_.Rope(x, num_heads, rope);
  }
  void SwiGlu(Activation gate, Activation up, Activation out) override {
    inner_.SwiGlu(gate, up, out);
  }
  void Attention(int64_t layer, Activation q, Activation k, Activation v, int64_t num_heads,
                 Activation out) override {
    inner_.Attention(layer, q, k, v, num_heads, out);
  }
  bool SupportsLora() const override { return inner_.SupportsLora(); }
  void AddLora(Activation x, std::span<const LoraRows> segments, Activation y) override {
    EXPECT_FALSE(in_graph_) << "AddLora inside a decode graph";
    inner_.AddLora(x, segments, y);
  }
  // A table is the slots themselves; AddLoraByRow hands each adapted row to the CPU's AddLora
  // as a segment of its own (the CPU computes every row alone, so the bits stay the eager
  // ones).
  struct Table final : BackendLoraTable {
    std::vector<LoraSlotWeights> slots;
    float scale = 0;
  };
  absl::StatusOr<std::unique_ptr<BackendLoraTable>> MakeLoraTable(
      std::span<const LoraSlotWeights> slots, float scale) override {
    auto t = std::make_unique<Table>();
    t->slots.assign(slots.begin(), slots.end());
    t->scale = scale;
    return t;
  }
  void AddLoraByRow(Activation x, std::span<const int64_t> slots,
                    std::span<const Activation> ys) override {
    EXPECT_TRUE(in_graph_) << "AddLoraByRow outside a decode graph";
    ASSERT_EQ(static_cast<int64_t>(row_lora_.size()), x.rows);
    ASSERT_EQ(slots.size(), ys.size());
    ASSERT_LE(slots.size(), kMaxLoraByRowSlots);
    for (size_t i = 0; i < slots.size(); ++i) {
      std::vector<LoraRows> segments;
      for (int32_t r = 0; r < x.rows; ++r) {
        const auto* t = static_cast<const Table*>(row_lora_[r]);
        if (t == nullptr) continue;
        ASSERT_LT(slots[i], static_cast<int64_t>(t->slots.size()));
        const LoraSlotWeights& w = t->slots[slots[i]];
        if (w.a != nullptr) segments.push_back({r, r + 1, w.a, w.b, t->scale});
      }
      if (!segments.empty()) inner_.AddLora(x, segments, ys[i]);
    }
    ++lora_by_row_calls;
  }
  void GatherRows(Activation x, std::span<const int32_t> rows, Activation out) override {
    EXPECT_FALSE(in_graph_) << "GatherRows inside a decode graph";
    inner_.GatherRows(x, rows, out);
  }
  void CopyToHost(Activation x, float* dst) override { inner_.CopyToHost(x, dst); }

  bool SupportsDecodeGraphs() const override { return true; }
  Activation RunDecodeGraph(const BatchLayout& layout, int64_t num_heads, int64_t max_context,
                            int64_t variant, const std::function<Activation()>& ops) override {
    EXPECT_GT(num_heads, 0);
    EXPECT_GT(max_context, 0);
    graph_rows.push_back(static_cast<int64_t>(layout.tokens.size()));
    variants.push_back(variant);
    EXPECT_EQ(layout.row_lora.empty(), variant == 0);
    row_lora_.assign(layout.row_lora.begin(), layout.row_lora.end());
    for (size_t c = 0; c + 1 < layout.chunk_starts.size(); ++c) {
      EXPECT_EQ(layout.chunk_starts[c + 1] - layout.chunk_starts[c], 1);
    }
    inner_.BeginForward(layout);
    in_graph_ = true;
    const Activation out = ops();
    in_graph_ = false;
    EXPECT_EQ(out.rows, static_cast<int64_t>(layout.tokens.size()));
    return out;
  }

  int32_t num_kv_blocks() const { return num_kv_blocks_; }
  std::vector<int64_t> graph_rows;  // the padded row count of each graph step
  std::vector<int64_t> variants;    // and its variant
  int64_t lora_by_row_calls = 0;

 private:
  Backend& inner_;
  std::vector<const BackendLoraTable*> row_lora_;
  bool in_graph_ = false;
  int32_t num_kv_blocks_ = 0;
};

bool BlockIsZero(Backend& b, kvcache::BlockId block) {
  std::vector<std::byte> bytes(b.kv_block_bytes());
  EXPECT_TRUE(b.ReadKvBlock(block, bytes).ok());
  for (std::byte x : bytes) {
    if (x != std::byte{0}) return false;
  }
  return true;
}

TEST(DecodeGraphPaddingTest, PaddedDecodeStepsGiveTheEagerLogits) {
  testing::TinyRandomModel file(11);
  cpu::CpuBackend eager_cpu(1), graph_cpu(1);
  GraphClaimingBackend graph_backend(graph_cpu);
  auto eager = LlamaModel::Create(file, eager_cpu, kBlocks);
  auto graphs = LlamaModel::Create(file, graph_backend, kBlocks);
  ASSERT_TRUE(eager.ok() && graphs.ok());
  EXPECT_EQ(graph_backend.num_kv_blocks(), kBlocks + 1);  // the spare block
  EXPECT_EQ((*eager)->SetDecodeGraphs(true).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*graphs)->SetDecodeGraphs(true).ok());

  testing::DecodeSteps steps;
  auto run = [&](const Batch& batch, const char* what) {
    std::vector<float> a, b;
    ASSERT_TRUE((*eager)->Forward(batch, &a).ok()) << what;
    ASSERT_TRUE((*graphs)->Forward(batch, &b).ok()) << what;
    ASSERT_EQ(a.size(), batch.chunks.size() * 40) << what;
    EXPECT_EQ(a, b) << what;
  };
  for (int s = 0; s < 5; ++s) run(steps.Prefill(s, 3 + 2 * s), "prefill");
  EXPECT_TRUE(BlockIsZero(graph_cpu, kBlocks));  // prefill is eager: no padding yet
  for (int step = 0; step < 2; ++step) run(steps.Decode({0, 1, 2, 3, 4}, step), "decode 5");
  run(steps.Decode({4, 0, 2}, 0), "decode 3");
  run(steps.Decode({1}, 0), "decode 1");
  run(steps.Mixed(3, 2), "mixed: eager");
  EXPECT_EQ(graph_backend.graph_rows, (std::vector<int64_t>{8, 8, 4, 1}));
  EXPECT_FALSE(BlockIsZero(graph_cpu, kBlocks));  // the padding rows wrote the spare block
  for (kvcache::BlockId b : {0, 1, 2, 13, 20, 23}) EXPECT_TRUE(BlockIsZero(graph_cpu, b)) << b;
  // The sequences' blocks hold the same KV as the eager model's.
  for (kvcache::BlockId b = 3; b < 13; ++b) {
    std::vector<std::byte> x(eager_cpu.kv_block_bytes()), y(graph_cpu.kv_block_bytes());
    ASSERT_TRUE(eager_cpu.ReadKvBlock(b, x).ok());
    ASSERT_TRUE(graph_cpu.ReadKvBlock(b, y).ok());
    EXPECT_EQ(x, y) << "block " << b;
  }
}

// Decode steps whose sequences use adapters run as graphs too: one variant per set of adapted
// projections, one AddLoraByRow per layer and input of adapted projections whichever adapters
// the rows have, and the logits of the eager model's AddLora bit for bit (random nonzero B: a row
// that lost or swapped its adapter would differ).
TEST(DecodeGraphPaddingTest, StepsWithAdaptersRunAsGraphs) {
  testing::TinyRandomModel file(11);
  const ModelConfig& c = file.config();
  const std::vector<lora::LoraAdapter> adapters = {
      testing::RandomAdapter(c, testing::AllProjectionsLora(), 1, 0.6f),
      testing::RandomAdapter(c, testing::QvOfLayer1Lora(), 2, 0.6f)};
  cpu::CpuBackend eager_cpu(1), graph_cpu(1);
  GraphClaimingBackend graph_backend(graph_cpu);
  auto eager = LlamaModel::Create(file, eager_cpu, kBlocks);
  auto graphs = LlamaModel::Create(file, graph_backend, kBlocks);
  ASSERT_TRUE(eager.ok() && graphs.ok());
  ASSERT_TRUE((*graphs)->SetDecodeGraphs(true).ok());
  std::vector<std::unique_ptr<lora::BackendLoraAdapter>> eager_adapters, graph_adapters;
  for (const lora::LoraAdapter& a : adapters) {
    auto e = lora::BackendLoraAdapter::Load(a, eager_cpu);
    auto g = lora::BackendLoraAdapter::Load(a, graph_backend);
    ASSERT_TRUE(e.ok() && g.ok());
    EXPECT_EQ((*e)->table(), nullptr);  // the CPU backend makes no tables
    EXPECT_NE((*g)->table(), nullptr);
    eager_adapters.push_back(*std::move(e));
    graph_adapters.push_back(*std::move(g));
  }
  EXPECT_EQ(graph_adapters[0]->module_mask(), 0x7Fu);
  const uint32_t qv_mask = (1u << static_cast<int>(lora::LoraModule::kQ)) |
                           (1u << static_cast<int>(lora::LoraModule::kV));
  EXPECT_EQ(graph_adapters[1]->module_mask(), qv_mask);

  testing::DecodeSteps steps;
  // `use[i]`: chunk i's adapter (-1: none).
  auto run = [&](Batch batch, const std::vector<int>& use, const char* what) {
    ASSERT_EQ(use.size(), batch.chunks.size());
    std::vector<float> a, b;
    testing::SetAdapters(batch, use, eager_adapters);
    ASSERT_TRUE((*eager)->Forward(batch, &a).ok()) << what;
    testing::SetAdapters(batch, use, graph_adapters);
    ASSERT_TRUE((*graphs)->Forward(batch, &b).ok()) << what;
    ASSERT_EQ(a.size(), batch.chunks.size() * 40) << what;
    EXPECT_EQ(a, b) << what;
  };
  for (int s = 0; s < 5; ++s) run(steps.Prefill(s, 3 + 2 * s), {s % 3 - 1}, "prefill");
  const int64_t prefill_calls = graph_backend.lora_by_row_calls;
  EXPECT_EQ(prefill_calls, 0);  // prefill is eager: AddLora
  run(steps.Decode({0, 1, 2, 3, 4}, 0), {-1, 0, 1, -1, 0}, "both adapters");
  // Two layers × one call per input: q/k/v, o, gate/up, down.
  EXPECT_EQ(graph_backend.lora_by_row_calls, 2 * 4);
  run(steps.Decode({0, 1, 2}, 1), {1, -1, 1}, "q/v adapter only");
  EXPECT_EQ(graph_backend.lora_by_row_calls, 2 * 4 + 2);  // q and v in one call per layer
  run(steps.Decode({0, 1, 2, 3, 4}, 2), {0, 0, 0, 0, 0}, "one adapter everywhere");
  run(steps.Decode({3}, 3), {-1}, "base");
  run(steps.Mixed(3, 2), {0, 1}, "mixed: eager");
  EXPECT_EQ(graph_backend.graph_rows, (std::vector<int64_t>{8, 4, 8, 1}));
  EXPECT_EQ(graph_backend.variants, (std::vector<int64_t>{0x7F, qv_mask, 0x7F, 0}));
}

}  // namespace
}  // namespace spillway::engine
