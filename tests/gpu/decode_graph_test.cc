// CUDA graphs for decode steps (Backend::RunDecodeGraph, LlamaModel::SetDecodeGraphs): the same
// steps on two GPU models over one tiny random model, one eager and one with graphs, give the
// same logits — decode batches of 5, 3 and 1 sequences (buckets 8, 4 and 1, so padded rows
// run beside real ones), each bucket captured once and replayed after, with prefill steps
// (eager on both) in between. Tolerance: 1e-4 of the logits' RMS; the kernels are the same
// but cuBLAS may pick another GEMM algorithm for the padded row count (f32 accumulation in
// another order). The padding rows write only the spare block: a block no sequence owns stays
// zero. Skips without a GPU.
#include "engine/llama/llama_model.h"
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

  // Five sequences, two blocks each (contexts stay below 32 tokens).
  std::vector<std::vector<kvcache::BlockId>> tables;
  for (int s = 0; s < 5; ++s)
    tables.push_back(
        {static_cast<kvcache::BlockId>(2 * s + 3), static_cast<kvcache::BlockId>(2 * s + 4)});
  std::vector<int32_t> lengths(5, 0);
  auto run = [&](const Batch& batch, const char* what) {
    std::vector<float> a, b;
    ASSERT_TRUE((*eager)->Forward(batch, &a).ok()) << what;
    ASSERT_TRUE((*graphs)->Forward(batch, &b).ok()) << what;
    ASSERT_EQ(a.size(), b.size()) << what;
    const Diff d = Compare(a, b);
    EXPECT_LE(d.max_abs, 1e-4 * d.rms) << what << ": max " << d.max_abs << " rms " << d.rms;
  };
  auto prefill = [&](int s, int n) {
    Batch batch;
    for (int i = 0; i < n; ++i) batch.tokens.push_back(static_cast<TokenId>((s * 7 + i * 3) % 40));
    batch.chunks.push_back({.num_tokens = n,
                            .first_position = lengths[s],
                            .block_table = tables[s],
                            .want_logits = true});
    lengths[s] += n;
    run(batch, "prefill");
  };
  auto decode = [&](std::vector<int> seqs, int step) {
    Batch batch;
    for (int s : seqs) {
      batch.tokens.push_back(static_cast<TokenId>((s * 5 + step) % 40));
      batch.chunks.push_back({.num_tokens = 1,
                              .first_position = lengths[s],
                              .block_table = tables[s],
                              .want_logits = true});
      ++lengths[s];
    }
    run(batch, "decode");
  };
  for (int s = 0; s < 5; ++s) prefill(s, 3 + 2 * s);
  for (int step = 0; step < 4; ++step) decode({0, 1, 2, 3, 4}, step);  // bucket 8
  for (int step = 0; step < 3; ++step) decode({4, 0, 2}, step);        // bucket 4
  prefill(1, 2);
  for (int step = 0; step < 3; ++step) decode({1}, step);  // bucket 1
  decode({0, 1, 2, 3, 4}, 9);                              // bucket 8 again, new contexts
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
