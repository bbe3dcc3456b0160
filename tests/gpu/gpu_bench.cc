// gpu_bench: the GPU benchmark of issue #5 on one model (a `make-model --shape llama3-8b
// --dtype bf16 --random` file on the GPU machine), each figure beside its roofline, measured
// in the same run:
//   device-to-device copy bandwidth (cudaMemcpy of 1 GiB, read + write bytes counted);
//   decode at batch 1: TPOT, and the HBM roofline = bytes of weights read per token ÷ that
//     bandwidth (goal >= 85% of it); then the same with CUDA graphs for decode steps; then
//     both with cuBLAS instead of the decode GEMV (kernels/gemv.h), which decides its default;
//   prefill of a 2048-token prompt: tokens/s and % of the card's dense BF16 tensor peak;
//   saturated throughput, N requests of 1024 prompt + 128 output tokens at once: output
//     tokens/s and model FLOPs utilisation;
//   many adapters (issue #7 goal: a batch mixing 8 adapters at >= 80% of the base model's
//     throughput): one decode step of 32 sequences with 8 adapters of rank 16 on every
//     projection, round-robin (a segment per sequence) and grouped, against the base model's
//     step, eager (AddLora) and as CUDA graphs (AddLoraByRow);
//   LoRA training (issue #7) with CudaTrainModel: a micro-batch of 2 x 128 tokens, rank 16 on
//     every projection — each piece's time (the goal: a step's pieces ≤ 50 ms, so a request
//     waits at most that), training tokens/s and MFU (forward 2, backward 2 FLOPs per weight
//     and token: the frozen weights need dx, not dW).
// Usage: gpu_bench --model PATH [--requests N] [--max-batch-tokens N]
//                  [--prefill N] [--prompt N] [--output N]   (sizes: 2048, 1024, 128)
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/check.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_device.h"
#include "engine/cuda/cuda_train_model.h"
#include "engine/generator/generator.h"
#include "engine/llama/llama_model.h"
#include "engine/lora/backend_adapter.h"
#include "engine/lora/lora_adapter.h"
#include "engine/weights/model_file.h"
#include "kvcache/kv_cache.h"

namespace spillway::engine {
namespace {

double Seconds(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
}

// Read + write bytes per second of a device-to-device cudaMemcpy of 1 GiB (best of 10).
double CopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) return 0;
  cudaMemset(a, 1, bytes);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  float best_ms = 1e30f;
  for (int i = 0; i < 10; ++i) {
    cudaEventRecord(start);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (i > 0) best_ms = std::min(best_ms, ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (best_ms * 1e-3);
}

// Dense BF16 tensor-core peak (no sparsity) of the cards we may be lent, FLOP/s; 0 if unknown.
double BF16Peak(const std::string& name) {
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) {
    return name.find("PCIe") != std::string::npos ? 756e12 : 989.4e12;
  }
  if (name.find("A100") != std::string::npos) return 312e12;
  return 0;
}

// Greedy requests (the sampler's cheapest path) that never stop early.
GenerateRequest Request(std::vector<TokenId> prompt, int32_t max_tokens) {
  GenerateRequest r{.prompt = std::move(prompt), .max_tokens = max_tokens, .ignore_eos = true};
  r.sampling.temperature = 0.0f;
  return r;
}

std::vector<TokenId> RandomPrompt(int32_t n, int64_t vocab, uint32_t seed) {
  std::vector<TokenId> out(n);
  uint64_t x = seed * 2654435761u + 1;
  for (TokenId& t : out) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t = static_cast<TokenId>((x >> 33) % static_cast<uint64_t>(vocab - 16));
  }
  return out;
}

// Every failure says what failed, so a GPU run's summary is never a bare exit status.
int Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "gpu_bench: %s: %s\n", what, status.ToString().c_str());
  return 1;
}

int Main(int argc, char** argv) {
  std::string model_path;
  int32_t requests = 128, max_batch_tokens = 8192, prefill = 2048, prompt = 1024, output = 128;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--model") model_path = argv[i + 1];
    if (flag == "--requests") requests = std::atoi(argv[i + 1]);
    if (flag == "--max-batch-tokens") max_batch_tokens = std::atoi(argv[i + 1]);
    if (flag == "--prefill") prefill = std::atoi(argv[i + 1]);
    if (flag == "--prompt") prompt = std::atoi(argv[i + 1]);
    if (flag == "--output") output = std::atoi(argv[i + 1]);
  }
  if (model_path.empty()) {
    std::fprintf(stderr,
                 "usage: gpu_bench --model PATH [--requests N] [--max-batch-tokens N] "
                 "[--prefill N] [--prompt N] [--output N]\n");
    return 2;
  }
  absl::StatusOr<cuda::CudaDeviceInfo> info = cuda::ProbeCudaDevice();
  if (!info.ok()) return Fail("the device", info.status());
  std::printf("device: %s, %lld MiB, %d SMs\n", info->name.c_str(),
              static_cast<long long>(info->total_bytes >> 20), info->sm_count);
  const double bw = CopyBandwidth();
  std::printf("D2D copy bandwidth: %.0f GB/s (read + write)\n", bw / 1e9);

  absl::StatusOr<std::unique_ptr<ModelFile>> file = OpenModelFile(model_path);
  if (!file.ok()) return Fail("the model file", file.status());
  const ModelConfig& c = (*file)->config();
  // Bytes of weights a decode step reads (bf16 matrices; only one embedding row unless the
  // table is also the lm head) and the multiply-add count per token of the matrices.
  double step_bytes = 0, matmul_params = 0;
  for (const auto& [name, t] : (*file)->tensors()) {
    if (t.shape.size() != 2) continue;
    const double n = static_cast<double>(t.num_elements());
    if (name == "token_embd.weight" && !c.tied_embeddings) continue;
    step_bytes += 2 * n;
    matmul_params += n;
  }
  // A smaller model's context may hold less than --prefill (the emu tier's tiny one).
  const int32_t prefill_len =
      static_cast<int32_t>(std::min<int64_t>(prefill, c.context_length - 1));
  // The saturated run's requests, or the many-adapter step's 32 sequences of 129 tokens.
  const int32_t blocks =
      std::max(requests * ((prompt + output) / kvcache::kBlockTokens + 1), 32 * 10) + 256;
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<cuda::CudaBackend>> backend = cuda::CudaBackend::Create();
  if (!backend.ok()) return Fail("CudaBackend::Create", backend.status());
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Create(**file, **backend, blocks);
  if (!model.ok()) return Fail("LlamaModel::Create", model.status());
  kvcache::KvCache kv(blocks);
  std::printf(
      "model %s: %lld layers, hidden %lld, %.2f GB of bf16 weights, %d KV blocks; "
      "loaded in %.1f s\n",
      c.name.c_str(), static_cast<long long>(c.num_layers), static_cast<long long>(c.hidden),
      (*backend)->weight_bytes() / 1e9, blocks, Seconds(t0));
  const double peak = BF16Peak(info->name);
  auto attention_flops = [&](double queries, double context) {
    return 4.0 * c.num_layers * c.num_heads * c.head_dim * queries * context;
  };

  {  // warm-up: cuBLAS heuristics, scratch buffers
    Generator g(**model, kv, {.max_batch_tokens = max_batch_tokens});
    GenerateRequest r = Request(RandomPrompt(64, c.vocab_size, 99), 4);
    if (absl::Status st = g.Run({&r, 1}).status(); !st.ok()) return Fail("warm-up", st);
  }
  // Decode at batch 1: seconds per output token after the first.
  auto decode_tpot = [&](uint32_t seed) -> double {
    Generator g(**model, kv, {.max_batch_tokens = max_batch_tokens});
    GenerateRequest r = Request(RandomPrompt(128, c.vocab_size, seed), 129);
    if (absl::Status st = g.Run({&r, 1}).status(); !st.ok()) {
      Fail("decode", st);
      return -1.0;
    }
    return g.stats().decode_seconds / (g.stats().generated_tokens - 1);
  };
  const double roofline = step_bytes / bw;
  {  // decode, batch 1
    const double tpot = decode_tpot(1);
    if (tpot < 0) return 1;
    std::printf(
        "decode batch 1: TPOT %.3f ms; HBM roofline %.3f ms (%.2f GB / %.0f GB/s): "
        "%.1f%% of roofline (goal 85%%, published engines 70-77%%)\n",
        tpot * 1e3, roofline * 1e3, step_bytes / 1e9, bw / 1e9, 100 * roofline / tpot);
  }
  // `run` with CUDA graphs for decode steps (the first step of a shape captures its graph);
  // -1 when they cannot be turned on.
  auto with_graphs = [&](auto run) -> double {
    if (absl::Status st = (*model)->SetDecodeGraphs(true); !st.ok()) {
      Fail("graphs", st);
      return -1.0;
    }
    const double result = run();
    SPW_CHECK((*model)->SetDecodeGraphs(false).ok());  // turning them off cannot fail
    return result;
  };
  {  // the same as CUDA graphs
    const double tpot = with_graphs([&] { return decode_tpot(3); });
    if (tpot < 0) return 1;
    std::printf("decode batch 1, CUDA graphs: TPOT %.3f ms: %.1f%% of roofline\n", tpot * 1e3,
                100 * roofline / tpot);
  }
  {  // the same two with cuBLAS for every GEMM instead of the decode GEMV (kernels/gemv.h)
    (*backend)->SetDecodeGemv(false);
    const double eager = decode_tpot(4);
    const double graph = with_graphs([&] { return decode_tpot(5); });
    (*backend)->SetDecodeGemv(true);
    if (eager < 0 || graph < 0) return 1;
    std::printf(
        "decode batch 1, cuBLAS GEMV instead of ours: TPOT %.3f ms eager, %.3f ms with CUDA "
        "graphs: %.1f%% of roofline\n",
        eager * 1e3, graph * 1e3, 100 * roofline / graph);
  }
  {  // prefill 2048
    // A fresh generator (its stats add up) and prompt (no cached prefix) each time.
    std::vector<double> times;
    for (int i = 0; i < 3; ++i) {
      Generator g(**model, kv, {.max_batch_tokens = prefill_len});
      GenerateRequest r = Request(RandomPrompt(prefill_len, c.vocab_size, 2 + i), 1);
      if (absl::Status st = g.Run({&r, 1}).status(); !st.ok()) return Fail("prefill", st);
      times.push_back(g.stats().prefill_seconds);
    }
    std::sort(times.begin(), times.end());
    const double s = times[1];
    const double flops =
        2.0 * matmul_params * prefill_len + attention_flops(prefill_len, prefill_len / 2.0);
    std::printf(
        "prefill %d tokens: %.3f s, %.0f tokens/s, %.1f TFLOP/s = %.1f%% of BF16 peak "
        "%.0f TFLOP/s (goal 60%%)\n",
        prefill_len, s, prefill_len / s, flops / s / 1e12, peak > 0 ? 100 * flops / s / peak : 0.0,
        peak / 1e12);
  }
  {  // saturated: `requests` x (1024 in, 128 out) at once
    Generator g(**model, kv, {.max_batch_tokens = max_batch_tokens});
    std::vector<GenerateRequest> reqs;
    for (int32_t i = 0; i < requests; ++i) {
      reqs.push_back(Request(RandomPrompt(prompt, c.vocab_size, 100 + i), output));
    }
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::vector<GenerateResult>> out = g.Run(reqs);
    const double s = Seconds(start);
    if (!out.ok()) return Fail("saturated run", out.status());
    const double tokens = static_cast<double>(requests) * (prompt + output);
    const double flops = 2.0 * matmul_params * tokens +
                         requests * attention_flops(prompt + output, (prompt + output) / 2.0);
    std::printf(
        "saturated %d x (%d in, %d out), max batch tokens %d: %.1f s, %.0f output "
        "tokens/s, MFU %.1f%% (goal 60%%; vLLM/SGLang 8B on one H100 ~12-16k tok/s on "
        "ShareGPT-like mixes)\n",
        requests, prompt, output, max_batch_tokens, s, requests * output / s,
        peak > 0 ? 100 * flops / s / peak : 0.0);
  }
  {  // many adapters: one decode step of 32 sequences after 128 tokens of context
    constexpr int32_t kSeqs = 32, kContext = 128, kAdapters = 8;
    lora::LoraConfig lc;
    lc.rank = 16;
    lc.alpha = 32;
    lc.targets = {lora::kAllLoraModules.begin(), lora::kAllLoraModules.end()};
    std::vector<std::unique_ptr<lora::BackendLoraAdapter>> adapters;
    for (int i = 0; i < kAdapters; ++i) {
      // B = 0, as PEFT initialises it: the values do not change the work.
      absl::StatusOr<lora::LoraAdapter> a = lora::NewLoraAdapter(c, lc, 100 + i);
      if (!a.ok()) return Fail("a LoRA adapter", a.status());
      absl::StatusOr<std::unique_ptr<lora::BackendLoraAdapter>> loaded =
          lora::BackendLoraAdapter::Load(*a, **backend);
      if (!loaded.ok()) return Fail("loading a LoRA adapter", loaded.status());
      adapters.push_back(*std::move(loaded));
    }
    kvcache::KvCache step_kv(blocks);
    std::vector<TokenId> tokens = RandomPrompt(kSeqs, c.vocab_size, 11);
    // mode 0: the base model; 1: round-robin over the adapters; 2: each adapter's sequences
    // side by side. Median of 20 steps after 3 of warm-up.
    auto step_ms = [&](int mode) -> double {
      Batch batch;
      batch.tokens = tokens;
      for (int32_t s = 0; s < kSeqs; ++s) {
        const int adapter = mode == 1 ? s % kAdapters : s * kAdapters / kSeqs;
        batch.chunks.push_back({.num_tokens = 1,
                                .first_position = kContext,
                                .block_table = step_kv.block_table(s + 1),
                                .want_logits = true,
                                .adapter = mode == 0 ? nullptr : adapters[adapter].get()});
      }
      std::vector<float> logits;
      std::vector<double> ms;
      for (int i = 0; i < 23; ++i) {
        const auto start = std::chrono::steady_clock::now();
        if (absl::Status st = (*model)->Forward(batch, &logits); !st.ok()) {
          Fail("a multi-adapter step", st);
          return -1.0;
        }
        if (i >= 3) ms.push_back(Seconds(start) * 1e3);
      }
      std::sort(ms.begin(), ms.end());
      return ms[ms.size() / 2];
    };
    for (int32_t s = 0; s < kSeqs; ++s) {
      if (!step_kv.Grow(s + 1, kContext + 1).has_value()) {
        return Fail("the multi-adapter KV", absl::ResourceExhaustedError("KV blocks"));
      }
    }
    const double base = step_ms(0), round_robin = step_ms(1), grouped = step_ms(2);
    const double base_graph = with_graphs([&] { return step_ms(0); });
    const double round_robin_graph = with_graphs([&] { return step_ms(1); });
    const double grouped_graph = with_graphs([&] { return step_ms(2); });
    if (std::min({base, round_robin, grouped, base_graph, round_robin_graph, grouped_graph}) < 0) {
      return 1;
    }
    std::printf(
        "8 adapters (rank 16, all projections), decode step of %d sequences, eager: base "
        "%.3f ms, round-robin %.3f ms = %.1f%% of base throughput, grouped %.3f ms = %.1f%%\n",
        kSeqs, base, round_robin, 100 * base / round_robin, grouped, 100 * base / grouped);
    std::printf(
        "8 adapters as CUDA graphs: base %.3f ms, round-robin %.3f ms = %.1f%% of base "
        "throughput, grouped %.3f ms = %.1f%% (goal 80%%)\n",
        base_graph, round_robin_graph, 100 * base_graph / round_robin_graph, grouped_graph,
        100 * base_graph / grouped_graph);
  }
  {  // LoRA training passes on the GPU: the serving model is dropped first (its memory).
    model->reset();
    backend->reset();
    t0 = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<cuda::CudaTrainModel>> train =
        cuda::CudaTrainModel::Create(**file);
    if (!train.ok()) return Fail("CudaTrainModel::Create", train.status());
    std::printf("training model uploaded in %.1f s\n", Seconds(t0));
    lora::LoraConfig lc;
    lc.rank = 16;
    lc.alpha = 32;
    lc.targets = {lora::kAllLoraModules.begin(), lora::kAllLoraModules.end()};
    absl::StatusOr<lora::LoraAdapter> adapter = lora::NewLoraAdapter(c, lc, 1);
    if (!adapter.ok()) return Fail("the LoRA adapter", adapter.status());
    for (float& v : adapter->params) v = 1e-3f;  // B = 0 would make dA zero, not cheaper
    constexpr int32_t kSeqLen = 128;
    std::vector<std::vector<TokenId>> tokens = {RandomPrompt(kSeqLen, c.vocab_size, 7),
                                                RandomPrompt(kSeqLen, c.vocab_size, 8)};
    std::vector<uint8_t> mask(kSeqLen, 1);
    std::vector<train::TrainSequence> seqs = {{tokens[0], mask}, {tokens[1], mask}};
    std::vector<float> grad(adapter->params.size());
    std::vector<double> pieces_ms, pass_s;
    for (int rep = 0; rep < 6; ++rep) {
      auto pass = (*train)->Begin(seqs, adapter->layout, lc.scale(), adapter->params.data(),
                                  grad.data(), {});
      if (!pass.ok()) return Fail("a training pass", pass.status());
      const auto start = std::chrono::steady_clock::now();
      bool done = false;
      while (!done) {
        const auto p0 = std::chrono::steady_clock::now();
        done = (*train)->Advance(**pass);
        if (rep > 0) pieces_ms.push_back(Seconds(p0) * 1e3);  // rep 0 warms up
      }
      if (rep > 0) pass_s.push_back(Seconds(start));
    }
    std::sort(pieces_ms.begin(), pieces_ms.end());
    std::sort(pass_s.begin(), pass_s.end());
    const double tokens_per_pass = 2.0 * kSeqLen, s = pass_s[pass_s.size() / 2];
    const double flops =
        4.0 * matmul_params * tokens_per_pass + 3.0 * 2 * attention_flops(kSeqLen, kSeqLen / 2.0);
    std::printf(
        "LoRA training, micro-batch 2 x %d tokens, rank 16 on all projections: pass %.1f ms "
        "(%.0f tokens/s, MFU %.1f%%); pieces p50 %.2f ms, max %.2f ms (goal: <= 50 ms)\n",
        kSeqLen, s * 1e3, tokens_per_pass / s, peak > 0 ? 100 * flops / s / peak : 0.0,
        pieces_ms[pieces_ms.size() / 2], pieces_ms.back());
  }
  return 0;
}

}  // namespace
}  // namespace spillway::engine

int main(int argc, char** argv) { return spillway::engine::Main(argc, argv); }
