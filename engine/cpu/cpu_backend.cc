#include "engine/cpu/cpu_backend.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "engine/cpu/lora_matmul.h"
#include "engine/cpu/matmul.h"
#include "engine/cpu/vec_math.h"
#include "kvcache/ids.h"

namespace spillway::engine::cpu {
namespace {

// Most weights one MatMulShared call takes (q/k/v).
constexpr size_t kMaxShared = 4;

// A 2-D weight keeps a view of the file (Embed reads rows of it) and, for MatMul, a copy
// repacked into the kernels' layout (PackWeight); a 1-D one (norm, bias) is converted to f32
// once.
class CpuWeight final : public BackendWeight {
 public:
  CpuWeight(WeightMatrix matrix, std::vector<float> vec, std::unique_ptr<PackedWeight> packed)
      : matrix_(matrix), vector_(std::move(vec)), packed_(std::move(packed)) {}
  int64_t rows() const override { return matrix_.rows; }
  int64_t cols() const override { return matrix_.cols; }
  const WeightMatrix& matrix() const { return matrix_; }
  const float* vec() const { return vector_.data(); }
  // The packed matrix; packs it on the first call if LoadWeight did not.
  const PackedWeight& packed() const {
    std::call_once(pack_once_, [this] {
      if (packed_ != nullptr) return;
      absl::StatusOr<std::unique_ptr<PackedWeight>> p = PackWeight(matrix_);
      SPW_CHECK(p.ok()) << p.status();
      packed_ = *std::move(p);
    });
    return *packed_;
  }

 private:
  WeightMatrix matrix_;
  std::vector<float> vector_;
  // NOTE(kernels3): mutable for the lazy packing of the embedding table (LoadWeight), which
  // only a model with tied embeddings multiplies by.
  mutable std::once_flag pack_once_;
  mutable std::unique_ptr<PackedWeight> packed_;
};

const CpuWeight& AsCpu(const BackendWeight& w) { return static_cast<const CpuWeight&>(w); }

// Rows per ParallelFor grain for the cheap element-wise ops.
constexpr int64_t kRowGrain = 4;

void NormRow(const float* x, const float* w, int64_t n, float eps, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

// o = silu(g) * u for the first multiple of 8 values; returns how many it did.
__attribute__((target("avx2,fma"))) int64_t SwiGluAvx2(const float* g, const float* u, int64_t n,
                                                       float* o) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 silu =
        _mm256_div_ps(x, _mm256_add_ps(one, Exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
    _mm256_storeu_ps(o + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
  }
  return i;
}

}  // namespace

CpuBackend::CpuBackend(int num_threads) : pool_(num_threads) {}

absl::StatusOr<std::unique_ptr<BackendWeight>> CpuBackend::LoadWeight(const WeightTensor& t) {
  if (t.shape.size() == 1) {
    std::vector<float> values(t.shape[0]);
    DequantizeRow(t.type, t.data, values.data(), t.shape[0]);
    WeightMatrix m{.type = GgmlType::kF32, .rows = 1, .cols = t.shape[0]};
    return std::make_unique<CpuWeight>(m, std::move(values), nullptr);
  }
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor %s has %d dimensions; weights have 1 or 2", t.name, t.shape.size()));
  }
  const std::optional<int64_t> row_bytes = RowBytes(t.type, t.shape[0]);
  if (!row_bytes.has_value() || *row_bytes * t.shape[1] != t.nbytes) {
    return absl::InvalidArgumentError("tensor " + t.name + " has an inconsistent size");
  }
  WeightMatrix m{.type = t.type,
                 .rows = t.shape[1],
                 .cols = t.shape[0],
                 .data = t.data,
                 .row_bytes = *row_bytes};
  // NOTE(kernels3): every matrix is packed here, once, except the token embedding table: Embed
  // reads its rows from the file, and only a model with tied embeddings also multiplies by it
  // (as the lm_head), so it is packed on its first MatMul instead of costing its size twice in
  // every model.
  std::unique_ptr<PackedWeight> packed;
  if (t.name != "token_embd.weight") {
    absl::StatusOr<std::unique_ptr<PackedWeight>> p = PackWeight(m);
    if (!p.ok()) {
      return absl::Status(p.status().code(),
                          absl::StrFormat("tensor %s: %s", t.name, p.status().message()));
    }
    packed = *std::move(p);
  }
  return std::make_unique<CpuWeight>(m, std::vector<float>{}, std::move(packed));
}

absl::Status CpuBackend::AllocateKv(const KvLayout& layout) {
  const int64_t per_layer =
      int64_t{layout.num_blocks} * kvcache::kBlockTokens * layout.num_kv_heads * layout.head_dim;
  try {
    k_cache_.assign(layout.num_layers, std::vector<uint16_t>(per_layer));
    v_cache_.assign(layout.num_layers, std::vector<uint16_t>(per_layer));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("cannot allocate a KV cache of %d blocks (%d MiB)", layout.num_blocks,
                        per_layer * 4 * layout.num_layers >> 20));
  }
  kv_layout_ = layout;
  return absl::OkStatus();
}

// A block's slice of one layer's K (or V) is contiguous: [kBlockTokens, num_kv_heads,
// head_dim] f16 at block * that size. ReadKvBlock / WriteKvBlock copy the 2 * num_layers slices.
int64_t CpuBackend::kv_block_bytes() const {
  return 2 * kv_layout_.num_layers * kvcache::kBlockTokens * kv_layout_.num_kv_heads *
         kv_layout_.head_dim * static_cast<int64_t>(sizeof(uint16_t));
}

void CpuBackend::DiscardKvBlocks(std::span<const kvcache::BlockId> blocks) {
  std::vector<kvcache::BlockId> sorted(blocks.begin(), blocks.end());
  std::sort(sorted.begin(), sorted.end());
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t slice = kv_block_bytes() / (2 * kv_layout_.num_layers);
  // NOTE(ftmem): a block's slice of one layer (6 KiB for SmolLM2) is not page-aligned, so a
  // lone block gives back only the whole pages inside it; runs of consecutive blocks (the
  // usual case: a reservation takes the free list in order) give back nearly all of theirs.
  for (size_t i = 0; i < sorted.size();) {
    SPW_CHECK(sorted[i] >= 0 && sorted[i] < kv_layout_.num_blocks) << sorted[i];
    size_t j = i + 1;
    while (j < sorted.size() && sorted[j] == sorted[j - 1] + 1) ++j;
    for (std::vector<std::vector<uint16_t>>* cache : {&k_cache_, &v_cache_}) {
      for (std::vector<uint16_t>& layer : *cache) {
        const auto base = reinterpret_cast<uintptr_t>(layer.data());
        const uintptr_t begin = (base + sorted[i] * slice + page - 1) / page * page;
        const uintptr_t end = (base + (sorted[j - 1] + 1) * slice) / page * page;
        // Advice only: a failure leaves the memory in place, which is still correct.
        if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
      }
    }
    i = j;
  }
}

absl::Status CpuBackend::ReadKvBlock(kvcache::BlockId block, std::span<std::byte> dst) {
  SPW_CHECK(block >= 0 && block < kv_layout_.num_blocks) << block;
  SPW_CHECK(static_cast<int64_t>(dst.size()) == kv_block_bytes()) << dst.size();
  const size_t slice = dst.size() / (2 * kv_layout_.num_layers);
  std::byte* out = dst.data();
  for (int64_t l = 0; l < kv_layout_.num_layers; ++l) {
    for (const auto* cache : {&k_cache_[l], &v_cache_[l]}) {
      std::memcpy(out, reinterpret_cast<const std::byte*>(cache->data()) + block * slice, slice);
      out += slice;
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::WriteKvBlock(kvcache::BlockId block, std::span<const std::byte> src) {
  SPW_CHECK(block >= 0 && block < kv_layout_.num_blocks) << block;
  SPW_CHECK(static_cast<int64_t>(src.size()) == kv_block_bytes()) << src.size();
  const size_t slice = src.size() / (2 * kv_layout_.num_layers);
  const std::byte* in = src.data();
  for (int64_t l = 0; l < kv_layout_.num_layers; ++l) {
    for (auto* cache : {&k_cache_[l], &v_cache_[l]}) {
      std::memcpy(reinterpret_cast<std::byte*>(cache->data()) + block * slice, in, slice);
      in += slice;
    }
  }
  return absl::OkStatus();
}

kvcache::CopyTicket CpuBackend::StartKvBlockRead(kvcache::BlockId block, std::span<std::byte> dst) {
  if (kv_copies_ == nullptr) kv_copies_ = std::make_unique<kvcache::CopyQueue>();
  return kv_copies_->Submit([this, block, dst] { return ReadKvBlock(block, dst); });
}

kvcache::CopyTicket CpuBackend::StartKvBlockWrite(kvcache::BlockId block,
                                                  std::span<const std::byte> src) {
  if (kv_copies_ == nullptr) kv_copies_ = std::make_unique<kvcache::CopyQueue>();
  last_kv_write_ = kv_copies_->Submit([this, block, src] { return WriteKvBlock(block, src); });
  return last_kv_write_;
}

void CpuBackend::PollKvCopies(std::vector<kvcache::CopyDone>& done) {
  if (kv_copies_ != nullptr) kv_copies_->Poll(done);
}

kvcache::CopyDone CpuBackend::WaitKvCopy(kvcache::CopyTicket ticket) {
  SPW_CHECK(kv_copies_ != nullptr) << "WaitKvCopy before any copy";
  return kv_copies_->Wait(ticket);
}

void CpuBackend::BeginForward(const BatchLayout& layout) {
  // A block loaded from the host tier must be in place before the pass reads it. Reads of
  // blocks (spills) need no wait: the tier manager never hands out a block being read.
  if (kv_copies_ != nullptr) kv_copies_->WaitThrough(last_kv_write_);
  layout_ = layout;
  next_scratch_ = 0;
  rope_table_ = nullptr;
}

Activation CpuBackend::Scratch(int64_t rows, int64_t cols) {
  if (next_scratch_ == scratch_.size()) scratch_.emplace_back();
  std::vector<float>& buf = scratch_[next_scratch_++];
  if (static_cast<int64_t>(buf.size()) < rows * cols) buf.resize(rows * cols);
  return {.data = buf.data(), .rows = rows, .cols = cols};
}

void CpuBackend::Embed(const BackendWeight& table, Activation out) {
  const WeightMatrix& m = AsCpu(table).matrix();
  SPW_CHECK(out.cols == m.cols && out.rows == static_cast<int64_t>(layout_.tokens.size()));
  for (int64_t t = 0; t < out.rows; ++t) {
    const auto* row = static_cast<const uint8_t*>(m.data) + layout_.tokens[t] * m.row_bytes;
    DequantizeRow(m.type, row, out.data + t * out.cols, m.cols);
  }
}

void CpuBackend::RmsNorm(Activation x, const BackendWeight& w, float eps, Activation out) {
  const float* wv = AsCpu(w).vec();
  pool_.ParallelFor(x.rows, kRowGrain, [&](int, int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      NormRow(x.data + r * x.cols, wv, x.cols, eps, out.data + r * out.cols);
  });
}

void CpuBackend::AddRmsNorm(Activation residual, Activation x, const BackendWeight& w, float eps,
                            Activation out) {
  const float* wv = AsCpu(w).vec();
  pool_.ParallelFor(x.rows, kRowGrain, [&](int, int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* res = residual.data + r * residual.cols;
      const float* add = x.data + r * x.cols;
      for (int64_t i = 0; i < x.cols; ++i) res[i] += add[i];
      NormRow(res, wv, x.cols, eps, out.data + r * out.cols);
    }
  });
}

void CpuBackend::MatMul(const BackendWeight& w, Activation x, Activation y) {
  const PackedWeight& m = AsCpu(w).packed();
  SPW_CHECK(x.cols == m.cols() && y.cols == m.rows() && x.rows == y.rows)
      << x.cols << " " << m.cols() << " " << y.cols << " " << m.rows();
  cpu::MatMul(m, x.data, x.rows, y.data, pool_);
}

void CpuBackend::MatMulShared(Activation x, std::span<const BackendWeight* const> ws,
                              std::span<const Activation> ys) {
  SPW_CHECK(ws.size() == ys.size() && ws.size() <= kMaxShared) << ws.size() << " " << ys.size();
  std::array<const PackedWeight*, kMaxShared> packed;
  std::array<float*, kMaxShared> outs;
  for (size_t i = 0; i < ws.size(); ++i) {
    packed[i] = &AsCpu(*ws[i]).packed();
    SPW_CHECK(x.cols == packed[i]->cols() && ys[i].cols == packed[i]->rows() &&
              x.rows == ys[i].rows)
        << x.cols << " " << packed[i]->cols() << " " << ys[i].cols << " " << packed[i]->rows();
    outs[i] = ys[i].data;
  }
  cpu::MatMulShared(std::span(packed.data(), ws.size()), x.data, x.rows,
                    std::span(outs.data(), ws.size()), pool_);
}

// NOTE(lora): one pair of small matmuls per segment (a run of rows with one adapter), on
// the packed f32 A and B; rows of other adapters are never touched.
void CpuBackend::AddLora(Activation x, std::span<const LoraRows> segments, Activation y) {
  int64_t total_rows = 0, max_rank = 0;
  for (const LoraRows& s : segments) {
    const PackedWeight& a = AsCpu(*s.a).packed();
    const PackedWeight& b = AsCpu(*s.b).packed();
    SPW_CHECK(a.cols() == x.cols && b.rows() == y.cols && b.cols() == a.rows() && 0 <= s.begin &&
              s.begin <= s.end && s.end <= x.rows && x.rows == y.rows);
    // BackendLoraAdapter loads A and B as F32 (engine/lora/backend_adapter.cc).
    SPW_CHECK(a.type() == GgmlType::kF32 && b.type() == GgmlType::kF32)
        << "LoRA matrices must be F32";
    total_rows += s.end - s.begin;
    max_rank = std::max(max_rank, a.rows());
  }
  // NOTE(lora_perf): a decode step's segments hold a few rows each, and the low-rank product is
  // a few thousand FLOPs per row; one MatMul dispatch per segment and factor cost more than the
  // arithmetic. So one ParallelFor covers every row of every segment, each row done whole
  // (x·aᵀ then u·bᵀ) by LoraAddRow on the f32 rows in place.
  const int64_t u_stride = (max_rank + 15) / 16 * 16;
  if (static_cast<int64_t>(lora_u_.size()) < u_stride * pool_.num_threads()) {
    lora_u_.resize(u_stride * pool_.num_threads());
  }
  pool_.ParallelFor(total_rows, 1, [&](int thread, int64_t begin, int64_t end) {
    float* u = lora_u_.data() + thread * u_stride;
    // Find the segment holding flattened row `begin`, then walk forward.
    size_t seg = 0;
    int64_t seg_start = 0;  // flattened index of segments[seg]'s first row
    while (begin >= seg_start + (segments[seg].end - segments[seg].begin)) {
      seg_start += segments[seg].end - segments[seg].begin;
      ++seg;
    }
    for (int64_t i = begin; i < end; ++i) {
      while (i >= seg_start + (segments[seg].end - segments[seg].begin)) {
        seg_start += segments[seg].end - segments[seg].begin;
        ++seg;
      }
      const LoraRows& s = segments[seg];
      const PackedWeight& a = AsCpu(*s.a).packed();
      const PackedWeight& b = AsCpu(*s.b).packed();
      const LoraMatrixF32 av{.data = reinterpret_cast<const float*>(a.data()),
                             .rows = a.rows(),
                             .cols = a.cols(),
                             .stride = a.row_stride() / static_cast<int64_t>(sizeof(float))};
      const LoraMatrixF32 bv{.data = reinterpret_cast<const float*>(b.data()),
                             .rows = b.rows(),
                             .cols = b.cols(),
                             .stride = b.row_stride() / static_cast<int64_t>(sizeof(float))};
      const int64_t row = s.begin + (i - seg_start);
      LoraAddRow(x.data + row * x.cols, av, bv, s.scale, u, y.data + row * y.cols);
    }
  });
}

void CpuBackend::AddBias(Activation y, const BackendWeight& bias) {
  const float* b = AsCpu(bias).vec();
  for (int64_t r = 0; r < y.rows; ++r) {
    for (int64_t i = 0; i < y.cols; ++i) y.data[r * y.cols + i] += b[i];
  }
}

void CpuBackend::Rope(Activation x, int64_t num_heads, const RopeTable& rope) {
  const int64_t d = x.cols / num_heads;
  const int64_t pairs = static_cast<int64_t>(rope.inv_freq.size());
  SPW_CHECK(pairs * 2 == d) << pairs << " " << d;
  SPW_CHECK(x.rows == static_cast<int64_t>(layout_.positions.size()));
  // Every layer rotates q and k by the same angles: compute them once per forward pass.
  if (rope_table_ != &rope) {
    rope_table_ = &rope;
    rope_cos_.resize(x.rows * pairs);
    rope_sin_.resize(x.rows * pairs);
    for (int64_t t = 0; t < x.rows; ++t) {
      const double pos = layout_.positions[t];
      for (int64_t i = 0; i < pairs; ++i) {
        const float angle = static_cast<float>(pos * rope.inv_freq[i]);
        rope_cos_[t * pairs + i] = std::cos(angle);
        rope_sin_[t * pairs + i] = std::sin(angle);
      }
    }
  }
  pool_.ParallelFor(x.rows, kRowGrain, [&](int, int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* cos_v = rope_cos_.data() + t * pairs;
      const float* sin_v = rope_sin_.data() + t * pairs;
      for (int64_t h = 0; h < num_heads; ++h) {
        float* v = x.data + t * x.cols + h * d;
        for (int64_t i = 0; i < pairs; ++i) {
          const int64_t a = rope.style == RopeStyle::kNormal ? 2 * i : i;
          const int64_t c = rope.style == RopeStyle::kNormal ? 2 * i + 1 : i + pairs;
          const float x0 = v[a], x1 = v[c];
          v[a] = x0 * cos_v[i] - x1 * sin_v[i];
          v[c] = x0 * sin_v[i] + x1 * cos_v[i];
        }
      }
    }
  });
}

void CpuBackend::SwiGlu(Activation gate, Activation up, Activation out) {
  const bool avx2 = HasAvx2Fma();
  pool_.ParallelFor(gate.rows, kRowGrain, [&](int, int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* g = gate.data + r * gate.cols;
      const float* u = up.data + r * up.cols;
      float* o = out.data + r * out.cols;
      int64_t i = avx2 ? SwiGluAvx2(g, u, gate.cols, o) : 0;
      for (; i < gate.cols; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  });
}

void CpuBackend::Attention(int64_t layer, Activation q, Activation k, Activation v,
                           int64_t num_heads, Activation out) {
  KvLayerView cache{.k = k_cache_[layer].data(),
                    .v = v_cache_[layer].data(),
                    .num_kv_heads = kv_layout_.num_kv_heads,
                    .head_dim = kv_layout_.head_dim};
  WriteKv(layout_, k.data, v.data, cache);
  PagedAttention(layout_, q.data, num_heads, cache, out.data, pool_, attention_scratch_);
}

void CpuBackend::GatherRows(Activation x, std::span<const int32_t> rows, Activation out) {
  for (size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(out.data + i * out.cols, x.data + rows[i] * x.cols, x.cols * sizeof(float));
  }
}

void CpuBackend::CopyToHost(Activation x, float* dst) {
  std::memcpy(dst, x.data, x.rows * x.cols * sizeof(float));
}

}  // namespace spillway::engine::cpu
