// A tiny random Llama-family model held in memory (F32 tensors in GGUF naming), for the
// training unit tests: no file, deterministic in its seed.
#pragma once

#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "engine/lora/lora_adapter.h"
#include "engine/weights/model_file.h"

namespace spillway::engine::testing {

class TinyRandomModel final : public ModelFile {
 public:
  // 2 layers, hidden 16, 4 heads, 2 KV heads, head_dim 4, ffn 24, vocab 40. `qwen_like` adds
  // q/k/v biases, an untied lm_head and NeoX RoPE; otherwise a Llama with tied embeddings.
  explicit TinyRandomModel(uint64_t seed, bool qwen_like = false) : rng_(seed) {
    ModelConfig& c = config_;
    c.architecture = qwen_like ? "qwen2" : "llama";
    c.name = "tiny-random";
    c.num_layers = 2;
    c.hidden = 16;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 4;
    c.ffn_hidden = 24;
    c.vocab_size = 40;
    c.context_length = 64;
    c.rms_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_dims = 4;
    c.rope_style = qwen_like ? RopeStyle::kNeox : RopeStyle::kNormal;
    c.tied_embeddings = !qwen_like;
    c.qkv_bias = qwen_like;
    const int64_t qd = 16, kd = 8;
    Add("token_embd.weight", {c.hidden, c.vocab_size}, 1.0f);
    Add("output_norm.weight", {c.hidden}, 0.2f, 1.0f);
    if (qwen_like) Add("output.weight", {c.hidden, c.vocab_size}, 0.3f);
    for (int l = 0; l < 2; ++l) {
      const std::string p = absl::StrFormat("blk.%d.", l);
      Add(p + "attn_norm.weight", {c.hidden}, 0.2f, 1.0f);
      Add(p + "ffn_norm.weight", {c.hidden}, 0.2f, 1.0f);
      Add(p + "attn_q.weight", {c.hidden, qd}, 0.5f);
      Add(p + "attn_k.weight", {c.hidden, kd}, 0.5f);
      Add(p + "attn_v.weight", {c.hidden, kd}, 0.5f);
      Add(p + "attn_output.weight", {qd, c.hidden}, 0.3f);
      Add(p + "ffn_gate.weight", {c.hidden, c.ffn_hidden}, 0.4f);
      Add(p + "ffn_up.weight", {c.hidden, c.ffn_hidden}, 0.4f);
      Add(p + "ffn_down.weight", {c.ffn_hidden, c.hidden}, 0.3f);
      if (qwen_like) {
        Add(p + "attn_q.bias", {qd}, 0.2f);
        Add(p + "attn_k.bias", {kd}, 0.2f);
        Add(p + "attn_v.bias", {kd}, 0.2f);
      }
    }
  }

 private:
  void Add(const std::string& name, std::vector<int64_t> shape, float scale, float offset = 0) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float>& data = storage_[name];
    std::uniform_real_distribution<float> dist(-scale, scale);
    data.resize(n);
    for (float& x : data) x = offset + dist(rng_);
    tensors_[name] = WeightTensor{.name = name,
                                  .type = GgmlType::kF32,
                                  .shape = std::move(shape),
                                  .data = reinterpret_cast<const uint8_t*>(data.data()),
                                  .nbytes = n * 4};
  }

  std::mt19937_64 rng_;
  std::map<std::string, std::vector<float>> storage_;
};

// An adapter with random A and B in [-range, range] (a fresh adapter's B is zero, which would
// hide half the gradient paths and every LoRA output).
inline lora::LoraAdapter RandomAdapter(const ModelConfig& c, const lora::LoraConfig& config,
                                       uint64_t seed, float range = 0.5f) {
  absl::StatusOr<lora::LoraAdapter> a = lora::NewLoraAdapter(c, config, seed);
  SPW_CHECK(a.ok()) << a.status();
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(-range, range);
  for (float& p : a->params) p = d(rng);
  return *std::move(a);
}

}  // namespace spillway::engine::testing
