#include "engine/train/train_model.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "engine/cpu/matmul.h"
#include "engine/cpu/quant_rows.h"
#include "engine/llama/llama_model.h"
#include "engine/train/ops.h"

namespace spillway::engine::train {

using lora::LoraLayout;
using lora::LoraModule;
using lora::LoraSlot;

// float: two packed copies for the CPU matmul kernels.
template <>
class FrozenMatrix<float> {
 public:
  static absl::StatusOr<std::unique_ptr<FrozenMatrix>> Make(std::vector<float> w, int64_t rows,
                                                            int64_t cols, cpu::ThreadPool* pool,
                                                            GgmlType type) {
    std::unique_ptr<FrozenMatrix> m(new FrozenMatrix());
    m->rows_ = rows;
    m->cols_ = cols;
    m->pool_ = pool;
    SPW_ASSIGN_OR_RETURN(m->w_, Pack(w.data(), rows, cols, type));
    std::vector<float> t(w.size());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = w[r * cols + c];
    }
    SPW_ASSIGN_OR_RETURN(m->wt_, Pack(t.data(), cols, rows, type));
    return m;
  }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  void Forward(const float* x, int64_t n, float* y) const { cpu::MatMul(*w_, x, n, y, *pool_); }
  void BackwardAdd(const float* dy, int64_t n, float* dx, std::vector<float>& tmp) const {
    tmp.resize(n * cols_);
    cpu::MatMul(*wt_, dy, n, tmp.data(), *pool_);
    for (int64_t i = 0; i < n * cols_; ++i) dx[i] += tmp[i];
  }

 private:
  FrozenMatrix() = default;
  // Packs [rows, cols] f32 as `type` (F32, or F16/BF16 rounded to nearest even).
  static absl::StatusOr<std::unique_ptr<cpu::PackedWeight>> Pack(const float* w, int64_t rows,
                                                                 int64_t cols, GgmlType type) {
    if (type == GgmlType::kF32) {
      return cpu::PackWeight(
          {.type = type, .rows = rows, .cols = cols, .data = w, .row_bytes = cols * 4});
    }
    const int64_t row_bytes = cols * 2;
    std::vector<uint8_t> rounded(rows * row_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      cpu::QuantizeRow(type, w + r * cols, rounded.data() + r * row_bytes, cols);
    }
    return cpu::PackWeight(
        {.type = type, .rows = rows, .cols = cols, .data = rounded.data(), .row_bytes = row_bytes});
  }

  int64_t rows_ = 0, cols_ = 0;
  cpu::ThreadPool* pool_ = nullptr;
  std::unique_ptr<cpu::PackedWeight> w_, wt_;
};

// double: plain loops, for gradient checks on tiny models.
template <>
class FrozenMatrix<double> {
 public:
  static absl::StatusOr<std::unique_ptr<FrozenMatrix>> Make(const std::vector<float>& w,
                                                            int64_t rows, int64_t cols,
                                                            cpu::ThreadPool*, GgmlType) {
    std::unique_ptr<FrozenMatrix> m(new FrozenMatrix());
    m->rows_ = rows;
    m->cols_ = cols;
    m->w_.assign(w.begin(), w.end());
    return m;
  }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  void Forward(const double* x, int64_t n, double* y) const {
    GemmNT(x, n, cols_, w_.data(), rows_, y, /*accumulate=*/false);
  }
  void BackwardAdd(const double* dy, int64_t n, double* dx, std::vector<double>&) const {
    GemmNNAdd(dy, n, rows_, w_.data(), cols_, dx);
  }

 private:
  FrozenMatrix() = default;
  int64_t rows_ = 0, cols_ = 0;
  std::vector<double> w_;
};

template <typename T>
struct TrainModel<T>::Layer {
  std::vector<T> attn_norm, ffn_norm, bq, bk, bv;
  std::unique_ptr<FrozenMatrix<T>> wq, wk, wv, wo, gate, up, down;
};

// What backward needs of one layer. u* are the LoRA products x·Aᵀ.
template <typename T>
struct TrainModel<T>::LayerActs {
  std::vector<T> x_in, inv1, h1, q, k, v, probs, attn, x_mid, inv2, h2, gate, up, act;
  std::vector<T> uq, uk, uv, uo, ug, uu, ud;
};

template <typename T>
struct TrainModel<T>::Pass {
  int64_t n = 0;
  std::vector<int32_t> positions;
  std::vector<int64_t> seq_starts;   // [num_seqs + 1]
  std::vector<int64_t> prob_starts;  // offsets of each sequence's probs
  std::vector<T> x;                  // the residual stream
  std::vector<LayerActs> acts;       // per layer (only those kept)
  LayerActs scratch;                 // layers whose activations are not kept
  std::vector<TokenId> tokens;
  std::vector<T> tmp;
  LoraDropout dropout;  // training passes only
};

namespace {

absl::StatusOr<std::vector<float>> Dequantize(const WeightTensor& t) {
  const int64_t row = t.shape.empty() ? 1 : t.shape[0];
  const int64_t rows = t.num_elements() / std::max<int64_t>(row, 1);
  const std::optional<int64_t> row_bytes = RowBytes(t.type, row);
  if (!row_bytes.has_value() || *row_bytes * rows > t.nbytes) {
    return absl::InvalidArgumentError("cannot dequantize tensor " + t.name);
  }
  std::vector<float> out(t.num_elements());
  for (int64_t r = 0; r < rows; ++r) {
    cpu::DequantizeRowInto(t.type, t.data + r * *row_bytes, out.data() + r * row, row);
  }
  return out;
}

template <typename T>
std::vector<T> Cast(const std::vector<float>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
void Zero(std::vector<T>& v, int64_t n) {
  v.assign(n, T{0});
}

}  // namespace

template <typename T>
TrainModel<T>::~TrainModel() = default;

template <typename T>
absl::StatusOr<std::unique_ptr<TrainModel<T>>> TrainModel<T>::Create(const ModelFile& file,
                                                                     cpu::ThreadPool* pool,
                                                                     GgmlType frozen_type,
                                                                     HeadPieces head_pieces) {
  if (frozen_type != GgmlType::kF32 && frozen_type != GgmlType::kF16 &&
      frozen_type != GgmlType::kBF16) {
    return absl::InvalidArgumentError("frozen weights are kept as F32, F16 or BF16");
  }
  std::unique_ptr<TrainModel> m(new TrainModel());
  m->config_ = file.config();
  m->pool_ = pool;
  m->frozen_type_ = std::is_same_v<T, float> ? frozen_type : GgmlType::kF32;
  if (head_pieces.slice_rows < 1 || head_pieces.chunk_rows < 1 || head_pieces.loss_rows < 1) {
    return absl::InvalidArgumentError("head pieces must have at least one row");
  }
  m->head_pieces_ = head_pieces;
  if (std::is_same_v<T, float> && pool == nullptr) {
    return absl::InvalidArgumentError("TrainModel<float> needs a thread pool");
  }
  SPW_RETURN_IF_ERROR(m->Load(file));
  return m;
}

template <typename T>
absl::Status TrainModel<T>::Load(const ModelFile& file) {
  const ModelConfig& c = config_;
  auto find = [&](const std::string& name) -> absl::StatusOr<const WeightTensor*> {
    const WeightTensor* t = file.Find(name);
    if (t == nullptr) return absl::InvalidArgumentError("model file lacks tensor " + name);
    return t;
  };
  auto vec = [&](const std::string& name, int64_t n) -> absl::StatusOr<std::vector<T>> {
    SPW_ASSIGN_OR_RETURN(const WeightTensor* t, find(name));
    if (t->num_elements() != n) return absl::InvalidArgumentError("bad shape of " + name);
    SPW_ASSIGN_OR_RETURN(std::vector<float> f, Dequantize(*t));
    return Cast<T>(f);
  };
  auto mat = [&](const std::string& name, int64_t rows,
                 int64_t cols) -> absl::StatusOr<std::unique_ptr<FrozenMatrix<T>>> {
    SPW_ASSIGN_OR_RETURN(const WeightTensor* t, find(name));
    if (t->shape.size() != 2 || t->shape[0] != cols || t->shape[1] != rows) {
      return absl::InvalidArgumentError("bad shape of " + name);
    }
    SPW_ASSIGN_OR_RETURN(std::vector<float> f, Dequantize(*t));
    return FrozenMatrix<T>::Make(std::move(f), rows, cols, pool_, frozen_type_);
  };
  SPW_ASSIGN_OR_RETURN(embedding_, find("token_embd.weight"));
  if (embedding_->shape.size() != 2 || embedding_->shape[0] != c.hidden ||
      !RowBytes(embedding_->type, c.hidden).has_value()) {
    return absl::InvalidArgumentError("bad shape of token_embd.weight");
  }
  SPW_ASSIGN_OR_RETURN(output_norm_, vec("output_norm.weight", c.hidden));
  {
    const std::string name = c.tied_embeddings ? "token_embd.weight" : "output.weight";
    SPW_ASSIGN_OR_RETURN(const WeightTensor* t, find(name));
    if (t->shape.size() != 2 || t->shape[0] != c.hidden || t->shape[1] != c.vocab_size) {
      return absl::InvalidArgumentError("bad shape of " + name);
    }
    SPW_ASSIGN_OR_RETURN(std::vector<float> f, Dequantize(*t));
    for (int64_t b = 0; b < c.vocab_size; b += head_pieces_.slice_rows) {
      const int64_t rows = std::min(head_pieces_.slice_rows, c.vocab_size - b);
      std::vector<float> slice(f.begin() + b * c.hidden, f.begin() + (b + rows) * c.hidden);
      SPW_ASSIGN_OR_RETURN(
          lm_head_.emplace_back(),
          FrozenMatrix<T>::Make(std::move(slice), rows, c.hidden, pool_, frozen_type_));
    }
  }
  std::vector<float> freq_factors;
  if (const WeightTensor* f = file.Find("rope_freqs.weight"); f != nullptr) {
    freq_factors.resize(f->num_elements());
    std::memcpy(freq_factors.data(), f->data, freq_factors.size() * sizeof(float));
  }
  rope_ = MakeRopeTable(c, freq_factors);
  const int64_t qd = c.num_heads * c.head_dim, kd = c.num_kv_heads * c.head_dim;
  layers_.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    Layer& y = layers_[l];
    const std::string p = absl::StrFormat("blk.%d.", l);
    SPW_ASSIGN_OR_RETURN(y.attn_norm, vec(p + "attn_norm.weight", c.hidden));
    SPW_ASSIGN_OR_RETURN(y.ffn_norm, vec(p + "ffn_norm.weight", c.hidden));
    // The projections in LoraModule order.
    for (auto [m, w] : {std::pair{LoraModule::kQ, &y.wq},
                        {LoraModule::kK, &y.wk},
                        {LoraModule::kV, &y.wv},
                        {LoraModule::kO, &y.wo},
                        {LoraModule::kGate, &y.gate},
                        {LoraModule::kUp, &y.up},
                        {LoraModule::kDown, &y.down}}) {
      SPW_ASSIGN_OR_RETURN(*w, mat(lora::LoraModuleTensor(l, m), lora::LoraModuleOut(c, m),
                                   lora::LoraModuleIn(c, m)));
    }
    if (c.qkv_bias) {
      SPW_ASSIGN_OR_RETURN(y.bq, vec(p + "attn_q.bias", qd));
      SPW_ASSIGN_OR_RETURN(y.bk, vec(p + "attn_k.bias", kd));
      SPW_ASSIGN_OR_RETURN(y.bv, vec(p + "attn_v.bias", kd));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTrainSequences(const ModelConfig& config, std::span<const TrainSequence> seqs) {
  if (seqs.empty()) return absl::InvalidArgumentError("no training sequences");
  for (const TrainSequence& s : seqs) {
    if (s.tokens.empty() || static_cast<int64_t>(s.tokens.size()) > config.context_length) {
      return absl::InvalidArgumentError(
          absl::StrFormat("a training sequence has %d tokens; it must have 1 to %d",
                          s.tokens.size(), config.context_length));
    }
    if (!s.loss_mask.empty() && s.loss_mask.size() != s.tokens.size()) {
      return absl::InvalidArgumentError("a loss mask's length differs from its sequence's");
    }
    for (TokenId t : s.tokens) {
      if (t < 0 || t >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrFormat("token id %d out of range", t));
      }
    }
  }
  return absl::OkStatus();
}

namespace {

uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// x ⊙ mask: element i kept (scaled by 1/(1 - p)) unless its uniform draw falls below p.
// NOTE(ftdropout): counter-based (a hash of the key and the element's index), so backward
// recomputes the mask instead of keeping it, and a pass is reproduced from its seed.
template <typename T>
void ApplyDropout(float p, uint64_t key, const T* x, int64_t count, T* out) {
  const T keep_scale = T{1} / (T{1} - static_cast<T>(p));
  for (int64_t i = 0; i < count; ++i) {
    const double u = static_cast<double>(Mix(key ^ static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53;
    out[i] = u < p ? T{0} : x[i] * keep_scale;
  }
}

}  // namespace

template <typename T>
typename TrainModel<T>::SlotDropout TrainModel<T>::DropoutOf(const Pass& p, int64_t l,
                                                             LoraModule m) {
  if (p.dropout.p <= 0) return {};
  return {.p = p.dropout.p, .key = LoraDropoutKey(p.dropout.seed, l, m)};
}

uint64_t LoraDropoutKey(uint64_t seed, int64_t layer, LoraModule m) {
  return Mix(seed ^ Mix(static_cast<uint64_t>(layer) * 8 + static_cast<int>(m) + 1));
}

template <typename T>
void TrainModel<T>::Linear(const FrozenMatrix<T>& w, const std::vector<T>* bias,
                           const LoraSlot& slot, T scale, const T* lora, const std::vector<T>& x,
                           int64_t n, std::vector<T>& u, std::vector<T>& y, SlotDropout drop) {
  const int64_t out = w.rows();
  y.resize(n * out);
  w.Forward(x.data(), n, y.data());
  if (bias != nullptr && !bias->empty()) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < out; ++j) y[i * out + j] += (*bias)[j];
    }
  }
  if (!slot.adapted()) return;
  const int64_t r = (slot.b_offset - slot.a_offset) / slot.in;
  u.resize(n * r);
  std::vector<T> scratch(n * r);
  const T* in = x.data();
  std::vector<T> dropped;
  if (drop.p > 0) {
    dropped.resize(n * slot.in);
    ApplyDropout(drop.p, drop.key, x.data(), n * slot.in, dropped.data());
    in = dropped.data();
  }
  LoraForward(in, n, slot.in, lora + slot.a_offset, lora + slot.b_offset, r, out, scale, u.data(),
              y.data(), scratch.data());
}

template <typename T>
void TrainModel<T>::LinearBackward(const FrozenMatrix<T>& w, const LoraSlot& slot, T scale,
                                   const T* lora, const std::vector<T>& x, const std::vector<T>& u,
                                   const std::vector<T>& dy, int64_t n, T* grad, std::vector<T>& dx,
                                   SlotDropout drop) {
  std::vector<T> tmp;
  w.BackwardAdd(dy.data(), n, dx.data(), tmp);
  if (!slot.adapted()) return;
  const int64_t r = (slot.b_offset - slot.a_offset) / slot.in;
  std::vector<T> du(n * r);
  if (drop.p <= 0) {
    LoraBackward(x.data(), u.data(), dy.data(), n, slot.in, lora + slot.a_offset,
                 lora + slot.b_offset, r, slot.out, scale, grad + slot.a_offset,
                 grad + slot.b_offset, dx.data(), du.data());
    return;
  }
  // With dropout the branch saw x' = x ⊙ mask: dA uses x', and the branch's dx' goes
  // through the mask (dx += dx' ⊙ mask).
  std::vector<T> dropped(n * slot.in), dx_branch(n * slot.in, T{0});
  ApplyDropout(drop.p, drop.key, x.data(), n * slot.in, dropped.data());
  LoraBackward(dropped.data(), u.data(), dy.data(), n, slot.in, lora + slot.a_offset,
               lora + slot.b_offset, r, slot.out, scale, grad + slot.a_offset, grad + slot.b_offset,
               dx_branch.data(), du.data());
  ApplyDropout(drop.p, drop.key, dx_branch.data(), n * slot.in, dx_branch.data());
  for (int64_t i = 0; i < n * slot.in; ++i) dx[i] += dx_branch[i];
}

template <typename T>
void TrainModel<T>::AttnHalfForward(int64_t l, Pass& p, LayerActs& a, const LoraLayout& layout,
                                    T scale, const T* lora) {
  const ModelConfig& c = config_;
  const Layer& y = layers_[l];
  const int64_t n = p.n, qd = c.num_heads * c.head_dim, kd = c.num_kv_heads * c.head_dim;
  a.x_in = p.x;
  a.h1.resize(n * c.hidden);
  a.inv1.resize(n);
  RmsNormForward(p.x.data(), y.attn_norm.data(), n, c.hidden, c.rms_eps, a.h1.data(),
                 a.inv1.data());
  Linear(*y.wq, &y.bq, layout.slot(l, LoraModule::kQ), scale, lora, a.h1, n, a.uq, a.q,
         DropoutOf(p, l, LoraModule::kQ));
  Linear(*y.wk, &y.bk, layout.slot(l, LoraModule::kK), scale, lora, a.h1, n, a.uk, a.k,
         DropoutOf(p, l, LoraModule::kK));
  Linear(*y.wv, &y.bv, layout.slot(l, LoraModule::kV), scale, lora, a.h1, n, a.uv, a.v,
         DropoutOf(p, l, LoraModule::kV));
  RopeInPlace(a.q.data(), n, c.num_heads, c.head_dim, p.positions, rope_, false);
  RopeInPlace(a.k.data(), n, c.num_kv_heads, c.head_dim, p.positions, rope_, false);
  a.attn.resize(n * qd);
  a.probs.resize(p.prob_starts.back());
  for (size_t s = 0; s + 1 < p.seq_starts.size(); ++s) {
    const int64_t b = p.seq_starts[s], len = p.seq_starts[s + 1] - b;
    AttentionForward(a.q.data() + b * qd, a.k.data() + b * kd, a.v.data() + b * kd, len,
                     c.num_heads, c.num_kv_heads, c.head_dim, a.attn.data() + b * qd,
                     a.probs.data() + p.prob_starts[s]);
  }
  Linear(*y.wo, nullptr, layout.slot(l, LoraModule::kO), scale, lora, a.attn, n, a.uo, p.tmp,
         DropoutOf(p, l, LoraModule::kO));
  a.x_mid = p.x;
  for (int64_t i = 0; i < n * c.hidden; ++i) a.x_mid[i] += p.tmp[i];
}

template <typename T>
void TrainModel<T>::FfnHalfForward(int64_t l, Pass& p, LayerActs& a, const LoraLayout& layout,
                                   T scale, const T* lora) {
  const ModelConfig& c = config_;
  const Layer& y = layers_[l];
  const int64_t n = p.n;
  a.h2.resize(n * c.hidden);
  a.inv2.resize(n);
  RmsNormForward(a.x_mid.data(), y.ffn_norm.data(), n, c.hidden, c.rms_eps, a.h2.data(),
                 a.inv2.data());
  Linear(*y.gate, nullptr, layout.slot(l, LoraModule::kGate), scale, lora, a.h2, n, a.ug, a.gate,
         DropoutOf(p, l, LoraModule::kGate));
  Linear(*y.up, nullptr, layout.slot(l, LoraModule::kUp), scale, lora, a.h2, n, a.uu, a.up,
         DropoutOf(p, l, LoraModule::kUp));
  a.act.resize(n * c.ffn_hidden);
  SwiGluForward(a.gate.data(), a.up.data(), n * c.ffn_hidden, a.act.data());
  Linear(*y.down, nullptr, layout.slot(l, LoraModule::kDown), scale, lora, a.act, n, a.ud, p.tmp,
         DropoutOf(p, l, LoraModule::kDown));
  for (int64_t i = 0; i < n * c.hidden; ++i) p.x[i] = a.x_mid[i] + p.tmp[i];
}

template <typename T>
void TrainModel<T>::FfnHalfBackward(int64_t l, Pass& p, LayerActs& a, const LoraLayout& layout,
                                    T scale, const T* lora, T* grad, std::vector<T>& dx) {
  const ModelConfig& c = config_;
  const Layer& y = layers_[l];
  const int64_t n = p.n;
  // FFN: x_out = x_mid + down(silu(gate(h2)) * up(h2)), h2 = rmsnorm(x_mid).
  std::vector<T> d_act, d_gate, d_up, dh;
  Zero(d_act, n * c.ffn_hidden);
  LinearBackward(*y.down, layout.slot(l, LoraModule::kDown), scale, lora, a.act, a.ud, dx, n, grad,
                 d_act, DropoutOf(p, l, LoraModule::kDown));
  Zero(d_gate, n * c.ffn_hidden);
  Zero(d_up, n * c.ffn_hidden);
  SwiGluBackward(a.gate.data(), a.up.data(), d_act.data(), n * c.ffn_hidden, d_gate.data(),
                 d_up.data());
  Zero(dh, n * c.hidden);
  LinearBackward(*y.gate, layout.slot(l, LoraModule::kGate), scale, lora, a.h2, a.ug, d_gate, n,
                 grad, dh, DropoutOf(p, l, LoraModule::kGate));
  LinearBackward(*y.up, layout.slot(l, LoraModule::kUp), scale, lora, a.h2, a.uu, d_up, n, grad, dh,
                 DropoutOf(p, l, LoraModule::kUp));
  RmsNormBackward(a.x_mid.data(), y.ffn_norm.data(), a.inv2.data(), dh.data(), n, c.hidden,
                  dx.data());
}

template <typename T>
void TrainModel<T>::AttnHalfBackward(int64_t l, Pass& p, LayerActs& a, const LoraLayout& layout,
                                     T scale, const T* lora, T* grad, std::vector<T>& dx) {
  const ModelConfig& c = config_;
  const Layer& y = layers_[l];
  const int64_t n = p.n, qd = c.num_heads * c.head_dim, kd = c.num_kv_heads * c.head_dim;
  std::vector<T> dh;
  // Attention: x_mid = x_in + o(attn(rope(q(h1)), rope(k(h1)), v(h1))), h1 = rmsnorm(x_in).
  std::vector<T> d_attn, dq, dk, dv, scratch;
  Zero(d_attn, n * qd);
  LinearBackward(*y.wo, layout.slot(l, LoraModule::kO), scale, lora, a.attn, a.uo, dx, n, grad,
                 d_attn, DropoutOf(p, l, LoraModule::kO));
  Zero(dq, n * qd);
  Zero(dk, n * kd);
  Zero(dv, n * kd);
  for (size_t s = 0; s + 1 < p.seq_starts.size(); ++s) {
    const int64_t b = p.seq_starts[s], len = p.seq_starts[s + 1] - b;
    scratch.resize(len);
    AttentionBackward(a.q.data() + b * qd, a.k.data() + b * kd, a.v.data() + b * kd,
                      a.probs.data() + p.prob_starts[s], d_attn.data() + b * qd, len, c.num_heads,
                      c.num_kv_heads, c.head_dim, dq.data() + b * qd, dk.data() + b * kd,
                      dv.data() + b * kd, scratch.data());
  }
  RopeInPlace(dq.data(), n, c.num_heads, c.head_dim, p.positions, rope_, true);
  RopeInPlace(dk.data(), n, c.num_kv_heads, c.head_dim, p.positions, rope_, true);
  Zero(dh, n * c.hidden);
  LinearBackward(*y.wq, layout.slot(l, LoraModule::kQ), scale, lora, a.h1, a.uq, dq, n, grad, dh,
                 DropoutOf(p, l, LoraModule::kQ));
  LinearBackward(*y.wk, layout.slot(l, LoraModule::kK), scale, lora, a.h1, a.uk, dk, n, grad, dh,
                 DropoutOf(p, l, LoraModule::kK));
  LinearBackward(*y.wv, layout.slot(l, LoraModule::kV), scale, lora, a.h1, a.uv, dv, n, grad, dh,
                 DropoutOf(p, l, LoraModule::kV));
  RmsNormBackward(a.x_in.data(), y.attn_norm.data(), a.inv1.data(), dh.data(), n, c.hidden,
                  dx.data());
}

namespace {

// The index of the largest of `n` values, the lowest on ties (as the sampler's greedy Argmax).
template <typename T>
TokenId ArgmaxLowestId(const T* v, int64_t n) {
  int64_t best = 0;
  for (int64_t j = 1; j < n; ++j) {
    if (v[j] > v[best]) best = j;
  }
  return static_cast<TokenId>(best);
}

void SetUpPass(std::span<const TrainSequence> seqs, int64_t num_heads, int64_t* n,
               std::vector<int32_t>* positions, std::vector<int64_t>* seq_starts,
               std::vector<int64_t>* prob_starts, std::vector<TokenId>* token_ids) {
  *n = 0;
  positions->clear();
  token_ids->clear();
  seq_starts->assign(1, 0);
  prob_starts->assign(1, 0);
  for (const TrainSequence& s : seqs) {
    const int64_t len = static_cast<int64_t>(s.tokens.size());
    for (int64_t t = 0; t < len; ++t) {
      positions->push_back(static_cast<int32_t>(t));
      token_ids->push_back(s.tokens[t]);
    }
    *n += len;
    seq_starts->push_back(*n);
    prob_starts->push_back(prob_starts->back() + num_heads * len * len);
  }
}

}  // namespace

template <typename T>
void TrainModel<T>::Embed(std::span<const TrainSequence> seqs, Pass& p) const {
  const int64_t hidden = config_.hidden;
  SetUpPass(seqs, config_.num_heads, &p.n, &p.positions, &p.seq_starts, &p.prob_starts, &p.tokens);
  p.x.resize(p.n * hidden);
  const int64_t row_bytes = *RowBytes(embedding_->type, hidden);
  // Embedding rows are dequantized from the file per lookup.
  std::vector<float> row(hidden);
  for (int64_t i = 0; i < p.n; ++i) {
    const int64_t tok = p.tokens[i];
    cpu::DequantizeRowInto(embedding_->type, embedding_->data + tok * row_bytes, row.data(),
                           hidden);
    std::copy(row.begin(), row.end(), p.x.begin() + i * hidden);
  }
  p.acts.resize(config_.num_layers);
}

template <typename T>
void TrainModel<T>::HeadSliceForward(size_t slice, const T* x, int64_t m, T* logits,
                                     std::vector<T>& part) {
  const FrozenMatrix<T>& w = *lm_head_[slice];
  const int64_t off = static_cast<int64_t>(slice) * head_pieces_.slice_rows, rows = w.rows();
  part.resize(m * rows);
  w.Forward(x, m, part.data());
  for (int64_t i = 0; i < m; ++i) {
    std::copy_n(part.begin() + i * rows, rows, logits + i * config_.vocab_size + off);
  }
}

template <typename T>
TrainModel<T>::Run::~Run() = default;

template <typename T>
absl::StatusOr<std::unique_ptr<typename TrainModel<T>::Run>> TrainModel<T>::Begin(
    std::span<const TrainSequence> seqs, const LoraLayout& layout, T scale, const T* lora, T* grad,
    LoraDropout dropout) {
  SPW_RETURN_IF_ERROR(CheckTrainSequences(config_, seqs));
  if (!(dropout.p >= 0 && dropout.p < 1)) {
    return absl::InvalidArgumentError("LoRA dropout must be in [0, 1)");
  }
  std::unique_ptr<Run> run(new Run());
  run->seqs_.assign(seqs.begin(), seqs.end());
  run->layout_ = &layout;
  run->scale_ = scale;
  run->lora_ = lora;
  run->grad_ = grad;
  run->keep_from_ = grad != nullptr ? layout.first_adapted_layer() : config_.num_layers;
  run->pass_ = std::make_unique<Pass>();
  run->pass_->dropout = dropout;
  Embed(run->seqs_, *run->pass_);
  return run;
}

template <typename T>
bool TrainModel<T>::Advance(Run& r) {
  SPW_CHECK(!r.done());
  const ModelConfig& c = config_;
  Pass& p = *r.pass_;
  ++r.pieces_;
  switch (r.phase_) {
    case Run::Phase::kForward: {
      // unit_ counts half layers upwards: 2l is layer l's attention, 2l + 1 its FFN.
      const int64_t l = r.unit_ / 2;
      LayerActs& a = l >= r.keep_from_ ? p.acts[l] : p.scratch;
      if (r.unit_ % 2 == 0) {
        AttnHalfForward(l, p, a, *r.layout_, r.scale_, r.lora_);
      } else {
        FfnHalfForward(l, p, a, *r.layout_, r.scale_, r.lora_);
      }
      if (++r.unit_ < 2 * c.num_layers) return false;
      // The final norm, and the rows that predict a target (the lm_head runs on those only).
      r.hf_.resize(p.n * c.hidden);
      r.invf_.resize(p.n);
      RmsNormForward(p.x.data(), output_norm_.data(), p.n, c.hidden, c.rms_eps, r.hf_.data(),
                     r.invf_.data());
      for (size_t s = 0; s < r.seqs_.size(); ++s) {
        const TrainSequence& q = r.seqs_[s];
        for (size_t t = 1; t < q.tokens.size(); ++t) {
          if (!q.loss_mask.empty() && q.loss_mask[t] != 0) {
            r.rows_.push_back(p.seq_starts[s] + static_cast<int64_t>(t) - 1);
            r.targets_.push_back(q.tokens[t]);
          }
        }
      }
      r.loss_.num_targets = static_cast<int64_t>(r.rows_.size());
      if (r.grad_ != nullptr) Zero(r.dhf_, p.n * c.hidden);
      r.phase_ = r.loss_.num_targets > 0 ? Run::Phase::kHead : Run::Phase::kDone;
      return r.done();
    }
    case Run::Phase::kHead: {
      if (!HeadPiece(r)) return false;
      if (r.grad_ == nullptr || r.keep_from_ >= c.num_layers) {
        r.phase_ = Run::Phase::kDone;
        return true;
      }
      Zero(r.dx_, p.n * c.hidden);
      RmsNormBackward(p.x.data(), output_norm_.data(), r.invf_.data(), r.dhf_.data(), p.n, c.hidden,
                      r.dx_.data());
      r.phase_ = Run::Phase::kBackward;
      r.unit_ = 2 * c.num_layers - 1;
      return false;
    }
    case Run::Phase::kBackward: {
      // unit_ counts half layers downwards: 2l + 1 is layer l's FFN, 2l its attention.
      const int64_t l = r.unit_ / 2;
      if (r.unit_ % 2 == 1) {
        FfnHalfBackward(l, p, p.acts[l], *r.layout_, r.scale_, r.lora_, r.grad_, r.dx_);
      } else {
        AttnHalfBackward(l, p, p.acts[l], *r.layout_, r.scale_, r.lora_, r.grad_, r.dx_);
      }
      if (--r.unit_ >= 2 * r.keep_from_) return false;
      r.phase_ = Run::Phase::kDone;
      return true;
    }
    case Run::Phase::kDone:
      break;
  }
  SPW_CHECK(false) << "Advance after the run completed";
  return true;
}

template <typename T>
bool TrainModel<T>::HeadPiece(Run& r) {
  const ModelConfig& c = config_;
  const int64_t m = std::min(head_pieces_.chunk_rows, r.loss_.num_targets - r.chunk_);
  const size_t slices = lm_head_.size();
  switch (r.head_stage_) {
    case Run::HeadStage::kLogits: {
      if (r.slice_ == 0) {
        r.sel_.resize(m * c.hidden);
        for (int64_t i = 0; i < m; ++i) {
          std::copy_n(r.hf_.begin() + r.rows_[r.chunk_ + i] * c.hidden, c.hidden,
                      r.sel_.begin() + i * c.hidden);
        }
        r.logits_.resize(m * c.vocab_size);
      }
      HeadSliceForward(r.slice_, r.sel_.data(), m, r.logits_.data(), r.part_);
      if (++r.slice_ < slices) return false;
      r.slice_ = 0;
      r.dlogits_.resize(m * c.vocab_size);
      r.head_stage_ = Run::HeadStage::kLoss;
      return false;
    }
    case Run::HeadStage::kLoss: {
      // The softmax over the vocabulary, a few rows per piece (SmolLM2: ~0.4 ms a row).
      const int64_t end = std::min(m, r.ce_row_ + head_pieces_.loss_rows);
      for (int64_t i = r.ce_row_; i < end; ++i) {
        const T* row = r.logits_.data() + i * c.vocab_size;
        if (ArgmaxLowestId(row, c.vocab_size) == r.targets_[r.chunk_ + i]) ++r.loss_.num_correct;
        r.loss_.loss += static_cast<double>(
            CrossEntropy(r.logits_.data() + i * c.vocab_size, c.vocab_size,
                         r.targets_[r.chunk_ + i], T{1}, r.dlogits_.data() + i * c.vocab_size));
      }
      r.ce_row_ = end;
      if (r.ce_row_ < m) return false;
      r.ce_row_ = 0;
      if (r.grad_ != nullptr) {
        Zero(r.dsel_, m * c.hidden);
        r.head_stage_ = Run::HeadStage::kBackward;
        return false;
      }
      r.head_stage_ = Run::HeadStage::kLogits;
      break;
    }
    case Run::HeadStage::kBackward: {
      // dsel += dlogits[:, slice] · W_slice, slice by slice.
      const FrozenMatrix<T>& w = *lm_head_[r.slice_];
      const int64_t off = static_cast<int64_t>(r.slice_) * head_pieces_.slice_rows, rows = w.rows();
      r.part_.resize(m * rows);
      for (int64_t i = 0; i < m; ++i) {
        std::copy_n(r.dlogits_.begin() + i * c.vocab_size + off, rows, r.part_.begin() + i * rows);
      }
      w.BackwardAdd(r.part_.data(), m, r.dsel_.data(), r.tmp_);
      if (++r.slice_ < slices) return false;
      r.slice_ = 0;
      r.head_stage_ = Run::HeadStage::kLogits;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < c.hidden; ++j) {
          r.dhf_[r.rows_[r.chunk_ + i] * c.hidden + j] += r.dsel_[i * c.hidden + j];
        }
      }
      break;
    }
  }
  r.chunk_ += m;
  return r.chunk_ >= r.loss_.num_targets;
}

template <typename T>
absl::StatusOr<LossSum> TrainModel<T>::ForwardBackward(std::span<const TrainSequence> seqs,
                                                       const LoraLayout& layout, T scale,
                                                       const T* lora, T* grad,
                                                       LoraDropout dropout) {
  SPW_ASSIGN_OR_RETURN(std::unique_ptr<Run> run, Begin(seqs, layout, scale, lora, grad, dropout));
  while (!Advance(*run)) {
  }
  return run->loss();
}

template <typename T>
absl::StatusOr<std::vector<T>> TrainModel<T>::LastLogits(std::span<const TokenId> tokens,
                                                         const LoraLayout& layout, T scale,
                                                         const T* lora) {
  const TrainSequence seq{.tokens = tokens, .loss_mask = {}};
  SPW_RETURN_IF_ERROR(CheckTrainSequences(config_, {&seq, 1}));
  const ModelConfig& c = config_;
  Pass p;
  Embed({&seq, 1}, p);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    AttnHalfForward(l, p, p.scratch, layout, scale, lora);
    FfnHalfForward(l, p, p.scratch, layout, scale, lora);
  }
  std::vector<T> h(c.hidden), inv(1), logits(c.vocab_size), part;
  RmsNormForward(p.x.data() + (p.n - 1) * c.hidden, output_norm_.data(), 1, c.hidden, c.rms_eps,
                 h.data(), inv.data());
  for (size_t s = 0; s < lm_head_.size(); ++s)
    HeadSliceForward(s, h.data(), 1, logits.data(), part);
  return logits;
}

template <typename T>
int64_t TrainModel<T>::ActivationBytes(const ModelConfig& c, int64_t tokens, int64_t max_seq_len,
                                       int64_t targets) {
  const int64_t qd = c.num_heads * c.head_dim, kd = c.num_kv_heads * c.head_dim;
  const int64_t per_token_layer =
      5 * c.hidden + 2 + 2 * qd + 2 * kd + 3 * c.ffn_hidden + c.num_heads * max_seq_len + 7 * 64;
  const int64_t logits = 2 * std::min<int64_t>(targets, 32) * c.vocab_size;
  return static_cast<int64_t>(sizeof(T)) *
         (tokens * per_token_layer * c.num_layers + logits + 4 * tokens * c.hidden);
}

template class TrainModel<float>;
template class TrainModel<double>;

}  // namespace spillway::engine::train
