#include "engine/weights/random_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/cpu/fp16.h"
#include "engine/weights/gguf_writer.h"

namespace spillway::engine {
namespace {

// NOTE(cuda): Llama-3-8B and 3.2-1B as Meta publishes them, SmolLM2-135M as the default model
// file has it; "tiny" is for tests.
const ModelShape kShapes[] = {
    {"llama3-8b", 32, 4096, 32, 8, 14336, 128256, 8192, 500000.0f, 1e-5f, false},
    {"llama3.2-1b", 16, 2048, 32, 8, 8192, 128256, 8192, 500000.0f, 1e-5f, true},
    {"smollm2-135m", 30, 576, 9, 3, 1536, 49152, 8192, 100000.0f, 1e-5f, true},
    {"tiny", 2, 64, 4, 2, 128, 1024, 2048, 10000.0f, 1e-5f, false},
};

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [-scale, scale): a pure function of (key, i), so any split of the work into
// threads and chunks writes the same file.
float RandomValue(uint64_t key, int64_t i, float scale) {
  const uint64_t r = SplitMix64(key ^ static_cast<uint64_t>(i));
  return (static_cast<float>(r >> 40) * (1.0f / 8388608.0f) - 1.0f) * scale;
}

// GPT-2's byte -> code point map (printable bytes map to themselves).
std::string ByteToken(int b) {
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

constexpr const char* kChatTemplate =
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

absl::Status AddTokenizer(int64_t vocab, GgufWriter& w) {
  const std::vector<std::string> specials = {"<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>",
                                             "<|im_end|>"};
  if (vocab < 256 + static_cast<int64_t>(specials.size())) {
    return absl::InvalidArgumentError(absl::StrFormat("a vocabulary of %d is too small", vocab));
  }
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(ByteToken(b));
    types.push_back(1);
  }
  const int64_t normal_end = vocab - static_cast<int64_t>(specials.size());
  // Letter pairs (with and without the leading-space byte 'Ġ'), then fillers.
  for (char a = 'a'; a <= 'z'; ++a) {
    for (char b = 'a'; b <= 'z'; ++b) {
      if (static_cast<int64_t>(tokens.size()) >= normal_end) break;
      tokens.push_back(std::string{a, b});
      types.push_back(1);
      merges.push_back(std::string{a, ' ', b});
    }
  }
  while (static_cast<int64_t>(tokens.size()) < normal_end) {
    tokens.push_back(absl::StrCat("[filler", tokens.size(), "]"));
    types.push_back(1);
  }
  for (const std::string& s : specials) {
    tokens.push_back(s);
    types.push_back(3);  // control
  }
  w.SetString("tokenizer.ggml.model", "gpt2");
  w.SetString("tokenizer.ggml.pre", "default");
  w.SetStrings("tokenizer.ggml.tokens", tokens);
  w.SetInt32s("tokenizer.ggml.token_type", types);
  w.SetStrings("tokenizer.ggml.merges", merges);
  w.SetUint32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(normal_end));
  w.SetUint32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(normal_end + 1));
  w.SetUint32("tokenizer.ggml.eot_token_id", static_cast<uint32_t>(normal_end + 3));
  w.SetBool("tokenizer.ggml.add_bos_token", false);
  w.SetString("tokenizer.chat_template", kChatTemplate);
  return absl::OkStatus();
}

}  // namespace

std::optional<ModelShape> FindModelShape(std::string_view name) {
  for (const ModelShape& s : kShapes) {
    if (s.name == name) return s;
  }
  return std::nullopt;
}

std::vector<std::string> ModelShapeNames() {
  std::vector<std::string> names;
  for (const ModelShape& s : kShapes) names.push_back(s.name);
  return names;
}

absl::Status WriteRandomModel(const RandomModelOptions& o, const std::string& path) {
  const ModelShape& s = o.shape;
  if (o.dtype != GgmlType::kF32 && o.dtype != GgmlType::kF16 && o.dtype != GgmlType::kBF16) {
    return absl::InvalidArgumentError("random models are written as f32, f16 or bf16");
  }
  if (s.num_layers <= 0 || s.hidden <= 0 || s.num_heads <= 0 || s.num_kv_heads <= 0 ||
      s.hidden % s.num_heads != 0 || s.num_heads % s.num_kv_heads != 0 ||
      (s.hidden / s.num_heads) % 2 != 0 || s.ffn_hidden <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("shape '%s' is inconsistent: hidden %d, %d heads, %d KV heads", s.name,
                        s.hidden, s.num_heads, s.num_kv_heads));
  }
  const int64_t head_dim = s.hidden / s.num_heads;
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetString("general.name", absl::StrCat(s.name, "-random"));
  w.SetUint32("llama.block_count", static_cast<uint32_t>(s.num_layers));
  w.SetUint32("llama.context_length", static_cast<uint32_t>(s.context_length));
  w.SetUint32("llama.embedding_length", static_cast<uint32_t>(s.hidden));
  w.SetUint32("llama.feed_forward_length", static_cast<uint32_t>(s.ffn_hidden));
  w.SetUint32("llama.attention.head_count", static_cast<uint32_t>(s.num_heads));
  w.SetUint32("llama.attention.head_count_kv", static_cast<uint32_t>(s.num_kv_heads));
  w.SetUint32("llama.rope.dimension_count", static_cast<uint32_t>(head_dim));
  w.SetFloat32("llama.rope.freq_base", s.rope_theta);
  w.SetFloat32("llama.attention.layer_norm_rms_epsilon", s.rms_eps);
  if (absl::Status st = AddTokenizer(s.vocab_size, w); !st.ok()) return st;

  const int threads = o.threads > 0
                          ? o.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  uint64_t tensor_key = SplitMix64(o.seed);
  // A matrix of `rows` x `cols` with values uniform in ±sqrt(3 / cols) (variance 1 / fan-in, so
  // activations keep their scale through the layers), or `scale` when given.
  auto matrix = [&](const std::string& name, int64_t cols, int64_t rows, float scale = 0.0f) {
    const uint64_t key = tensor_key = SplitMix64(tensor_key);
    const float a = scale > 0.0f ? scale : std::sqrt(3.0f / static_cast<float>(cols));
    const GgmlType type = o.dtype;
    const int64_t elem = type == GgmlType::kF32 ? 4 : 2;
    w.AddTensor(name, type, {cols, rows},
                [key, a, type, elem, threads](uint8_t* dst, int64_t offset, int64_t size) {
                  const int64_t first = offset / elem, n = size / elem;
                  auto work = [&](int64_t b, int64_t e) {
                    for (int64_t i = b; i < e; ++i) {
                      const float v = RandomValue(key, first + i, a);
                      if (type == GgmlType::kF32) {
                        std::memcpy(dst + i * 4, &v, 4);
                      } else {
                        const uint16_t h =
                            type == GgmlType::kF16 ? cpu::F32ToF16(v) : cpu::F32ToBf16(v);
                        std::memcpy(dst + i * 2, &h, 2);
                      }
                    }
                  };
                  const int64_t per = (n + threads - 1) / threads;
                  std::vector<std::thread> pool;
                  for (int t = 1; t < threads && t * per < n; ++t) {
                    pool.emplace_back(work, t * per, std::min(n, (t + 1) * per));
                  }
                  work(0, std::min(n, per));
                  for (std::thread& th : pool) th.join();
                });
  };
  auto ones = [&](const std::string& name, int64_t n) {
    w.AddTensor(name, GgmlType::kF32, {n}, [](uint8_t* dst, int64_t, int64_t size) {
      const float one = 1.0f;
      for (int64_t i = 0; i < size; i += 4) std::memcpy(dst + i, &one, 4);
    });
  };
  matrix("token_embd.weight", s.hidden, s.vocab_size, 1.0f);
  ones("output_norm.weight", s.hidden);
  if (!s.tied_embeddings) matrix("output.weight", s.hidden, s.vocab_size);
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const std::string p = absl::StrFormat("blk.%d.", l);
    ones(p + "attn_norm.weight", s.hidden);
    matrix(p + "attn_q.weight", s.hidden, s.num_heads * head_dim);
    matrix(p + "attn_k.weight", s.hidden, s.num_kv_heads * head_dim);
    matrix(p + "attn_v.weight", s.hidden, s.num_kv_heads * head_dim);
    matrix(p + "attn_output.weight", s.num_heads * head_dim, s.hidden);
    ones(p + "ffn_norm.weight", s.hidden);
    matrix(p + "ffn_gate.weight", s.hidden, s.ffn_hidden);
    matrix(p + "ffn_up.weight", s.hidden, s.ffn_hidden);
    matrix(p + "ffn_down.weight", s.ffn_hidden, s.hidden);
  }
  return w.Write(path);
}

}  // namespace spillway::engine
