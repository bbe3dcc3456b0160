// CUDA graphs for decode steps (Backend::RunDecodeGraph, LlamaModel::SetDecodeGraphs): the same
// steps on two GPU models over one tiny random model, one eager and one with graphs, give the
// same logits — decode batches of 5, 3 and 1 sequences (buckets 8, 4 and 1, so padded rows
// run beside real ones), each bucket captured once and replayed after, with prefill steps
// (eager on both) in between. Tolerance: 1e-4 of the logits' RMS; the kernels are the same
// but cuBLAS may pick another GEMM algorithm for the padded row count (f32 accumulation in
// another order). The padding rows write only the spare block: a block no sequence owns stays
// zero. Skips without a GPU.
#include "engine/llama/llama_model.h"
#include "engine/lora/backend_adapter.h"
#include "tests/engine/decode_steps.h"
#include "tests/engine/train/tiny_random_model.h"
#include "tests/gpu/gpu_test_util.h"

namespace spillway::engine::testing {
namespace {

constexpr int32_t kBlocks = 24;
constexpr kvcache::BlockId kUnusedBlock = 23;

// An eager and a graph model of one tiny random model, each on a GPU backend of its own.
class DecodeGraphTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SPW_SKIP_WITHOUT_GPU();
    absl::StatusOr<std::unique_ptr<cuda::CudaBackend>> e = cuda::CudaBackend::Create();
    absl::StatusOr<std::unique_ptr<cuda::CudaBackend>> g = cuda::CudaBackend::Create();
    ASSERT_TRUE(e.ok() && g.ok());
    eager_backend_ = *std::move(e);
    graph_backend_ = *std::move(g);
    auto eager = LlamaModel::Create(file_, *eager_backend_, kBlocks);
    auto graphs = LlamaModel::Create(file_, *graph_backend_, kBlocks);
    ASSERT_TRUE(eager.ok() && graphs.ok());
    eager_ = *std::move(eager);
    graphs_ = *std::move(graphs);
    ASSERT_TRUE(graphs_->SetDecodeGraphs(true).ok());
  }

  // Runs `batch` on both models, chunk i with adapter `use[i]` of each (-1 or none: the base
  // model), and compares their logits.
  void Run(Batch batch, const char* what, const std::vector<int>& use = {}) {
    std::vector<float> a, b;
    SetAdapters(batch, use, on_eager_);
    ASSERT_TRUE(eager_->Forward(batch, &a).ok()) << what;
    SetAdapters(batch, use, on_graphs_);
    ASSERT_TRUE(graphs_->Forward(batch, &b).ok()) << what;
    ASSERT_EQ(a.size(), b.size()) << what;
    const Diff d = Compare(a, b);
    EXPECT_LE(d.max_abs, 1e-4 * d.rms) << what << ": max " << d.max_abs << " rms " << d.rms;
  }

  TinyRandomModel file_{11};
  std::unique_ptr<cuda::CudaBackend> eager_backend_, graph_backend_;
  std::unique_ptr<LlamaModel> eager_, graphs_;
  std::vector<std::unique_ptr<lora::BackendLoraAdapter>> on_eager_, on_graphs_;
};

TEST_F(DecodeGraphTest, ReplayEqualsEager) {
  DecodeSteps steps;
  auto run = [&](const Batch& batch, const char* what) { Run(batch, what); };
  for (int s = 0; s < 5; ++s) run(steps.Prefill(s, 3 + 2 * s), "prefill");
  for (int step = 0; step < 4; ++step) run(steps.Decode({0, 1, 2, 3, 4}, step), "bucket 8");
  for (int step = 0; step < 3; ++step) run(steps.Decode({4, 0, 2}, step), "bucket 4");
  run(steps.Prefill(1, 2), "prefill");
  for (int step = 0; step < 3; ++step) run(steps.Decode({1}, step), "bucket 1");
  run(steps.Decode({0, 1, 2, 3, 4}, 9), "bucket 8 again, new contexts");
  EXPECT_EQ(graph_backend_->num_decode_graphs(), 3);

  const std::vector<uint16_t> k = graph_backend_->KvToHost(0, /*values=*/false);
  const size_t per_block = k.size() / (kBlocks + 1);  // the spare block is the last one
  for (size_t i = kUnusedBlock * per_block; i < (kUnusedBlock + 1) * per_block; ++i) {
    ASSERT_EQ(k[i], 0) << "a padding row wrote outside the spare block";
  }
  bool spare_written = false;
  for (size_t i = kBlocks * per_block; i < k.size(); ++i) spare_written |= k[i] != 0;
  EXPECT_TRUE(spare_written);
}

// Decode steps with adapters run as graphs too (AddLoraByRow): one graph per (bucket, set of
// adapted projections) serves every mix of adapters, and replays with other adapters on other
// rows give the eager model's logits (AddLora's gathered kernels; the same per-row arithmetic,
// so only cuBLAS's choice for the padded row count differs: the tolerance above). An adapter
// of rank above 256 has no table and its steps run eagerly.
TEST_F(DecodeGraphTest, StepsWithAdaptersReplayEqualsEager) {
  const ModelConfig& c = file_.config();
  lora::LoraConfig big = QvOfLayer1Lora();
  big.rank = 260;
  const std::vector<lora::LoraAdapter> adapters = {RandomAdapter(c, AllProjectionsLora(), 1, 0.6f),
                                                   RandomAdapter(c, AllProjectionsLora(), 2, 0.6f),
                                                   RandomAdapter(c, QvOfLayer1Lora(), 3, 0.6f),
                                                   RandomAdapter(c, big, 4, 0.05f)};
  for (const lora::LoraAdapter& a : adapters) {
    auto e = lora::BackendLoraAdapter::Load(a, *eager_backend_);
    auto g = lora::BackendLoraAdapter::Load(a, *graph_backend_);
    ASSERT_TRUE(e.ok() && g.ok());
    on_eager_.push_back(*std::move(e));
    on_graphs_.push_back(*std::move(g));
  }
  EXPECT_EQ(on_graphs_[3]->table(), nullptr);  // rank 260

  DecodeSteps steps;
  auto run = [&](const Batch& batch, const std::vector<int>& use, const char* what) {
    ASSERT_EQ(use.size(), batch.chunks.size());
    Run(batch, what, use);
  };
  for (int s = 0; s < 5; ++s) run(steps.Prefill(s, 3 + 2 * s), {s % 3 - 1}, "prefill");
  // A base graph first: the adapter graphs' buffers must already be in place.
  run(steps.Decode({0, 1, 2, 3, 4}, 0), {-1, -1, -1, -1, -1}, "no adapter: the base variant");
  EXPECT_EQ(graph_backend_->num_decode_graphs(), 1);
  run(steps.Decode({0, 1, 2, 3, 4}, 1), {0, -1, 1, 2, 0}, "three adapters and a base row");
  EXPECT_EQ(graph_backend_->num_decode_graphs(), 2);
  run(steps.Decode({0, 1, 2, 3, 4}, 2), {1, 2, -1, 0, 1}, "a new mix, the same graph");
  run(steps.Decode({4, 0, 2}, 3), {0, 0, 1}, "bucket 4");
  EXPECT_EQ(graph_backend_->num_decode_graphs(), 3);
  run(steps.Decode({4, 0, 2}, 4), {2, -1, 2}, "q/v only: another variant");
  EXPECT_EQ(graph_backend_->num_decode_graphs(), 4);
  run(steps.Decode({1, 3}, 5), {3, 0}, "rank 260: eager");
  EXPECT_EQ(graph_backend_->num_decode_graphs(), 4);
  run(steps.Decode({0, 1, 2, 3, 4}, 6), {2, 1, 0, -1, 0}, "bucket 8 again");
  EXPECT_EQ(graph_backend_->num_decode_graphs(), 4);
}

}  // namespace
}  // namespace spillway::engine::testing
