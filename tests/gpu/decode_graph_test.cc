// CUDA graphs for decode steps (Backend::RunDecodeGraph, LlamaModel::SetDecodeGraphs): the same
// steps on two GPU models over one tiny random model, one eager and one with graphs, give the
// same logits — decode batches of 5, 3 and 1 sequences (buckets 8, 4 and 1, so padded rows
// run beside real ones), each bucket captured once and replayed after, with prefill steps
// (eager on both) in between. Tolerance: 1e-4 of the logits' RMS; the kernels are the same
// but cuBLAS may pick another GEMM algorithm for the padded row count (f32 accumulation in
// another order). The padding rows write only the spare block: a block no sequence owns stays
// zero. Skips without a GPU.
#include "engine/llama/llama_model.h"
#include "tests/engine/decode_steps.h"
#include "tests/engine/train/tiny_random_model.h"
#include "tests/gpu/gpu_test_util.h"

namespace spillway::engine::testing {
namespace {

constexpr int32_t kBlocks = 24;
constexpr kvcache::BlockId kUnusedBlock = 23;

TEST(DecodeGraphTest, ReplayEqualsEager) {
  SPW_SKIP_WITHOUT_GPU();
  TinyRandomModel file(11);
  absl::StatusOr<std::unique_ptr<cuda::CudaBackend>> eager_backend = cuda::CudaBackend::Create();
  absl::StatusOr<std::unique_ptr<cuda::CudaBackend>> graph_backend = cuda::CudaBackend::Create();
  ASSERT_TRUE(eager_backend.ok() && graph_backend.ok());
  auto eager = LlamaModel::Create(file, **eager_backend, kBlocks);
  auto graphs = LlamaModel::Create(file, **graph_backend, kBlocks);
  ASSERT_TRUE(eager.ok() && graphs.ok());
  ASSERT_TRUE((*graphs)->SetDecodeGraphs(true).ok());

  DecodeSteps steps;
  auto run = [&](const Batch& batch, const char* what) {
    std::vector<float> a, b;
    ASSERT_TRUE((*eager)->Forward(batch, &a).ok()) << what;
    ASSERT_TRUE((*graphs)->Forward(batch, &b).ok()) << what;
    ASSERT_EQ(a.size(), b.size()) << what;
    const Diff d = Compare(a, b);
    EXPECT_LE(d.max_abs, 1e-4 * d.rms) << what << ": max " << d.max_abs << " rms " << d.rms;
  };
  for (int s = 0; s < 5; ++s) run(steps.Prefill(s, 3 + 2 * s), "prefill");
  for (int step = 0; step < 4; ++step) run(steps.Decode({0, 1, 2, 3, 4}, step), "bucket 8");
  for (int step = 0; step < 3; ++step) run(steps.Decode({4, 0, 2}, step), "bucket 4");
  run(steps.Prefill(1, 2), "prefill");
  for (int step = 0; step < 3; ++step) run(steps.Decode({1}, step), "bucket 1");
  run(steps.Decode({0, 1, 2, 3, 4}, 9), "bucket 8 again, new contexts");
  EXPECT_EQ((*graph_backend)->num_decode_graphs(), 3);

  const std::vector<uint16_t> k = (*graph_backend)->KvToHost(0, /*values=*/false);
  const size_t per_block = k.size() / (kBlocks + 1);  // the spare block is the last one
  for (size_t i = kUnusedBlock * per_block; i < (kUnusedBlock + 1) * per_block; ++i) {
    ASSERT_EQ(k[i], 0) << "a padding row wrote outside the spare block";
  }
  bool spare_written = false;
  for (size_t i = kBlocks * per_block; i < k.size(); ++i) spare_written |= k[i] != 0;
  EXPECT_TRUE(spare_written);
}

}  // namespace
}  // namespace spillway::engine::testing
