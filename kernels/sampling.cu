// The sampling kernel (sampling.h): one block of kThreads threads per logits row. Every step
// is a pass over the row in global memory (a row of 128256 floats is 0.5 MB and stays in L2):
//
//   stop mask (in place) -> processed copy with bias and penalties (only rows with edits) ->
//   greedy: argmax;  else: max -> top_k threshold (radix select of the k-th largest) ->
//   total weight -> top_p cut (radix select on the cumulative weight in rank order) ->
//   kept weight -> the draw (a block scan in id order) -> logprobs (max, sum, N argmaxes).
//
// NOTE(sampler): weights are expf((logit - max) / T) in f32 like the CPU's std::exp (within
// 2 ulp of it), summed in f64 like the CPU, but in another order (per-thread partial sums, then a
// tree; the radix histograms add with atomics, so in no fixed order). So a draw whose uniform ×
// kept weight lies within rounding of a boundary between two tokens, a top_p cut whose mass lies
// within rounding of top_p, and a min_p threshold within expf's 2 ulp of a weight can fall on the
// other side from the CPU's; everything else is the CPU's arithmetic.
#include <cfloat>
#include <climits>
#include <cmath>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "kernels/common.cuh"
#include "kernels/sampling.h"

namespace spillway::kernels {
namespace {

using engine::SampleRow;
using engine::TokenEdit;

constexpr int kThreads = 1024;
constexpr int kRadixBins = 2048;  // the widest radix digit, 11 bits

// A logit and its token id, ordered by rank: larger logit first, then lower id.
struct Ranked {
  float v;
  int32_t id;
};

__device__ __forceinline__ bool Outranks(const Ranked& a, const Ranked& b) {
  return a.v > b.v || (a.v == b.v && a.id < b.id);
}

struct BetterOp {
  __device__ __forceinline__ Ranked operator()(const Ranked& a, const Ranked& b) const {
    return Outranks(a, b) ? a : b;
  }
};

struct MinOp {
  __device__ __forceinline__ int32_t operator()(int32_t a, int32_t b) const { return min(a, b); }
};
struct MaxOp {
  __device__ __forceinline__ int32_t operator()(int32_t a, int32_t b) const { return max(a, b); }
};

// Float bits mapped so that unsigned order is float order (-0 just below +0).
__device__ __forceinline__ uint32_t OrderedKey(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float KeyToFloat(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) != 0 ? (k & 0x7fffffffu) : ~k);
}

using ReduceRanked = cub::BlockReduce<Ranked, kThreads>;
using ReduceDouble = cub::BlockReduce<double, kThreads>;
using ReduceInt = cub::BlockReduce<int32_t, kThreads>;
using ScanDouble = cub::BlockScan<double, kThreads>;
using ScanInt = cub::BlockScan<int32_t, kThreads>;

struct Shared {
  union {
    typename ReduceRanked::TempStorage ranked;
    typename ReduceDouble::TempStorage dbl;
    typename ReduceInt::TempStorage integer;
    typename ScanDouble::TempStorage scan_dbl;
    typename ScanInt::TempStorage scan_int;
  } cub;
  double hist[kRadixBins];
  Ranked ranked;
  double dbl;
  int32_t integer;
};

// Block-wide reductions whose result every thread gets.
__device__ Ranked AllBest(Ranked v, Shared& s) {
  const Ranked r = ReduceRanked(s.cub.ranked).Reduce(v, BetterOp());
  if (threadIdx.x == 0) s.ranked = r;
  __syncthreads();
  const Ranked out = s.ranked;
  __syncthreads();
  return out;
}
__device__ double AllSum(double v, Shared& s) {
  const double r = ReduceDouble(s.cub.dbl).Sum(v);
  if (threadIdx.x == 0) s.dbl = r;
  __syncthreads();
  const double out = s.dbl;
  __syncthreads();
  return out;
}
template <typename Op>
__device__ int32_t AllInt(int32_t v, Op op, Shared& s) {
  const int32_t r = ReduceInt(s.cub.integer).Reduce(v, op);
  if (threadIdx.x == 0) s.integer = r;
  __syncthreads();
  const int32_t out = s.integer;
  __syncthreads();
  return out;
}

// The best-ranked element of `x` among those ranked strictly below `after` ({INFINITY, -1}
// outranks every element: the best of all).
__device__ Ranked BestBelow(const float* x, int64_t vocab, Ranked after, Shared& s) {
  Ranked best{-INFINITY, INT_MAX};
  for (int64_t t = threadIdx.x; t < vocab; t += kThreads) {
    const Ranked c{x[t], static_cast<int32_t>(t)};
    if (Outranks(after, c) && Outranks(c, best)) best = c;
  }
  return AllBest(best, s);
}

// Radix select in descending key order: the key K of the element at which the running sum of
// amount(t) over the elements in descending key order first reaches `need`; *above gets the
// amount of the elements with keys > K. amount(t) <= 0 leaves t out. Three passes of 11, 11
// and 10 bits: 2048 bins spread a row's values (a few exponents) over enough bins that the
// shared-memory atomics rarely collide.
template <typename KeyFn, typename AmountFn>
__device__ uint32_t RadixSelectDesc(int64_t vocab, double need, KeyFn key_of, AmountFn amount_of,
                                    double* above, Shared& s) {
  constexpr int kShifts[3] = {21, 10, 0};
  constexpr int kBits[3] = {11, 11, 10};
  uint32_t prefix = 0, mask = 0;
  double mass_above = 0.0;
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = kShifts[pass];
    const int bins = 1 << kBits[pass];
    const uint32_t digit_mask = static_cast<uint32_t>(bins - 1);
    for (int i = threadIdx.x; i < bins; i += kThreads) s.hist[i] = 0.0;
    __syncthreads();
    for (int64_t t = threadIdx.x; t < vocab; t += kThreads) {
      const double a = amount_of(t);
      if (a <= 0.0) continue;
      const uint32_t k = key_of(t);
      if ((k & mask) == prefix) atomicAdd(&s.hist[(k >> shift) & digit_mask], a);
    }
    __syncthreads();
    // Thread i holds bins hi = bins-1-2i and hi-1 (descending order = ascending threads). The
    // chosen digit is the highest whose inclusive running sum reaches `need`; none does only by
    // rounding, and then the lowest non-empty bin is taken.
    const int hi = bins - 1 - 2 * static_cast<int>(threadIdx.x);
    const double h_hi = hi >= 0 ? s.hist[hi] : 0.0;
    const double h_lo = hi >= 1 ? s.hist[hi - 1] : 0.0;
    double before = 0.0;
    ScanDouble(s.cub.scan_dbl).ExclusiveSum(h_hi + h_lo, before);
    __syncthreads();
    before += mass_above;
    int32_t claim = -1;
    if (hi >= 0 && before + h_hi >= need) {
      claim = hi;
    } else if (hi >= 1 && before + h_hi + h_lo >= need) {
      claim = hi - 1;
    }
    int32_t digit = AllInt(claim, MaxOp(), s);
    if (digit < 0) {
      const int32_t lowest = hi >= 1 && h_lo > 0.0 ? hi - 1 : (hi >= 0 && h_hi > 0.0 ? hi : bins);
      digit = AllInt(lowest, MinOp(), s);
      if (digit >= bins) digit = 0;
    }
    mass_above += AllSum((hi > digit ? h_hi : 0.0) + (hi - 1 > digit ? h_lo : 0.0), s);
    prefix |= static_cast<uint32_t>(digit) << shift;
    mask |= digit_mask << shift;
  }
  *above = mass_above;
  return prefix;
}

__global__ void __launch_bounds__(kThreads) SampleKernel(SamplingArgs a) {
  __shared__ Shared s;
  const int row = blockIdx.x;
  const int64_t vocab = a.vocab;
  const SampleRow p = a.params[row];
  float* raw = a.logits + static_cast<int64_t>(row) * vocab;

  // Stop mask, in place: the raw logits that logprobs describe include it.
  for (int e = p.edits_begin + threadIdx.x; e < p.edits_end; e += kThreads) {
    if ((a.edits[e].flags & TokenEdit::kMasked) != 0) raw[a.edits[e].token] = -INFINITY;
  }
  __syncthreads();
  const float* proc = raw;
  if (p.edits_end > p.edits_begin) {
    float* out = a.processed + static_cast<int64_t>(row) * vocab;
    for (int64_t t = threadIdx.x; t < vocab; t += kThreads) out[t] = raw[t];
    __syncthreads();
    // Sampler::ApplyLogitBias then ApplyPenalties, token by token (each edit is its own token).
    for (int e = p.edits_begin + threadIdx.x; e < p.edits_end; e += kThreads) {
      const TokenEdit edit = a.edits[e];
      float l = raw[edit.token] + edit.bias;
      const float rep = p.repetition_penalty;
      if ((edit.flags & TokenEdit::kRepeated) != 0 && rep != 1.0f) {
        l = l > 0.0f ? l / rep : l * rep;
      }
      if (edit.count > 0) {
        l -= p.frequency_penalty * static_cast<float>(edit.count);
        l -= p.presence_penalty;
      }
      out[edit.token] = l;
    }
    __syncthreads();
    proc = out;
  }

  const Ranked top = BestBelow(proc, vocab, Ranked{INFINITY, -1}, s);
  int32_t token = -1;
  if (!isfinite(top.v)) {
    token = -1;
  } else if (p.temperature < engine::kGreedyTemperature) {
    token = top.id;
  } else {
    const float max_logit = top.v;
    const float temperature = p.temperature;
    auto key_of = [&](int64_t t) { return OrderedKey(proc[t]); };
    // top_k: keep every token >= the k-th largest logit (ties with it stay).
    float min_logit = -INFINITY;
    if (p.top_k > 0 && p.top_k < vocab) {
      double unused;
      const uint32_t k = RadixSelectDesc(
          vocab, static_cast<double>(p.top_k), key_of, [](int64_t) { return 1.0; }, &unused, s);
      min_logit = KeyToFloat(k);
    }
    auto weight = [&](int64_t t) -> float {
      const float l = proc[t];
      return l >= min_logit ? expf((l - max_logit) / temperature) : 0.0f;
    };
    double total = 0.0;
    for (int64_t t = threadIdx.x; t < vocab; t += kThreads) total += weight(t);
    total = AllSum(total, s);

    // top_p: the smallest rank prefix whose weight is >= top_p × total. Radix select finds the
    // logit of the cut; of the tokens tied at it, the lowest ids stay, as many as the cut needs.
    const bool use_top_p = p.top_p < 1.0f;
    uint32_t cut_key = 0;
    double cut_ties = 0.0;  // tied tokens that stay
    if (use_top_p) {
      const double need = static_cast<double>(p.top_p) * total;
      double above = 0.0;
      cut_key = RadixSelectDesc(
          vocab, need, key_of, [&](int64_t t) { return static_cast<double>(weight(t)); }, &above,
          s);
      const float cut_logit = KeyToFloat(cut_key);
      const float w = cut_logit >= min_logit ? expf((cut_logit - max_logit) / temperature) : 0.0f;
      cut_ties = w > 0.0f ? fmax(1.0, ceil((need - above) / static_cast<double>(w))) : 1.0;
    }
    const float min_weight = p.min_p > 0.0f ? p.min_p : 0.0f;  // max weight is expf(0) = 1
    // Visits the row in id order, a tile of kThreads tokens at a time, with each token's kept
    // weight (0 when a filter drops it); `tile` returns true to stop.
    auto for_each_tile = [&](auto tile) {
      int32_t ties_before = 0;
      for (int64_t base = 0; base < vocab; base += kThreads) {
        const int64_t t = base + threadIdx.x;
        float w = 0.0f;
        int32_t is_tie = 0;
        if (t < vocab) {
          w = weight(t);
          if (use_top_p) {
            const uint32_t k = key_of(t);
            is_tie = k == cut_key ? 1 : 0;
            if (k < cut_key) w = 0.0f;
          }
          if (p.min_p > 0.0f && w < min_weight) w = 0.0f;
        }
        if (use_top_p) {
          int32_t tie_index = 0, tile_ties = 0;
          ScanInt(s.cub.scan_int).ExclusiveSum(is_tie, tie_index, tile_ties);
          __syncthreads();
          if (is_tie != 0 && ties_before + tie_index >= cut_ties) w = 0.0f;
          ties_before += tile_ties;
        }
        if (tile(t, w)) return;
      }
    };
    double kept = 0.0;
    int32_t last_kept = -1;
    for_each_tile([&](int64_t t, float w) {
      kept += w;
      if (w > 0.0f) last_kept = static_cast<int32_t>(t);
      return false;
    });
    kept = AllSum(kept, s);
    last_kept = AllInt(last_kept, MaxOp(), s);

    const double target = p.uniform * kept;
    double running = 0.0;
    int32_t drawn = INT_MAX;
    for_each_tile([&](int64_t t, float w) {
      double inclusive = 0.0, tile_sum = 0.0;
      ScanDouble(s.cub.scan_dbl).InclusiveSum(static_cast<double>(w), inclusive, tile_sum);
      __syncthreads();
      const int32_t hit =
          w > 0.0f && target < running + inclusive ? static_cast<int32_t>(t) : INT_MAX;
      drawn = AllInt(hit, MinOp(), s);
      running += tile_sum;
      return drawn != INT_MAX;
    });
    // Only rounding misses (target within an ulp of kept): the last token that can be drawn.
    token = drawn != INT_MAX ? drawn : last_kept;
  }

  float chosen_logprob = 0.0f;
  if (p.logprobs >= 0) {
    const Ranked raw_top = BestBelow(raw, vocab, Ranked{INFINITY, -1}, s);
    double sum = 0.0;
    for (int64_t t = threadIdx.x; t < vocab; t += kThreads) sum += expf(raw[t] - raw_top.v);
    sum = AllSum(sum, s);
    const double log_normalizer = static_cast<double>(raw_top.v) + log(sum);
    if (token >= 0) {
      chosen_logprob = static_cast<float>(static_cast<double>(raw[token]) - log_normalizer);
    }
    Ranked prev{INFINITY, -1};
    for (int i = 0; i < p.logprobs && i < vocab; ++i) {
      prev = i == 0 ? raw_top : BestBelow(raw, vocab, prev, s);
      if (threadIdx.x == 0) {
        const int64_t at = static_cast<int64_t>(row) * engine::kMaxDeviceTopLogprobs + i;
        a.top_tokens[at] = prev.id;
        a.top_logprobs[at] = static_cast<float>(static_cast<double>(prev.v) - log_normalizer);
      }
    }
  }
  if (threadIdx.x == 0) {
    a.tokens[row] = token;
    a.logprobs[row] = chosen_logprob;
  }
}

}  // namespace

cudaError_t SampleRows(const SamplingArgs& args, cudaStream_t stream) {
  if (args.rows == 0) return cudaSuccess;
  SampleKernel<<<args.rows, kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace spillway::kernels
