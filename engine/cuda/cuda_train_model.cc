#include "engine/cuda/cuda_train_model.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/cuda_device.h"
#include "engine/llama/llama_model.h"
#include "kernels/elementwise.h"
#include "kernels/train_ops.h"

namespace spillway::engine::cuda {

using lora::LoraLayout;
using lora::LoraModule;
using lora::LoraSlot;
using train::LoraDropout;
using train::LossSum;
using train::TrainSequence;

namespace {

// Row-major GEMMs in cuBLAS's column-major terms: C[M, N] = alpha · op(A) · op(B) + beta · C,
// op(A) [M, K] (A is [K, M] when ta), op(B) [K, N] (B is [N, K] when tb). Row-major C is
// column-major Cᵀ = op(B)ᵀ · op(A)ᵀ, so B goes first.
void Sgemm(cublasHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, const float* b, float beta, float* c) {
  if (m == 0 || n == 0) return;
  SPW_CUBLAS_CHECK(cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                               static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
                               &alpha, b, static_cast<int>(tb ? k : n), a,
                               static_cast<int>(ta ? m : k), &beta, c, static_cast<int>(n)));
}

// The same with bf16 A and B and f32 C, f32 accumulation (the frozen projections).
void GemmBf16(cublasHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
              const uint16_t* a, const uint16_t* b, float beta, float* c) {
  if (m == 0 || n == 0) return;
  SPW_CUBLAS_CHECK(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
                                &alpha, b, CUDA_R_16BF, static_cast<int>(tb ? k : n), a,
                                CUDA_R_16BF, static_cast<int>(ta ? m : k), &beta, c, CUDA_R_32F,
                                static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Carves one device allocation into 256-byte aligned pieces: a first pass with a null base
// counts the bytes, a second hands out the addresses.
class Carver {
 public:
  explicit Carver(std::byte* base) : base_(base) {}
  template <typename T>
  T* Take(int64_t count) {
    const size_t at = used_;
    used_ += (static_cast<size_t>(std::max<int64_t>(count, 0)) * sizeof(T) + 255) / 256 * 256;
    return base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + at);
  }
  size_t used() const { return used_; }

 private:
  std::byte* base_;
  size_t used_ = 0;
};

}  // namespace

struct CudaTrainModel::Impl {
  struct Layer {
    const float *attn_norm = nullptr, *ffn_norm = nullptr;
    const float *bq = nullptr, *bk = nullptr, *bv = nullptr;  // null: no bias
    const uint16_t *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
    const uint16_t *gate = nullptr, *up = nullptr, *down = nullptr;
  };

  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  std::vector<DeviceBuffer> weights;  // owns every device weight below
  const uint16_t* embedding = nullptr;
  const uint16_t* lm_head = nullptr;  // the embedding table when tied
  const float* output_norm = nullptr;
  std::vector<Layer> layers;
  DeviceBuffer inv_freq;  // f32 [head_dim / 2]
  bool neox = false;
  // The arena of the last finished pass, reused by the next when big enough.
  DeviceBuffer spare_arena;

  ~Impl() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    if (cublas != nullptr) cublasDestroy(cublas);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

// A pass's device memory (one arena) and its host-side position.
class CudaTrainModel::CudaPass final : public train::TrainEngine::Pass {
 public:
  const LossSum& loss() const override { return loss_; }
  bool done() const override { return phase_ == Phase::kDone; }

 private:
  friend class CudaTrainModel;
  enum class Phase { kForward, kHead, kBackward, kDone };

  // What backward needs of one layer (as TrainModel's LayerActs); u* are the LoRA products x·Aᵀ
  // of the adapted modules (null otherwise).
  struct Acts {
    float *x_in, *inv1, *h1, *q, *k, *v, *probs, *attn, *x_mid, *inv2, *h2, *gate, *up, *act;
    float* u[lora::kNumLoraModules];
  };

  // Lays out (or, with a null base, sizes) the arena.
  void Carve(Carver& c, const ModelConfig& cfg, const LoraLayout& layout, int64_t head_rows);

  CudaTrainModel* model_ = nullptr;
  DeviceBuffer arena_;
  const LoraLayout* layout_ = nullptr;
  float scale_ = 0;
  float* grad_host_ = nullptr;
  LoraDropout dropout_;
  int64_t n_ = 0, num_seqs_ = 0, max_len_ = 0, total_probs_ = 0, keep_from_ = 0;
  int64_t max_in_ = 0, max_rank_ = 0;
  std::vector<int32_t> rows_host_;  // the rows that predict a target, in order
  int64_t num_targets_ = 0;

  Phase phase_ = Phase::kForward;
  int64_t unit_ = 0;   // the next half layer
  int64_t chunk_ = 0;  // the head: the next target row
  LossSum loss_;

  // Device arrays (in arena_).
  int32_t *tokens_ = nullptr, *positions_ = nullptr, *seq_starts_ = nullptr;
  int64_t* prob_starts_ = nullptr;
  int32_t *target_rows_ = nullptr, *targets_ = nullptr;
  float *lora_ = nullptr, *grad_ = nullptr;
  float *x_ = nullptr, *tmp_ = nullptr;
  std::vector<Acts> acts_;  // per layer from keep_from_ up
  Acts scratch_{};          // the layers below keep_from_ (forward only)
  // Backward and scratch buffers.
  float *dx_ = nullptr, *dh_ = nullptr, *d_attn_ = nullptr, *dq_ = nullptr, *dk_ = nullptr,
        *dv_ = nullptr, *ds_ = nullptr, *d_act_ = nullptr, *d_gate_ = nullptr, *d_up_ = nullptr;
  float *du_ = nullptr, *dropped_ = nullptr, *dx_branch_ = nullptr;
  uint16_t* bf16_ = nullptr;  // a GEMM input rounded to bf16
  // The head.
  float *hf_ = nullptr, *invf_ = nullptr, *dhf_ = nullptr, *sel_ = nullptr, *logits_ = nullptr,
        *dsel_ = nullptr;
  double* row_loss_ = nullptr;
  int32_t* row_correct_ = nullptr;
  int64_t head_rows_ = 0;  // rows per head chunk
};

void CudaTrainModel::CudaPass::Carve(Carver& c, const ModelConfig& cfg, const LoraLayout& layout,
                                     int64_t head_rows) {
  const int64_t n = n_, h = cfg.hidden, f = cfg.ffn_hidden;
  const int64_t qd = cfg.num_heads * cfg.head_dim, kd = cfg.num_kv_heads * cfg.head_dim;
  tokens_ = c.Take<int32_t>(n);
  positions_ = c.Take<int32_t>(n);
  seq_starts_ = c.Take<int32_t>(num_seqs_ + 1);
  prob_starts_ = c.Take<int64_t>(num_seqs_ + 1);
  target_rows_ = c.Take<int32_t>(num_targets_);
  targets_ = c.Take<int32_t>(num_targets_);
  lora_ = c.Take<float>(layout.num_params());
  grad_ = grad_host_ != nullptr ? c.Take<float>(layout.num_params()) : nullptr;
  x_ = c.Take<float>(n * h);
  tmp_ = c.Take<float>(n * h);
  // rank(m): the rank of module m's LoRA product kept in these acts (0: none).
  auto take_acts = [&](Acts& a, const auto& rank) {
    a.x_in = c.Take<float>(n * h);
    a.inv1 = c.Take<float>(n);
    a.h1 = c.Take<float>(n * h);
    a.q = c.Take<float>(n * qd);
    a.k = c.Take<float>(n * kd);
    a.v = c.Take<float>(n * kd);
    a.probs = c.Take<float>(total_probs_);
    a.attn = c.Take<float>(n * qd);
    a.x_mid = c.Take<float>(n * h);
    a.inv2 = c.Take<float>(n);
    a.h2 = c.Take<float>(n * h);
    a.gate = c.Take<float>(n * f);
    a.up = c.Take<float>(n * f);
    a.act = c.Take<float>(n * f);
    for (LoraModule m : lora::kAllLoraModules) {
      const int64_t r = rank(m);
      a.u[static_cast<int>(m)] = r > 0 ? c.Take<float>(n * r) : nullptr;
    }
  };
  auto rank_at = [&](int64_t l, LoraModule m) -> int64_t {
    const LoraSlot& s = layout.slot(l, m);
    return s.adapted() ? (s.b_offset - s.a_offset) / s.in : 0;
  };
  acts_.assign(cfg.num_layers, Acts{});
  for (int64_t l = keep_from_; l < cfg.num_layers; ++l) {
    take_acts(acts_[l], [&](LoraModule m) { return rank_at(l, m); });
  }
  // Layers whose activations are not kept (below keep_from_) run in one scratch set, with
  // room for the widest LoRA product of each module.
  if (keep_from_ > 0) {
    take_acts(scratch_, [&](LoraModule m) {
      int64_t widest = 0;
      for (int64_t l = 0; l < keep_from_; ++l) widest = std::max(widest, rank_at(l, m));
      return widest;
    });
  }
  const int64_t widest_bf16 =
      std::max({n * std::max({h, f, qd}), head_rows * std::max(h, cfg.vocab_size)});
  bf16_ = c.Take<uint16_t>(widest_bf16);
  du_ = c.Take<float>(n * max_rank_);
  dropped_ = c.Take<float>(n * max_in_);
  dx_branch_ = c.Take<float>(n * max_in_);
  hf_ = c.Take<float>(n * h);
  invf_ = c.Take<float>(n);
  sel_ = c.Take<float>(head_rows * h);
  logits_ = c.Take<float>(head_rows * cfg.vocab_size);
  row_loss_ = c.Take<double>(head_rows);
  row_correct_ = c.Take<int32_t>(head_rows);
  if (grad_host_ != nullptr) {
    dx_ = c.Take<float>(n * h);
    dh_ = c.Take<float>(n * h);
    d_attn_ = c.Take<float>(n * qd);
    dq_ = c.Take<float>(n * qd);
    dk_ = c.Take<float>(n * kd);
    dv_ = c.Take<float>(n * kd);
    ds_ = c.Take<float>(total_probs_);
    d_act_ = c.Take<float>(n * f);
    d_gate_ = c.Take<float>(n * f);
    d_up_ = c.Take<float>(n * f);
    dhf_ = c.Take<float>(n * h);
    dsel_ = c.Take<float>(head_rows * h);
  }
}

CudaTrainModel::CudaTrainModel(const CudaTrainOptions& options)
    : options_(options), impl_(std::make_unique<Impl>()) {}

CudaTrainModel::~CudaTrainModel() = default;

absl::StatusOr<std::unique_ptr<CudaTrainModel>> CudaTrainModel::Create(
    const ModelFile& file, const CudaTrainOptions& options) {
  SPW_ASSIGN_OR_RETURN(const CudaDeviceInfo info, ProbeCudaDevice(options.ordinal));
  (void)info;
  if (options.head_chunk_rows < 1) {
    return absl::InvalidArgumentError("head_chunk_rows must be at least 1");
  }
  if (cudaError_t e = cudaSetDevice(options.ordinal); e != cudaSuccess) {
    return absl::UnavailableError(absl::StrFormat("cudaSetDevice: %s", cudaGetErrorString(e)));
  }
  std::unique_ptr<CudaTrainModel> m(new CudaTrainModel(options));
  m->config_ = file.config();
  const ModelConfig& c = m->config_;
  Impl& im = *m->impl_;
  if (cudaError_t e = cudaStreamCreateWithFlags(&im.stream, cudaStreamNonBlocking);
      e != cudaSuccess) {
    return absl::UnavailableError(absl::StrFormat("cudaStreamCreate: %s", cudaGetErrorString(e)));
  }
  if (cublasStatus_t s = cublasCreate(&im.cublas); s != CUBLAS_STATUS_SUCCESS) {
    im.cublas = nullptr;
    return absl::UnavailableError(absl::StrFormat("cublasCreate: %s", cublasGetStatusString(s)));
  }
  SPW_CUBLAS_CHECK(cublasSetStream(im.cublas, im.stream));
  // NOTE(ftcuda): f32 GEMMs stay f32 (no TF32): the LoRA products are small and the gradient
  // check against the host is tighter for it.
  SPW_CUBLAS_CHECK(cublasSetMathMode(im.cublas, CUBLAS_DEFAULT_MATH));

  auto find = [&](const std::string& name) -> absl::StatusOr<const WeightTensor*> {
    const WeightTensor* t = file.Find(name);
    if (t == nullptr) return absl::InvalidArgumentError("model file lacks tensor " + name);
    return t;
  };
  auto vec = [&](const std::string& name, int64_t n) -> absl::StatusOr<const float*> {
    SPW_ASSIGN_OR_RETURN(const WeightTensor* t, find(name));
    if (t->shape.size() != 1 || t->shape[0] != n) {
      return absl::InvalidArgumentError("bad shape of " + name);
    }
    if (const void* shared = options.device_weights ? options.device_weights(name) : nullptr) {
      m->shared_weight_bytes_ += n * 4;
      return static_cast<const float*>(shared);
    }
    SPW_ASSIGN_OR_RETURN(DeviceBuffer b, UploadF32Vector(*t));
    m->weight_bytes_ += static_cast<int64_t>(b.size());
    return static_cast<const float*>(im.weights.emplace_back(std::move(b)).get());
  };
  auto mat = [&](const std::string& name, int64_t rows,
                 int64_t cols) -> absl::StatusOr<const uint16_t*> {
    SPW_ASSIGN_OR_RETURN(const WeightTensor* t, find(name));
    if (t->shape.size() != 2 || t->shape[0] != cols || t->shape[1] != rows) {
      return absl::InvalidArgumentError("bad shape of " + name);
    }
    if (const void* shared = options.device_weights ? options.device_weights(name) : nullptr) {
      m->shared_weight_bytes_ += rows * cols * 2;
      return static_cast<const uint16_t*>(shared);
    }
    SPW_ASSIGN_OR_RETURN(DeviceBuffer b, UploadBf16Matrix(*t));
    m->weight_bytes_ += static_cast<int64_t>(b.size());
    return static_cast<const uint16_t*>(im.weights.emplace_back(std::move(b)).get());
  };
  if (c.head_dim % 2 != 0) return absl::InvalidArgumentError("the head size must be even");
  SPW_ASSIGN_OR_RETURN(im.embedding, mat("token_embd.weight", c.vocab_size, c.hidden));
  if (c.tied_embeddings) {
    im.lm_head = im.embedding;
  } else {
    SPW_ASSIGN_OR_RETURN(im.lm_head, mat("output.weight", c.vocab_size, c.hidden));
  }
  SPW_ASSIGN_OR_RETURN(im.output_norm, vec("output_norm.weight", c.hidden));
  const int64_t qd = c.num_heads * c.head_dim, kd = c.num_kv_heads * c.head_dim;
  im.layers.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    Impl::Layer& y = im.layers[l];
    const std::string p = absl::StrFormat("blk.%d.", l);
    SPW_ASSIGN_OR_RETURN(y.attn_norm, vec(p + "attn_norm.weight", c.hidden));
    SPW_ASSIGN_OR_RETURN(y.ffn_norm, vec(p + "ffn_norm.weight", c.hidden));
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
    if ((l + 1) % 8 == 0 || l + 1 == c.num_layers) {
      spdlog::info(
          "fine-tuning: {}/{} layers on the GPU ({} MiB uploaded, {} MiB shared with "
          "the serving model)",
          l + 1, c.num_layers, m->weight_bytes_ >> 20, m->shared_weight_bytes_ >> 20);
    }
  }
  std::vector<float> freq_factors;
  if (const WeightTensor* f = file.Find("rope_freqs.weight"); f != nullptr) {
    freq_factors.resize(f->num_elements());
    std::memcpy(freq_factors.data(), f->data, freq_factors.size() * sizeof(float));
  }
  const RopeTable rope = MakeRopeTable(c, freq_factors);
  im.neox = rope.style == RopeStyle::kNeox;
  SPW_RETURN_IF_ERROR(im.inv_freq.Reserve(rope.inv_freq.size() * sizeof(float)));
  // On the model's stream: a cudaMemcpy would go on the legacy stream, which the passes'
  // non-blocking stream is not ordered after (found by tests/emu/: RoPE read NaN).
  SPW_CUDA_CHECK(cudaMemcpyAsync(im.inv_freq.get(), rope.inv_freq.data(),
                                 rope.inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice,
                                 im.stream));
  SPW_CUDA_CHECK(cudaStreamSynchronize(im.stream));
  return m;
}

int64_t CudaTrainModel::arena_bytes() const {
  return static_cast<int64_t>(impl_->spare_arena.size());
}

int64_t CudaTrainModel::FrozenBytes(const ModelConfig& c) {
  const int64_t qd = c.num_heads * c.head_dim, kd = c.num_kv_heads * c.head_dim;
  const int64_t per_layer = c.hidden * (2 * qd + 2 * kd) + 3 * c.hidden * c.ffn_hidden;
  const int64_t tables = (c.tied_embeddings ? 1 : 2) * c.vocab_size * c.hidden;
  const int64_t vectors =
      (2 * c.num_layers + 1) * c.hidden + (c.qkv_bias ? c.num_layers * (qd + 2 * kd) : 0);
  return 2 * (c.num_layers * per_layer + tables) + 4 * vectors;
}

int64_t CudaTrainModel::ActivationBytes(const ModelConfig& c, int64_t tokens, int64_t max_seq_len,
                                        int64_t targets, int64_t head_chunk_rows) {
  // Carve()'s sizes with every layer kept, LoRA products up to rank 64 on every module, and
  // the backward buffers; 256-byte rounding of each piece is below a token's worth.
  const int64_t qd = c.num_heads * c.head_dim, kd = c.num_kv_heads * c.head_dim;
  const int64_t h = c.hidden, f = c.ffn_hidden;
  const int64_t probs = c.num_heads * tokens * std::min(tokens, max_seq_len);
  const int64_t per_layer = tokens * (5 * h + 2 + 2 * qd + 2 * kd + 3 * f + 7 * 64) + probs;
  const int64_t rows = std::min(std::max<int64_t>(targets, 1), head_chunk_rows);
  const int64_t backward = tokens * (3 * h + 2 * qd + 2 * kd + 3 * f) + probs;
  const int64_t head = tokens * (h + 1) + rows * (2 * h + c.vocab_size + 3);
  const int64_t bf16_halves =
      std::max(tokens * std::max({h, f, qd}), rows * std::max(h, c.vocab_size));
  const int64_t scratch = tokens * (2 * h + 64 + 2 * std::max(h, f));
  return 4 * ((c.num_layers + 1) * per_layer + backward + head + scratch + 4 * tokens) +
         2 * bf16_halves + (int64_t{64} << 10);
}

absl::StatusOr<std::unique_ptr<train::TrainEngine::Pass>> CudaTrainModel::Begin(
    std::span<const TrainSequence> seqs, const LoraLayout& layout, float scale, const float* lora,
    float* grad, LoraDropout dropout) {
  const ModelConfig& c = config_;
  SPW_RETURN_IF_ERROR(train::CheckTrainSequences(c, seqs));
  if (!(dropout.p >= 0 && dropout.p < 1)) {
    return absl::InvalidArgumentError("LoRA dropout must be in [0, 1)");
  }
  // The preparer thread creates the model, the engine loop drives it: set the device here.
  SPW_CUDA_CHECK(cudaSetDevice(options_.ordinal));
  std::unique_ptr<CudaPass> p(new CudaPass());
  p->model_ = this;
  p->layout_ = &layout;
  p->scale_ = scale;
  p->grad_host_ = grad;
  p->dropout_ = dropout;
  p->keep_from_ = grad != nullptr ? layout.first_adapted_layer() : c.num_layers;
  std::vector<int32_t> tokens, positions, seq_starts{0};
  std::vector<int64_t> prob_starts{0};
  std::vector<int32_t> targets;
  for (const TrainSequence& s : seqs) {
    const int64_t len = static_cast<int64_t>(s.tokens.size());
    const int64_t base = static_cast<int64_t>(tokens.size());
    for (int64_t t = 0; t < len; ++t) {
      const TokenId id = s.tokens[t];
      tokens.push_back(id);
      positions.push_back(static_cast<int32_t>(t));
      if (t >= 1 && !s.loss_mask.empty() && s.loss_mask[t] != 0) {
        p->rows_host_.push_back(static_cast<int32_t>(base + t - 1));
        targets.push_back(id);
      }
    }
    seq_starts.push_back(static_cast<int32_t>(tokens.size()));
    prob_starts.push_back(prob_starts.back() + c.num_heads * len * len);
    p->max_len_ = std::max(p->max_len_, len);
  }
  p->n_ = static_cast<int64_t>(tokens.size());
  p->num_seqs_ = static_cast<int64_t>(seqs.size());
  p->total_probs_ = prob_starts.back();
  p->num_targets_ = static_cast<int64_t>(targets.size());
  p->loss_.num_targets = p->num_targets_;
  p->head_rows_ = std::max<int64_t>(1, std::min(options_.head_chunk_rows, p->num_targets_));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (LoraModule m : lora::kAllLoraModules) {
      const LoraSlot& s = layout.slot(l, m);
      if (!s.adapted()) continue;
      p->max_in_ = std::max(p->max_in_, s.in);
      p->max_rank_ = std::max(p->max_rank_, (s.b_offset - s.a_offset) / s.in);
    }
  }
  // Size the arena, take it (the spare one when big enough), then lay it out.
  Carver sizer(nullptr);
  p->Carve(sizer, c, layout, p->head_rows_);
  if (impl_->spare_arena.size() >= sizer.used()) {
    p->arena_ = std::move(impl_->spare_arena);
  } else {
    impl_->spare_arena = DeviceBuffer();
    if (absl::Status st = p->arena_.Reserve(sizer.used()); !st.ok()) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("a training pass of %d tokens needs %d MiB of GPU memory: %s", p->n_,
                          sizer.used() >> 20, st.message()));
    }
  }
  Carver carver(static_cast<std::byte*>(p->arena_.get()));
  p->Carve(carver, c, layout, p->head_rows_);
  cudaStream_t st = impl_->stream;
  auto upload = [&](const auto& v, auto* dst) {
    if (v.empty()) return;
    SPW_CUDA_CHECK(
        cudaMemcpyAsync(dst, v.data(), v.size() * sizeof(v[0]), cudaMemcpyHostToDevice, st));
  };
  upload(tokens, p->tokens_);
  upload(positions, p->positions_);
  upload(seq_starts, p->seq_starts_);
  upload(prob_starts, p->prob_starts_);
  upload(p->rows_host_, p->target_rows_);
  upload(targets, p->targets_);
  if (layout.num_params() > 0) {
    SPW_CHECK(lora != nullptr);
    SPW_CUDA_CHECK(cudaMemcpyAsync(p->lora_, lora, layout.num_params() * sizeof(float),
                                   cudaMemcpyHostToDevice, st));
    if (p->grad_ != nullptr) {
      SPW_CUDA_CHECK(cudaMemsetAsync(p->grad_, 0, layout.num_params() * sizeof(float), st));
    }
  }
  SPW_CUDA_CHECK(kernels::EmbedBf16(impl_->embedding, p->tokens_, p->n_, c.hidden, p->x_, st));
  SPW_CUDA_CHECK(cudaStreamSynchronize(st));  // the host vectors above go out of scope
  return p;
}

namespace {

// The frozen projection y = x·Wᵀ (+ bias) and its LoRA branch, and their backward, on the
// pass's buffers. A free-standing helper so the forward and backward read alike.
struct LinearOps {
  cublasHandle_t cublas;
  cudaStream_t stream;
  uint16_t* bf16;                   // scratch for a rounded GEMM input
  float *dropped, *dx_branch, *du;  // scratch
  const float* lora;                // device parameters
  float* grad;                      // device gradient (backward)
  float scale;

  struct Drop {
    float p = 0;
    uint64_t key = 0;
  };

  void Forward(const uint16_t* w, int64_t out, int64_t in, const float* bias, const LoraSlot& slot,
               const float* x, int64_t n, float* u, float* y, Drop drop) const {
    SPW_CUDA_CHECK(kernels::F32ToBf16(x, n * in, bf16, stream));
    GemmBf16(cublas, false, true, n, out, in, 1.0f, bf16, w, 0.0f, y);
    if (bias != nullptr) SPW_CUDA_CHECK(kernels::AddBias(y, bias, n, out, stream));
    if (!slot.adapted()) return;
    const int64_t r = (slot.b_offset - slot.a_offset) / slot.in;
    const float* in_x = x;
    if (drop.p > 0) {
      SPW_CUDA_CHECK(kernels::train::Dropout(drop.p, drop.key, x, n * in, dropped, stream));
      in_x = dropped;
    }
    Sgemm(cublas, false, true, n, r, in, 1.0f, in_x, lora + slot.a_offset, 0.0f, u);
    Sgemm(cublas, false, true, n, out, r, scale, u, lora + slot.b_offset, 1.0f, y);
  }

  // dx += dy·W and the branch's gradients (dA, dB into grad; its dx through the mask).
  void Backward(const uint16_t* w, int64_t out, int64_t in, const LoraSlot& slot, const float* x,
                const float* u, const float* dy, int64_t n, float* dx, Drop drop) const {
    SPW_CUDA_CHECK(kernels::F32ToBf16(dy, n * out, bf16, stream));
    GemmBf16(cublas, false, false, n, in, out, 1.0f, bf16, w, 1.0f, dx);
    if (!slot.adapted()) return;
    const int64_t r = (slot.b_offset - slot.a_offset) / slot.in;
    const float* in_x = x;
    if (drop.p > 0) {
      SPW_CUDA_CHECK(kernels::train::Dropout(drop.p, drop.key, x, n * in, dropped, stream));
      in_x = dropped;
    }
    const float* a = lora + slot.a_offset;
    const float* b = lora + slot.b_offset;
    // dB += s · dyᵀ u; du = s · dy B; dA += duᵀ x'; dx' += du A.
    Sgemm(cublas, true, false, out, r, n, scale, dy, u, 1.0f, grad + slot.b_offset);
    Sgemm(cublas, false, false, n, r, out, scale, dy, b, 0.0f, du);
    Sgemm(cublas, true, false, r, in, n, 1.0f, du, in_x, 1.0f, grad + slot.a_offset);
    if (drop.p <= 0) {
      Sgemm(cublas, false, false, n, in, r, 1.0f, du, a, 1.0f, dx);
      return;
    }
    Sgemm(cublas, false, false, n, in, r, 1.0f, du, a, 0.0f, dx_branch);
    SPW_CUDA_CHECK(kernels::train::Dropout(drop.p, drop.key, dx_branch, n * in, dx_branch, stream));
    SPW_CUDA_CHECK(kernels::train::Axpy(1.0f, dx_branch, n * in, dx, stream));
  }
};

}  // namespace

bool CudaTrainModel::Advance(Pass& pass) {
  CudaPass& p = static_cast<CudaPass&>(pass);
  SPW_CHECK(p.model_ == this) << "a pass of another CudaTrainModel";
  SPW_CHECK(!p.done()) << "Advance after the pass completed";
  SPW_CUDA_CHECK(cudaSetDevice(options_.ordinal));
  const ModelConfig& c = config_;
  Impl& im = *impl_;
  cudaStream_t st = im.stream;
  const int64_t n = p.n_, h = c.hidden, f = c.ffn_hidden;
  const int64_t qd = c.num_heads * c.head_dim, kd = c.num_kv_heads * c.head_dim;
  const LoraLayout& layout = *p.layout_;
  const LinearOps lin{.cublas = im.cublas,
                      .stream = st,
                      .bf16 = p.bf16_,
                      .dropped = p.dropped_,
                      .dx_branch = p.dx_branch_,
                      .du = p.du_,
                      .lora = p.lora_,
                      .grad = p.grad_,
                      .scale = p.scale_};
  auto drop = [&](int64_t l, LoraModule m) -> LinearOps::Drop {
    if (p.dropout_.p <= 0) return {};
    return {.p = p.dropout_.p, .key = train::LoraDropoutKey(p.dropout_.seed, l, m)};
  };
  auto slot = [&](int64_t l, LoraModule m) -> const LoraSlot& { return layout.slot(l, m); };
  auto u_of = [](CudaPass::Acts& a, LoraModule m) { return a.u[static_cast<int>(m)]; };
  auto copy = [&](float* dst, const float* src, int64_t count) {
    SPW_CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(float), cudaMemcpyDeviceToDevice, st));
  };
  auto zero = [&](float* dst, int64_t count) {
    SPW_CUDA_CHECK(cudaMemsetAsync(dst, 0, count * sizeof(float), st));
  };
  switch (p.phase_) {
    case CudaPass::Phase::kForward: {
      const int64_t l = p.unit_ / 2;
      const Impl::Layer& y = im.layers[l];
      CudaPass::Acts& a = l >= p.keep_from_ ? p.acts_[l] : p.scratch_;
      if (p.unit_ % 2 == 0) {
        // Attention half: x_mid = x + o(attn(rope(q(h1)), rope(k(h1)), v(h1))), h1 = norm(x).
        copy(a.x_in, p.x_, n * h);
        SPW_CUDA_CHECK(
            kernels::train::RmsNormForward(p.x_, y.attn_norm, n, h, c.rms_eps, a.h1, a.inv1, st));
        lin.Forward(y.wq, qd, h, y.bq, slot(l, LoraModule::kQ), a.h1, n, u_of(a, LoraModule::kQ),
                    a.q, drop(l, LoraModule::kQ));
        lin.Forward(y.wk, kd, h, y.bk, slot(l, LoraModule::kK), a.h1, n, u_of(a, LoraModule::kK),
                    a.k, drop(l, LoraModule::kK));
        lin.Forward(y.wv, kd, h, y.bv, slot(l, LoraModule::kV), a.h1, n, u_of(a, LoraModule::kV),
                    a.v, drop(l, LoraModule::kV));
        const float* freq = static_cast<const float*>(im.inv_freq.get());
        SPW_CUDA_CHECK(kernels::train::Rope(a.q, p.positions_, freq, n, c.num_heads, c.head_dim,
                                            im.neox, false, st));
        SPW_CUDA_CHECK(kernels::train::Rope(a.k, p.positions_, freq, n, c.num_kv_heads, c.head_dim,
                                            im.neox, false, st));
        SPW_CUDA_CHECK(kernels::train::AttentionForward(
            a.q, a.k, a.v, p.seq_starts_, p.prob_starts_, p.num_seqs_, p.max_len_, c.num_heads,
            c.num_kv_heads, c.head_dim, a.attn, a.probs, st));
        lin.Forward(y.wo, h, qd, nullptr, slot(l, LoraModule::kO), a.attn, n,
                    u_of(a, LoraModule::kO), p.tmp_, drop(l, LoraModule::kO));
        SPW_CUDA_CHECK(kernels::train::Add(p.x_, p.tmp_, n * h, a.x_mid, st));
      } else {
        // FFN half: x = x_mid + down(silu(gate(h2)) * up(h2)), h2 = norm(x_mid).
        SPW_CUDA_CHECK(
            kernels::train::RmsNormForward(a.x_mid, y.ffn_norm, n, h, c.rms_eps, a.h2, a.inv2, st));
        lin.Forward(y.gate, f, h, nullptr, slot(l, LoraModule::kGate), a.h2, n,
                    u_of(a, LoraModule::kGate), a.gate, drop(l, LoraModule::kGate));
        lin.Forward(y.up, f, h, nullptr, slot(l, LoraModule::kUp), a.h2, n,
                    u_of(a, LoraModule::kUp), a.up, drop(l, LoraModule::kUp));
        SPW_CUDA_CHECK(kernels::train::SwiGluForward(a.gate, a.up, n * f, a.act, st));
        lin.Forward(y.down, h, f, nullptr, slot(l, LoraModule::kDown), a.act, n,
                    u_of(a, LoraModule::kDown), p.tmp_, drop(l, LoraModule::kDown));
        SPW_CUDA_CHECK(kernels::train::Add(a.x_mid, p.tmp_, n * h, p.x_, st));
      }
      if (++p.unit_ < 2 * c.num_layers) break;
      SPW_CUDA_CHECK(kernels::train::RmsNormForward(p.x_, im.output_norm, n, h, c.rms_eps, p.hf_,
                                                    p.invf_, st));
      if (p.grad_ != nullptr) zero(p.dhf_, n * h);
      p.phase_ = p.num_targets_ > 0 ? CudaPass::Phase::kHead : CudaPass::Phase::kDone;
      break;
    }
    case CudaPass::Phase::kHead: {
      // One chunk of target rows: logits, cross-entropy, and d(loss)/d(final norm output).
      const int64_t m = std::min(p.head_rows_, p.num_targets_ - p.chunk_);
      SPW_CUDA_CHECK(kernels::GatherRows(p.hf_, p.target_rows_ + p.chunk_, m, h, p.sel_, st));
      SPW_CUDA_CHECK(kernels::F32ToBf16(p.sel_, m * h, p.bf16_, st));
      GemmBf16(im.cublas, false, true, m, c.vocab_size, h, 1.0f, p.bf16_, im.lm_head, 0.0f,
               p.logits_);
      SPW_CUDA_CHECK(kernels::train::CrossEntropy(p.logits_, p.targets_ + p.chunk_, m, c.vocab_size,
                                                  p.logits_, p.row_loss_, p.row_correct_, st));
      if (p.grad_ != nullptr) {
        SPW_CUDA_CHECK(kernels::F32ToBf16(p.logits_, m * c.vocab_size, p.bf16_, st));
        GemmBf16(im.cublas, false, false, m, h, c.vocab_size, 1.0f, p.bf16_, im.lm_head, 0.0f,
                 p.dsel_);
        SPW_CUDA_CHECK(
            kernels::train::ScatterAddRows(p.dsel_, p.target_rows_ + p.chunk_, m, h, p.dhf_, st));
      }
      std::vector<double> loss(m);
      std::vector<int32_t> correct(m);
      SPW_CUDA_CHECK(cudaMemcpyAsync(loss.data(), p.row_loss_, m * sizeof(double),
                                     cudaMemcpyDeviceToHost, st));
      SPW_CUDA_CHECK(cudaMemcpyAsync(correct.data(), p.row_correct_, m * sizeof(int32_t),
                                     cudaMemcpyDeviceToHost, st));
      SPW_CUDA_CHECK(cudaStreamSynchronize(st));
      for (int64_t i = 0; i < m; ++i) {
        p.loss_.loss += loss[i];
        p.loss_.num_correct += correct[i];
      }
      p.chunk_ += m;
      if (p.chunk_ < p.num_targets_) break;
      if (p.grad_ == nullptr || p.keep_from_ >= c.num_layers) {
        p.phase_ = CudaPass::Phase::kDone;
        break;
      }
      zero(p.dx_, n * h);
      SPW_CUDA_CHECK(
          kernels::train::RmsNormBackward(p.x_, im.output_norm, p.invf_, p.dhf_, n, h, p.dx_, st));
      p.phase_ = CudaPass::Phase::kBackward;
      p.unit_ = 2 * c.num_layers - 1;
      break;
    }
    case CudaPass::Phase::kBackward: {
      const int64_t l = p.unit_ / 2;
      const Impl::Layer& y = im.layers[l];
      CudaPass::Acts& a = p.acts_[l];
      if (p.unit_ % 2 == 1) {
        zero(p.d_act_, n * f);
        lin.Backward(y.down, h, f, slot(l, LoraModule::kDown), a.act, u_of(a, LoraModule::kDown),
                     p.dx_, n, p.d_act_, drop(l, LoraModule::kDown));
        zero(p.d_gate_, n * f);
        zero(p.d_up_, n * f);
        SPW_CUDA_CHECK(
            kernels::train::SwiGluBackward(a.gate, a.up, p.d_act_, n * f, p.d_gate_, p.d_up_, st));
        zero(p.dh_, n * h);
        lin.Backward(y.gate, f, h, slot(l, LoraModule::kGate), a.h2, u_of(a, LoraModule::kGate),
                     p.d_gate_, n, p.dh_, drop(l, LoraModule::kGate));
        lin.Backward(y.up, f, h, slot(l, LoraModule::kUp), a.h2, u_of(a, LoraModule::kUp), p.d_up_,
                     n, p.dh_, drop(l, LoraModule::kUp));
        SPW_CUDA_CHECK(
            kernels::train::RmsNormBackward(a.x_mid, y.ffn_norm, a.inv2, p.dh_, n, h, p.dx_, st));
      } else {
        zero(p.d_attn_, n * qd);
        lin.Backward(y.wo, h, qd, slot(l, LoraModule::kO), a.attn, u_of(a, LoraModule::kO), p.dx_,
                     n, p.d_attn_, drop(l, LoraModule::kO));
        zero(p.dq_, n * qd);
        zero(p.dk_, n * kd);
        zero(p.dv_, n * kd);
        SPW_CUDA_CHECK(kernels::train::AttentionBackward(
            a.q, a.k, a.v, a.probs, p.d_attn_, p.seq_starts_, p.prob_starts_, p.num_seqs_,
            p.max_len_, c.num_heads, c.num_kv_heads, c.head_dim, p.dq_, p.dk_, p.dv_, p.ds_, st));
        const float* freq = static_cast<const float*>(im.inv_freq.get());
        SPW_CUDA_CHECK(kernels::train::Rope(p.dq_, p.positions_, freq, n, c.num_heads, c.head_dim,
                                            im.neox, true, st));
        SPW_CUDA_CHECK(kernels::train::Rope(p.dk_, p.positions_, freq, n, c.num_kv_heads,
                                            c.head_dim, im.neox, true, st));
        zero(p.dh_, n * h);
        lin.Backward(y.wq, qd, h, slot(l, LoraModule::kQ), a.h1, u_of(a, LoraModule::kQ), p.dq_, n,
                     p.dh_, drop(l, LoraModule::kQ));
        lin.Backward(y.wk, kd, h, slot(l, LoraModule::kK), a.h1, u_of(a, LoraModule::kK), p.dk_, n,
                     p.dh_, drop(l, LoraModule::kK));
        lin.Backward(y.wv, kd, h, slot(l, LoraModule::kV), a.h1, u_of(a, LoraModule::kV), p.dv_, n,
                     p.dh_, drop(l, LoraModule::kV));
        SPW_CUDA_CHECK(
            kernels::train::RmsNormBackward(a.x_in, y.attn_norm, a.inv1, p.dh_, n, h, p.dx_, st));
      }
      if (--p.unit_ >= 2 * p.keep_from_) break;
      p.phase_ = CudaPass::Phase::kDone;
      break;
    }
    case CudaPass::Phase::kDone:
      break;
  }
  if (p.done()) {
    if (p.grad_ != nullptr && layout.num_params() > 0) {
      std::vector<float> g(layout.num_params());
      SPW_CUDA_CHECK(
          cudaMemcpyAsync(g.data(), p.grad_, g.size() * sizeof(float), cudaMemcpyDeviceToHost, st));
      SPW_CUDA_CHECK(cudaStreamSynchronize(st));
      for (size_t i = 0; i < g.size(); ++i) p.grad_host_[i] += g[i];
    }
  }
  // A piece is finished work: its wall time is what a waiting request pays.
  SPW_CUDA_CHECK(cudaStreamSynchronize(st));
  if (p.done() && p.arena_.size() > im.spare_arena.size()) im.spare_arena = std::move(p.arena_);
  return p.done();
}

absl::StatusOr<std::vector<float>> CudaTrainModel::LastLogits(std::span<const TokenId> tokens,
                                                              const LoraLayout& layout, float scale,
                                                              const float* lora) {
  const TrainSequence seq{.tokens = tokens, .loss_mask = {}};
  SPW_ASSIGN_OR_RETURN(std::unique_ptr<Pass> pass,
                       Begin({&seq, 1}, layout, scale, lora, nullptr, LoraDropout{}));
  CudaPass& p = static_cast<CudaPass&>(*pass);
  // No targets: the pass ends after the final norm. Its arena may have moved to the spare
  // slot then, which keeps it allocated, so hf_ stays readable until the next Begin.
  while (!Advance(p)) {
  }
  const ModelConfig& c = config_;
  cudaStream_t st = impl_->stream;
  SPW_CUDA_CHECK(kernels::F32ToBf16(p.hf_ + (p.n_ - 1) * c.hidden, c.hidden, p.bf16_, st));
  GemmBf16(impl_->cublas, false, true, 1, c.vocab_size, c.hidden, 1.0f, p.bf16_, impl_->lm_head,
           0.0f, p.logits_);
  std::vector<float> logits(c.vocab_size);
  SPW_CUDA_CHECK(cudaMemcpyAsync(logits.data(), p.logits_, logits.size() * sizeof(float),
                                 cudaMemcpyDeviceToHost, st));
  SPW_CUDA_CHECK(cudaStreamSynchronize(st));
  return logits;
}

}  // namespace spillway::engine::cuda
