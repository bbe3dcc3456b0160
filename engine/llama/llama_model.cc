#include "engine/llama/llama_model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <numbers>

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "engine/lora/backend_adapter.h"

namespace spillway::engine {

RopeTable MakeRopeTable(const ModelConfig& config, std::span<const float> freq_factors) {
  RopeTable table;
  table.style = config.rope_style;
  const int64_t pairs = config.head_dim / 2;
  const RopeScaling& s = config.rope_scaling;
  for (int64_t i = 0; i < pairs; ++i) {
    double inv = std::pow(static_cast<double>(config.rope_theta),
                          -2.0 * static_cast<double>(i) / static_cast<double>(config.head_dim));
    if (s.kind == RopeScaling::Kind::kLinear) {
      inv /= s.factor;
    } else if (s.kind == RopeScaling::Kind::kLlama3) {
      // The "llama3" rule of Hugging Face's _compute_llama3_parameters.
      const double wavelen = 2.0 * std::numbers::pi / inv;
      const double low_wavelen = s.original_context / s.low_freq_factor;
      const double high_wavelen = s.original_context / s.high_freq_factor;
      if (wavelen > low_wavelen) {
        inv /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (s.original_context / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        inv = (1.0 - smooth) * inv / s.factor + smooth * inv;
      }
    }
    if (static_cast<int64_t>(freq_factors.size()) == pairs) inv /= freq_factors[i];
    table.inv_freq.push_back(static_cast<float>(inv));
  }
  return table;
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(const ModelFile& file,
                                                               Backend& backend,
                                                               int32_t kv_blocks) {
  std::unique_ptr<LlamaModel> model(new LlamaModel(file.config(), backend));
  SPW_RETURN_IF_ERROR(model->LoadWeights(file));
  const ModelConfig& c = model->config_;
  // A backend with decode graphs gets one block more than the cache hands out: the padding
  // rows of a graph write their KV there.
  const bool spare = backend.SupportsDecodeGraphs();
  SPW_RETURN_IF_ERROR(backend.AllocateKv({.num_blocks = kv_blocks + (spare ? 1 : 0),
                                          .num_layers = c.num_layers,
                                          .num_kv_heads = c.num_kv_heads,
                                          .head_dim = c.head_dim}));
  model->kv_blocks_ = kv_blocks;
  model->spare_block_ = spare ? kv_blocks : -1;
  return model;
}

absl::Status LlamaModel::LoadWeights(const ModelFile& file) {
  auto load = [&](const std::string& name) -> absl::StatusOr<std::unique_ptr<BackendWeight>> {
    const WeightTensor* t = file.Find(name);
    if (t == nullptr) return absl::InvalidArgumentError("model file lacks tensor " + name);
    absl::StatusOr<std::unique_ptr<BackendWeight>> w = backend_.LoadWeight(*t);
    if (w.ok()) weights_by_name_[name] = w->get();
    return w;
  };
  SPW_ASSIGN_OR_RETURN(token_embd_, load("token_embd.weight"));
  SPW_ASSIGN_OR_RETURN(output_norm_, load("output_norm.weight"));
  if (!config_.tied_embeddings) {
    SPW_ASSIGN_OR_RETURN(output_, load("output.weight"));
  }
  std::vector<float> freq_factors;
  // OpenGguf checked its type (f32) and shape ([head_dim / 2]).
  if (const WeightTensor* f = file.Find("rope_freqs.weight"); f != nullptr) {
    freq_factors.resize(f->num_elements());
    std::memcpy(freq_factors.data(), f->data, freq_factors.size() * sizeof(float));
  }
  rope_ = MakeRopeTable(config_, freq_factors);
  layers_.resize(config_.num_layers);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    Layer& y = layers_[l];
    const std::string p = absl::StrFormat("blk.%d.", l);
    SPW_ASSIGN_OR_RETURN(y.attn_norm, load(p + "attn_norm.weight"));
    SPW_ASSIGN_OR_RETURN(y.wq, load(p + "attn_q.weight"));
    SPW_ASSIGN_OR_RETURN(y.wk, load(p + "attn_k.weight"));
    SPW_ASSIGN_OR_RETURN(y.wv, load(p + "attn_v.weight"));
    SPW_ASSIGN_OR_RETURN(y.wo, load(p + "attn_output.weight"));
    if (config_.qkv_bias) {
      SPW_ASSIGN_OR_RETURN(y.bq, load(p + "attn_q.bias"));
      SPW_ASSIGN_OR_RETURN(y.bk, load(p + "attn_k.bias"));
      SPW_ASSIGN_OR_RETURN(y.bv, load(p + "attn_v.bias"));
    }
    SPW_ASSIGN_OR_RETURN(y.ffn_norm, load(p + "ffn_norm.weight"));
    SPW_ASSIGN_OR_RETURN(y.gate, load(p + "ffn_gate.weight"));
    SPW_ASSIGN_OR_RETURN(y.up, load(p + "ffn_up.weight"));
    SPW_ASSIGN_OR_RETURN(y.down, load(p + "ffn_down.weight"));
  }
  return absl::OkStatus();
}

const BackendWeight* LlamaModel::FindWeight(std::string_view name) const {
  const auto it = weights_by_name_.find(name);
  return it == weights_by_name_.end() ? nullptr : it->second;
}

absl::Status LlamaModel::CheckBatch(const Batch& batch) const {
  int64_t total = 0;
  for (const BatchChunk& c : batch.chunks) {
    const int64_t end = int64_t{c.first_position} + c.num_tokens;
    if (c.num_tokens <= 0 || c.first_position < 0 || end > config_.context_length) {
      return absl::InvalidArgumentError(
          absl::StrFormat("batch chunk covers positions [%d, %d); the context is %d tokens",
                          c.first_position, end, config_.context_length));
    }
    if (static_cast<int64_t>(c.block_table.size()) * kvcache::kBlockTokens < end) {
      return absl::InvalidArgumentError(
          absl::StrFormat("batch chunk ends at position %d but its block table holds %d blocks",
                          end, c.block_table.size()));
    }
    if (c.adapter != nullptr) {
      const lora::LoraLayout& layout = c.adapter->adapter().layout;
      bool fits = layout.num_layers() == config_.num_layers;
      for (int64_t l = 0; fits && l < layout.num_layers(); ++l) {
        for (lora::LoraModule m : lora::kAllLoraModules) {
          const lora::LoraSlot& s = layout.slot(l, m);
          if (s.adapted() && (s.in != lora::LoraModuleIn(config_, m) ||
                              s.out != lora::LoraModuleOut(config_, m))) {
            fits = false;
          }
        }
      }
      if (!fits) {
        return absl::InvalidArgumentError("a batch chunk's LoRA adapter is for another model");
      }
    }
    for (kvcache::BlockId b : c.block_table) {
      if (b < 0 || b >= kv_blocks_) {
        return absl::InvalidArgumentError(absl::StrFormat("block id %d out of range", b));
      }
    }
    total += c.num_tokens;
  }
  if (total != static_cast<int64_t>(batch.tokens.size())) {
    return absl::InvalidArgumentError("batch chunks do not add up to its tokens");
  }
  for (TokenId t : batch.tokens) {
    if (t < 0 || t >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "token id %d is out of range for a vocabulary of %d", t, config_.vocab_size));
    }
  }
  return absl::OkStatus();
}

void LlamaModel::ApplyLora(int64_t l, std::span<const lora::LoraModule> modules, Activation x,
                           std::span<const Activation> ys) {
  if (graph_lora_mask_ != 0) {
    // In a decode graph: the same call whichever adapters the rows have this time.
    std::array<int64_t, Backend::kMaxLoraByRowSlots> slots;
    std::array<Activation, Backend::kMaxLoraByRowSlots> outs;
    size_t n = 0;
    for (size_t i = 0; i < modules.size(); ++i) {
      if ((graph_lora_mask_ & (1u << static_cast<int>(modules[i]))) == 0) continue;
      slots[n] = lora::BackendLoraAdapter::Slot(l, modules[i]);
      outs[n++] = ys[i];
    }
    if (n > 0) backend_.AddLoraByRow(x, std::span(slots).first(n), std::span(outs).first(n));
    return;
  }
  if (lora_spans_.empty()) return;
  for (size_t i = 0; i < modules.size(); ++i) {
    lora_rows_.clear();
    for (const LoraSpan& s : lora_spans_) {
      if (const BackendWeight* a = s.adapter->a(l, modules[i]); a != nullptr) {
        lora_rows_.push_back({.begin = s.begin,
                              .end = s.end,
                              .a = a,
                              .b = s.adapter->b(l, modules[i]),
                              .scale = s.adapter->scale()});
      }
    }
    if (!lora_rows_.empty()) backend_.AddLora(x, lora_rows_, ys[i]);
  }
}

Activation LlamaModel::RunLayer(int64_t l, Activation x, Activation prev_out) {
  const Layer& y = layers_[l];
  const ModelConfig& c = config_;
  const int64_t n = x.rows;
  Backend& b = backend_;
  Activation h = b.Scratch(n, c.hidden);
  if (prev_out.data == nullptr) {
    b.RmsNorm(x, *y.attn_norm, c.rms_eps, h);
  } else {
    b.AddRmsNorm(x, prev_out, *y.attn_norm, c.rms_eps, h);
  }
  Activation q = b.Scratch(n, c.num_heads * c.head_dim);
  Activation k = b.Scratch(n, c.num_kv_heads * c.head_dim);
  Activation v = b.Scratch(n, c.num_kv_heads * c.head_dim);
  // NOTE(kernels): q, k and v (and below gate and up) read the same input: one MatMulShared
  // lets the backend convert it once (the same results as three MatMul calls).
  const BackendWeight* qkv_w[] = {y.wq.get(), y.wk.get(), y.wv.get()};
  const Activation qkv[] = {q, k, v};
  b.MatMulShared(h, qkv_w, qkv);
  using enum lora::LoraModule;
  const lora::LoraModule qkv_m[] = {kQ, kK, kV};
  ApplyLora(l, qkv_m, h, qkv);
  if (c.qkv_bias) {
    b.AddBias(q, *y.bq);
    b.AddBias(k, *y.bk);
    b.AddBias(v, *y.bv);
  }
  b.Rope(q, c.num_heads, rope_);
  b.Rope(k, c.num_kv_heads, rope_);
  Activation attn = b.Scratch(n, c.num_heads * c.head_dim);
  b.Attention(l, q, k, v, c.num_heads, attn);
  Activation o = b.Scratch(n, c.hidden);
  b.MatMul(*y.wo, attn, o);
  const lora::LoraModule o_m[] = {kO};
  ApplyLora(l, o_m, attn, {&o, 1});
  b.AddRmsNorm(x, o, *y.ffn_norm, c.rms_eps, h);
  Activation gate = b.Scratch(n, c.ffn_hidden);
  Activation up = b.Scratch(n, c.ffn_hidden);
  const BackendWeight* gate_up_w[] = {y.gate.get(), y.up.get()};
  const Activation gate_up[] = {gate, up};
  b.MatMulShared(h, gate_up_w, gate_up);
  const lora::LoraModule gate_up_m[] = {kGate, kUp};
  ApplyLora(l, gate_up_m, h, gate_up);
  b.SwiGlu(gate, up, gate);
  Activation down = b.Scratch(n, c.hidden);
  b.MatMul(*y.down, gate, down);
  const lora::LoraModule down_m[] = {kDown};
  ApplyLora(l, down_m, gate, {&down, 1});
  return down;
}

absl::StatusOr<Activation> LlamaModel::RunToLogits(const Batch& batch) {
  SPW_RETURN_IF_ERROR(CheckBatch(batch));
  positions_.clear();
  chunk_starts_.assign(1, 0);
  first_positions_.clear();
  table_starts_.assign(1, 0);
  tables_.clear();
  logit_rows_.clear();
  lora_spans_.clear();
  for (const BatchChunk& c : batch.chunks) {
    if (c.adapter != nullptr) {
      if (!backend_.SupportsLora()) {
        return absl::UnimplementedError(absl::StrFormat("the %s backend cannot run LoRA adapters",
                                                        std::string(backend_.name())));
      }
      const int32_t begin = chunk_starts_.back();
      if (!lora_spans_.empty() && lora_spans_.back().adapter == c.adapter &&
          lora_spans_.back().end == begin) {
        lora_spans_.back().end += c.num_tokens;
      } else {
        lora_spans_.push_back({begin, begin + c.num_tokens, c.adapter});
      }
    }
    for (int32_t i = 0; i < c.num_tokens; ++i) positions_.push_back(c.first_position + i);
    chunk_starts_.push_back(chunk_starts_.back() + c.num_tokens);
    first_positions_.push_back(c.first_position);
    tables_.insert(tables_.end(), c.block_table.begin(), c.block_table.end());
    table_starts_.push_back(static_cast<int32_t>(tables_.size()));
    if (c.want_logits) logit_rows_.push_back(chunk_starts_.back() - 1);
  }
  if (UseDecodeGraph(batch)) return RunDecodeGraph(batch);
  backend_.BeginForward({.tokens = batch.tokens,
                         .positions = positions_,
                         .chunk_starts = chunk_starts_,
                         .first_positions = first_positions_,
                         .block_table_starts = table_starts_,
                         .block_tables = tables_});
  return RunOps(static_cast<int64_t>(batch.tokens.size()), /*gather=*/true);
}

Activation LlamaModel::RunOps(int64_t n, bool gather) {
  Backend& b = backend_;
  Activation x = b.Scratch(n, config_.hidden);
  b.Embed(*token_embd_, x);
  Activation prev{};
  for (int64_t l = 0; l < config_.num_layers; ++l) prev = RunLayer(l, x, prev);

  const int64_t m = gather ? static_cast<int64_t>(logit_rows_.size()) : n;
  if (m == 0) return Activation{.data = nullptr, .rows = 0, .cols = config_.vocab_size};
  Activation last = x, last_out = prev;
  if (gather) {
    last = b.Scratch(m, config_.hidden);
    last_out = b.Scratch(m, config_.hidden);
    b.GatherRows(x, logit_rows_, last);
    b.GatherRows(prev, logit_rows_, last_out);
  }
  Activation normed = b.Scratch(m, config_.hidden);
  b.AddRmsNorm(last, last_out, *output_norm_, config_.rms_eps, normed);
  Activation out = b.Scratch(m, config_.vocab_size);
  b.MatMul(config_.tied_embeddings ? *token_embd_ : *output_, normed, out);
  return out;
}

absl::Status LlamaModel::SetDecodeGraphs(bool on) {
  if (on && spare_block_ < 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the %s backend has no CUDA graphs for decode steps", std::string(backend_.name())));
  }
  decode_graphs_ = on;
  return absl::OkStatus();
}

bool LlamaModel::UseDecodeGraph(const Batch& batch) const {
  const auto n = static_cast<int64_t>(batch.tokens.size());
  if (!decode_graphs_ || n == 0 || n > kMaxDecodeGraphRows) return false;
  for (const BatchChunk& c : batch.chunks) {
    if (c.num_tokens != 1 || !c.want_logits) return false;
  }
  for (const LoraSpan& s : lora_spans_) {
    if (s.adapter->table() == nullptr) return false;  // the backend graphs no such adapter
  }
  int64_t bucket = 1;
  while (bucket < n) bucket *= 2;
  const int64_t table_room =
      kMaxDecodeGraphRows *
      ((config_.context_length + kvcache::kBlockTokens - 1) / kvcache::kBlockTokens);
  return static_cast<int64_t>(tables_.size()) + (bucket - n) <= table_room;
}

// NOTE(cuda): a decode step of n sequences runs as the graph of the next power of two; the
// padding rows are token 0 at position 0 with the spare block as their table, so their KV
// write lands in the spare block and their logits are dropped (out.rows = n). With adapters,
// the graph's variant is the set of projections any of them adapts: each layer then makes one
// AddLoraByRow call per input the set's projections read (h for q/k/v, attn for o, h for
// gate/up, the SwiGLU output for down), and the rows find their adapters in row_lora
// (padding and base rows have none), so one graph serves every mix of adapters with that set.
Activation LlamaModel::RunDecodeGraph(const Batch& batch) {
  const auto n = static_cast<int64_t>(batch.tokens.size());
  int64_t bucket = 1;
  while (bucket < n) bucket *= 2;
  graph_tokens_.assign(batch.tokens.begin(), batch.tokens.end());
  for (int64_t r = n; r < bucket; ++r) {
    graph_tokens_.push_back(0);
    positions_.push_back(0);
    chunk_starts_.push_back(chunk_starts_.back() + 1);
    first_positions_.push_back(0);
    tables_.push_back(spare_block_);
    table_starts_.push_back(static_cast<int32_t>(tables_.size()));
  }
  graph_row_lora_.assign(bucket, nullptr);
  graph_lora_mask_ = 0;
  for (const LoraSpan& s : lora_spans_) {
    std::fill(graph_row_lora_.begin() + s.begin, graph_row_lora_.begin() + s.end,
              s.adapter->table());
    graph_lora_mask_ |= s.adapter->module_mask();
  }
  Activation out = backend_.RunDecodeGraph(
      {.tokens = graph_tokens_,
       .positions = positions_,
       .chunk_starts = chunk_starts_,
       .first_positions = first_positions_,
       .block_table_starts = table_starts_,
       .block_tables = tables_,
       .row_lora = graph_lora_mask_ != 0 ? std::span<const BackendLoraTable* const>(graph_row_lora_)
                                         : std::span<const BackendLoraTable* const>()},
      config_.num_heads, config_.context_length, graph_lora_mask_,
      [this, bucket] { return RunOps(bucket, false); });
  graph_lora_mask_ = 0;
  out.rows = n;
  return out;
}

absl::Status LlamaModel::Forward(const Batch& batch, std::vector<float>* logits) {
  SPW_ASSIGN_OR_RETURN(const Activation out, RunToLogits(batch));
  logits->resize(out.rows * out.cols);
  if (out.rows > 0) backend_.CopyToHost(out, logits->data());
  return absl::OkStatus();
}

absl::Status LlamaModel::ForwardAndSample(const Batch& batch, const BatchSampling& sampling,
                                          std::vector<SampleResult>* samples) {
  if (!backend_.SupportsSampling()) {
    return absl::UnimplementedError(
        absl::StrFormat("the %s backend does not sample", std::string(backend_.name())));
  }
  int64_t wanted = 0;
  for (const BatchChunk& c : batch.chunks) wanted += c.want_logits ? 1 : 0;
  if (wanted != static_cast<int64_t>(sampling.rows.size())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d chunks want logits but %d sampling rows were given", wanted, sampling.rows.size()));
  }
  SPW_ASSIGN_OR_RETURN(const Activation out, RunToLogits(batch));
  samples->clear();
  if (out.rows > 0) backend_.SampleRows(out, sampling, samples);
  return absl::OkStatus();
}

}  // namespace spillway::engine
