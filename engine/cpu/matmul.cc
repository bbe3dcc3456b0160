#include "engine/cpu/matmul.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "engine/cpu/matmul_kernels.h"
#include "engine/cpu/quant_blocks.h"
#include "engine/cpu/quant_rows.h"

namespace spillway::engine::cpu {
namespace {

using internal::Activations;
using internal::KernelSet;
using internal::PackedView;
using internal::TileFn;

struct CpuFeatures {
  bool avx2 = false;    // AVX2 + FMA + F16C, with OS support for YMM state
  bool avx512 = false;  // AVX-512 F/BW/VL/DQ/VNNI, with OS support for ZMM state
};

CpuFeatures DetectCpu() {
  CpuFeatures f;
#if defined(__x86_64__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), f16c = c & (1u << 29);
  if (!osxsave) return f;
  unsigned xcr0_lo, xcr0_hi;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool ymm_state = (xcr0_lo & 0x6) == 0x6;
  const bool zmm_state = (xcr0_lo & 0xE6) == 0xE6;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5);
  const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17);
  const bool avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  const bool avx512vnni = c & (1u << 11);
  f.avx2 = ymm_state && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_state && avx512f && avx512dq && avx512bw && avx512vl && avx512vnni;
#endif
  return f;
}

const CpuFeatures& Cpu() {
  static const CpuFeatures kCpu = DetectCpu();
  return kCpu;
}

MatMulIsa BestIsa() {
  if (MatMulIsaSupported(MatMulIsa::kAvx512)) return MatMulIsa::kAvx512;
  if (MatMulIsaSupported(MatMulIsa::kAvx2)) return MatMulIsa::kAvx2;
  return MatMulIsa::kScalar;
}

std::atomic<int> g_forced_isa{-1};
std::atomic<const KernelSet*> g_forced_set{nullptr};

const KernelSet& KernelsFor(MatMulIsa isa) {
  switch (isa) {
    case MatMulIsa::kAvx512:
      return *internal::Avx512Kernels();
    case MatMulIsa::kAvx2:
      return *internal::Avx2Kernels();
    case MatMulIsa::kScalar:
      break;
  }
  return internal::ScalarKernels();
}

TileFn SelectTile(const KernelSet& k, GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return k.f32;
    case GgmlType::kF16:
      return k.f16;
    case GgmlType::kBF16:
      return k.bf16;
    case GgmlType::kQ4_0:
      return k.q4_0;
    case GgmlType::kQ4_1:
      return k.q4_1;
    case GgmlType::kQ8_0:
      return k.q8_0;
    case GgmlType::kQ4_K:
      return k.q4_k;
    case GgmlType::kQ5_K:
      return k.q5_k;
    case GgmlType::kQ6_K:
      return k.q6_k;
    default:
      return nullptr;
  }
}

// Per-thread buffers for the quantized activations of one call (MatMul runs on one thread at a
// time per pool, but several pools may exist, so the buffers belong to the calling thread).
struct ActivationBuffers {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<float> s;
  std::vector<int32_t> qsum;
  std::vector<int16_t> bsums;
};

constexpr int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Values above which quantizing the activations is worth a ParallelFor of its own.
constexpr int64_t kParallelQuantizeValues = 1 << 15;

Activations QuantizeActivations(const KernelSet& k, GgmlType type, const float* x, int64_t cols,
                                int64_t n_tokens, ThreadPool& pool) {
  // NOTE(kernels): the lambdas below run on pool threads, so they must capture pointers into
  // the caller's buffers, never name the thread_local (which would be the worker's own).
  thread_local ActivationBuffers buf;
  Activations act;
  act.x = x;
  const bool k_quant = BlockElements(type) == kQkK;
  const bool legacy = type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0;
  if (!k_quant && !legacy) return act;
  const int64_t block = k_quant ? kQkK : kQk;
  const int64_t nb = cols / block;
  // NOTE(kernels): rows of q start on 64-byte boundaries so that vector loads never split
  // cache lines more than the weights force them to.
  const int64_t q_stride = k_quant ? RoundUp(cols, 64) : internal::Run32RowBytes(cols);
  const int64_t scale_stride = RoundUp(nb, 16);
  const int64_t bsum_stride = RoundUp(cols / 16, 32);
  buf.q.resize(static_cast<size_t>(n_tokens * q_stride + 64));
  buf.d.resize(static_cast<size_t>(n_tokens * scale_stride));
  int8_t* q = reinterpret_cast<int8_t*>(RoundUp(reinterpret_cast<intptr_t>(buf.q.data()), 64));
  internal::QuantizedActivations& a = act.q;
  a.q = q;
  a.q_stride = q_stride;
  a.d = buf.d.data();
  a.scale_stride = scale_stride;
  std::function<void(int, int64_t, int64_t)> fn;
  if (k_quant) {
    buf.bsums.resize(static_cast<size_t>(n_tokens * bsum_stride));
    a.bsums = buf.bsums.data();
    a.bsum_stride = bsum_stride;
    fn = [&, d = buf.d.data(), bsums = buf.bsums.data()](int, int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        k.quantize256(x + t * cols, cols, q + t * q_stride, d + t * scale_stride,
                      bsums + t * bsum_stride);
      }
    };
  } else {
    buf.s.resize(static_cast<size_t>(n_tokens * scale_stride));
    buf.qsum.resize(static_cast<size_t>(n_tokens * scale_stride));
    a.s = buf.s.data();
    a.qsum = buf.qsum.data();
    fn = [&, d = buf.d.data(), s = buf.s.data(), qsum = buf.qsum.data()](int, int64_t begin,
                                                                         int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        k.quantize32(x + t * cols, cols, q + t * q_stride, d + t * scale_stride,
                     s + t * scale_stride, qsum + t * scale_stride);
      }
    };
  }
  if (n_tokens * cols >= kParallelQuantizeValues) {
    pool.ParallelFor(n_tokens, 1, fn);
  } else {
    fn(0, 0, n_tokens);
  }
  return act;
}

// NOTE(kernels): work split. Kernels compute micro-tiles of up to 4 rows x 4 tokens, loading
// each weight block once per 4 tokens. Up to kTokenBlock tokens, a task is a range of rows
// times all tokens, so each thread streams its own part of the weights once (decode, batched
// decode). Beyond that, tasks are kRowBlock rows x kTokenBlock tokens, rows outer, so a
// thread's consecutive tasks reuse the same weights from L1/L2 while the activations of all
// tokens stay in L2 (prefill).
constexpr int64_t kTokenBlock = 64;
constexpr int64_t kRowBlock = 64;
constexpr int64_t kRowGroup = 4;
// Smallest task, in bytes of weights times tokens, worth handing to another thread.
constexpr int64_t kMinTaskBytes = 16 << 10;

// A per-thread buffer of kPackedAlign-aligned bytes.
uint8_t* PackBuffer(int64_t bytes) {
  thread_local std::vector<uint8_t> buf;
  // Alignment, and the bytes PackedView allows reading past the last row.
  buf.resize(static_cast<size_t>(bytes + 2 * internal::kPackedAlign));
  return reinterpret_cast<uint8_t*>(
      RoundUp(reinterpret_cast<intptr_t>(buf.data()), internal::kPackedAlign));
}

// Runs `tile` on rows [r0, r1) x tokens [t0, t1) of `w`. With `raw` (a WeightMatrix whose type
// packing rearranges; `w` then has no data), packs those rows first, kRowBlock at a time, into
// a buffer of the running thread.
void RunTile(TileFn tile, const PackedView& w, const WeightMatrix* raw, int64_t r0, int64_t r1,
             const Activations& act, int64_t t0, int64_t t1, float* y) {
  if (raw == nullptr) return tile(w, r0, r1, act, t0, t1, y, w.rows);
  for (int64_t c0 = r0; c0 < r1; c0 += kRowBlock) {
    const int64_t c1 = std::min(r1, c0 + kRowBlock);
    PackedView chunk = w;
    uint8_t* data = PackBuffer((c1 - c0) * w.row_stride);
    for (int64_t r = c0; r < c1; ++r) {
      internal::PackRow(raw->type, static_cast<const uint8_t*>(raw->data) + r * raw->row_bytes,
                        raw->cols, data + (r - c0) * w.row_stride);
    }
    chunk.data = data;
    chunk.rows = c1 - c0;
    tile(chunk, 0, c1 - c0, act, t0, t1, y + c0, w.rows);
  }
}

const KernelSet& ActiveKernels() {
  const KernelSet* forced = g_forced_set.load(std::memory_order_relaxed);
  return forced != nullptr ? *forced : KernelsFor(ActiveMatMulIsa());
}

// Runs the tiles of y = x · wᵀ from activations `act` already quantized for w.type.
void RunTiles(const KernelSet& k, const PackedView& w, const WeightMatrix* raw,
              const Activations& act, int64_t n_tokens, float* y, ThreadPool& pool) {
  const TileFn tile = SelectTile(k, w.type);
  SPW_CHECK(tile != nullptr) << "MatMul does not support " << GgmlTypeName(w.type);
  if (n_tokens <= kTokenBlock) {
    const int64_t groups = (w.rows + kRowGroup - 1) / kRowGroup;
    const int64_t group_work_bytes = w.row_stride * kRowGroup * n_tokens;
    const int64_t grain = std::max<int64_t>(1, kMinTaskBytes / group_work_bytes);
    pool.ParallelFor(groups, grain, [&](int, int64_t begin, int64_t end) {
      RunTile(tile, w, raw, begin * kRowGroup, std::min(w.rows, end * kRowGroup), act, 0, n_tokens,
              y);
    });
    return;
  }
  const int64_t row_blocks = (w.rows + kRowBlock - 1) / kRowBlock;
  const int64_t token_blocks = (n_tokens + kTokenBlock - 1) / kTokenBlock;
  pool.ParallelFor(row_blocks * token_blocks, 1, [&](int, int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t rb = task / token_blocks, tb = task % token_blocks;
      RunTile(tile, w, raw, rb * kRowBlock, std::min(w.rows, (rb + 1) * kRowBlock), act,
              tb * kTokenBlock, std::min(n_tokens, (tb + 1) * kTokenBlock), y);
    }
  });
}

void RunMatMul(const PackedView& w, const WeightMatrix* raw, const float* x, int64_t n_tokens,
               float* y, ThreadPool& pool) {
  if (n_tokens <= 0 || w.rows <= 0) return;
  const KernelSet& k = ActiveKernels();
  const Activations act = QuantizeActivations(k, w.type, x, w.cols, n_tokens, pool);
  RunTiles(k, w, raw, act, n_tokens, y, pool);
}

// Which conversion of the activations a weight type's kernels read: none (f32), the 32-value
// blocks of the legacy types, or the 256-value blocks of the K-quants. Weights of one kind read
// the same bits (QuantizeActivations depends only on the kind).
enum class ActivationKind { kF32, kBlocks32, kBlocks256 };

ActivationKind KindOf(GgmlType type) {
  if (BlockElements(type) == kQkK) return ActivationKind::kBlocks256;
  return internal::IsLegacy32(type) ? ActivationKind::kBlocks32 : ActivationKind::kF32;
}

bool Supported(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return true;
    default:
      return false;
  }
}

}  // namespace

bool MatMulIsaSupported(MatMulIsa isa) {
  switch (isa) {
    case MatMulIsa::kScalar:
      return true;
    case MatMulIsa::kAvx2:
      return Cpu().avx2 && internal::Avx2Kernels() != nullptr;
    case MatMulIsa::kAvx512:
      return Cpu().avx512 && internal::Avx512Kernels() != nullptr;
  }
  return false;
}

MatMulIsa ActiveMatMulIsa() {
  const int forced = g_forced_isa.load(std::memory_order_relaxed);
  if (forced >= 0) return static_cast<MatMulIsa>(forced);
  static const MatMulIsa kBest = BestIsa();
  return kBest;
}

const char* MatMulIsaName(MatMulIsa isa) {
  switch (isa) {
    case MatMulIsa::kScalar:
      return "scalar";
    case MatMulIsa::kAvx2:
      return "avx2";
    case MatMulIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

void SetMatMulIsaForTesting(MatMulIsa isa) {
  SPW_CHECK(MatMulIsaSupported(isa)) << MatMulIsaName(isa) << " is not supported here";
  g_forced_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
}

void ResetMatMulIsaForTesting() { g_forced_isa.store(-1, std::memory_order_relaxed); }

void MatMul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  if (n_tokens <= 0 || w.rows <= 0) return;
  SPW_CHECK(w.cols > 0 && w.cols % BlockElements(w.type) == 0)
      << "cols " << w.cols << " is not a multiple of the " << GgmlTypeName(w.type) << " block";
  SPW_CHECK(RowBytes(w.type, w.cols).value_or(-1) <= w.row_bytes)
      << "row_bytes " << w.row_bytes << " is too small for " << w.cols << " values of "
      << GgmlTypeName(w.type);
  SPW_CHECK(Supported(w.type)) << "MatMul does not support " << GgmlTypeName(w.type);
  PackedView view{.type = w.type, .rows = w.rows, .cols = w.cols};
  if (internal::IsLegacy32(w.type)) {
    // Packed a few rows at a time, inside the tasks (RunTile).
    view.row_stride = internal::PackedRowStride(w.type, w.cols);
    RunMatMul(view, &w, x, n_tokens, y, pool);
  } else {
    // The packed layout of the other types is the file's: the kernels read `w` itself.
    view.data = static_cast<const uint8_t*>(w.data);
    view.row_stride = w.row_bytes;
    RunMatMul(view, nullptr, x, n_tokens, y, pool);
  }
}

void MatMul(const PackedWeight& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const PackedView view{.type = w.type(),
                        .rows = w.rows(),
                        .cols = w.cols(),
                        .data = w.data(),
                        .row_stride = w.row_stride()};
  RunMatMul(view, nullptr, x, n_tokens, y, pool);
}

void MatMulShared(std::span<const PackedWeight* const> ws, const float* x, int64_t n_tokens,
                  std::span<float* const> ys, ThreadPool& pool) {
  SPW_CHECK(ws.size() == ys.size()) << ws.size() << " weights, " << ys.size() << " outputs";
  if (ws.empty() || n_tokens <= 0) return;
  const ActivationKind kind = KindOf(ws[0]->type());
  bool same = true;
  for (const PackedWeight* w : ws) {
    same = same && w->cols() == ws[0]->cols() && KindOf(w->type()) == kind;
  }
  if (!same) {
    for (size_t i = 0; i < ws.size(); ++i) MatMul(*ws[i], x, n_tokens, ys[i], pool);
    return;
  }
  // NOTE(kernels): the activations are quantized once, into this thread's buffers, and every
  // weight's tiles read that copy: the same bits as one QuantizeActivations per weight, since
  // the conversion depends only on x and the kind of weight type.
  const KernelSet& k = ActiveKernels();
  const Activations act = QuantizeActivations(k, ws[0]->type(), x, ws[0]->cols(), n_tokens, pool);
  for (size_t i = 0; i < ws.size(); ++i) {
    const PackedWeight& w = *ws[i];
    if (w.rows() <= 0) continue;
    const PackedView view{.type = w.type(),
                          .rows = w.rows(),
                          .cols = w.cols(),
                          .data = w.data(),
                          .row_stride = w.row_stride()};
    RunTiles(k, view, nullptr, act, n_tokens, ys[i], pool);
  }
}

void PackedWeight::Free::operator()(uint8_t* p) const { std::free(p); }

absl::StatusOr<std::unique_ptr<PackedWeight>> PackWeight(const WeightMatrix& w) {
  if (!Supported(w.type)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MatMul does not support %s weights", GgmlTypeName(w.type)));
  }
  if (w.rows < 0 || w.cols <= 0 || w.cols % BlockElements(w.type) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("a %d x %d matrix of %s: cols must be a positive multiple of %d", w.rows,
                        w.cols, GgmlTypeName(w.type), BlockElements(w.type)));
  }
  if (RowBytes(w.type, w.cols).value_or(-1) > w.row_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("row_bytes %d is too small for %d values of %s", w.row_bytes, w.cols,
                        GgmlTypeName(w.type)));
  }
  auto packed = std::unique_ptr<PackedWeight>(new PackedWeight());
  packed->type_ = w.type;
  packed->rows_ = w.rows;
  packed->cols_ = w.cols;
  packed->row_stride_ = internal::PackedRowStride(w.type, w.cols);
  // The rows, and the bytes PackedView allows reading past the last one.
  const int64_t bytes = packed->size_bytes() + internal::kPackedAlign;
  packed->data_.reset(static_cast<uint8_t*>(std::aligned_alloc(internal::kPackedAlign, bytes)));
  if (packed->data_ == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("cannot allocate %d bytes for packed weights", bytes));
  }
  for (int64_t r = 0; r < w.rows; ++r) {
    internal::PackRow(w.type, static_cast<const uint8_t*>(w.data) + r * w.row_bytes, w.cols,
                      packed->data_.get() + r * packed->row_stride_);
  }
  std::memset(packed->data_.get() + packed->size_bytes(), 0, internal::kPackedAlign);
  return packed;
}

void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n) {
  DequantizeRowInto(type, src, dst, n);
}

namespace internal {

void SetKernelSetForTesting(const KernelSet* set) {
  g_forced_set.store(set, std::memory_order_relaxed);
}

int64_t PackedRowStride(GgmlType type, int64_t cols) {
  return RoundUp(RowBytes(type, cols).value(), kPackedAlign);
}

void PackRow(GgmlType type, const uint8_t* src, int64_t cols, uint8_t* dst) {
  const int64_t row_bytes = RowBytes(type, cols).value();
  const int64_t stride = PackedRowStride(type, cols);
  std::memset(dst + row_bytes, 0, static_cast<size_t>(stride - row_bytes));
  if (!IsLegacy32(type)) {
    std::memcpy(dst, src, static_cast<size_t>(row_bytes));
    return;
  }
  const int64_t nb = cols / kQk;
  const int64_t block_bytes = BlockBytes(type);
  const int64_t qs_offset = type == GgmlType::kQ4_1 ? 4 : 2;  // after d (and m)
  const int64_t steps = LegacyQsBytes(type) / 4;
  uint8_t* scales = dst + PackedScaleOffset(type, nb);
  for (int64_t b0 = 0; b0 < nb; b0 += kRunBlocks) {
    const int64_t width = std::min<int64_t>(kRunBlocks, nb - b0);
    uint8_t* run = dst + PackedRunOffset(type, b0);
    for (int64_t j = 0; j < width; ++j) {
      const uint8_t* blk = src + (b0 + j) * block_bytes;
      for (int64_t k = 0; k < steps; ++k) {
        uint8_t* out = run + k * 4 * width + 4 * j;
        std::memcpy(out, blk + qs_offset + 4 * k, 4);
        if (type == GgmlType::kQ8_0) {
          for (int i = 0; i < 4; ++i) out[i] ^= 0x80;
        }
      }
      std::memcpy(scales + 2 * (b0 + j), blk, 2);                                        // d
      if (type == GgmlType::kQ4_1) std::memcpy(scales + 2 * (nb + b0 + j), blk + 2, 2);  // m
    }
  }
}

}  // namespace internal
}  // namespace spillway::engine::cpu
