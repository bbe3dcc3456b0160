// The Llama block's operations for training, forward and hand-written backward, on plain
// row-major host arrays of T (float for training, double for the gradient checks in
// tests/engine/train). Conventions: every backward function *adds* into its gradient outputs
// (so residual branches and shared inputs sum without extra buffers); shapes are [rows, cols]
// with row stride cols unless a stride is named. The forward math matches the inference
// backends (engine/cpu/cpu_backend.cc): rmsnorm(x) * w, RoPE by position * inv_freq, causal
// softmax(q·k / sqrt(head_dim)) with GQA, silu(gate) * up.
// Stateless templates; any thread.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>

#include "engine/backend.h"

namespace spillway::engine::train {

// ---- small dense products (LoRA matrices; the double-precision frozen weights) ----

// y[n, m] (+)= x[n, k] · w[m, k]ᵀ
template <typename T>
void GemmNT(const T* x, int64_t n, int64_t k, const T* w, int64_t m, T* y, bool accumulate) {
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + i * k;
    T* yi = y + i * m;
    for (int64_t j = 0; j < m; ++j) {
      const T* wj = w + j * k;
      T acc = 0;
      for (int64_t p = 0; p < k; ++p) acc += xi[p] * wj[p];
      yi[j] = accumulate ? yi[j] + acc : acc;
    }
  }
}

// y[n, m] += x[n, k] · w[k, m]
template <typename T>
void GemmNNAdd(const T* x, int64_t n, int64_t k, const T* w, int64_t m, T* y) {
  for (int64_t i = 0; i < n; ++i) {
    T* yi = y + i * m;
    for (int64_t p = 0; p < k; ++p) {
      const T a = x[i * k + p];
      const T* wp = w + p * m;
      for (int64_t j = 0; j < m; ++j) yi[j] += a * wp[j];
    }
  }
}

// c[p, q] += scale · a[n, p]ᵀ · b[n, q]
template <typename T>
void GemmTNAdd(const T* a, const T* b, int64_t n, int64_t p, int64_t q, T scale, T* c) {
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t r = 0; r < p; ++r) {
      const T s = scale * a[i * p + r];
      const T* bi = b + i * q;
      T* cr = c + r * q;
      for (int64_t j = 0; j < q; ++j) cr[j] += s * bi[j];
    }
  }
}

// ---- RMSNorm: y = x · inv · w, inv = 1 / sqrt(mean(x²) + eps) ----

template <typename T>
void RmsNormForward(const T* x, const T* w, int64_t n, int64_t d, double eps, T* y, T* inv) {
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + i * d;
    T ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += xi[j] * xi[j];
    const T r = static_cast<T>(1.0 / std::sqrt(static_cast<double>(ss) / d + eps));
    inv[i] = r;
    for (int64_t j = 0; j < d; ++j) y[i * d + j] = xi[j] * r * w[j];
  }
}

// dx += inv · (dy∘w) − x · inv³ · mean((dy∘w) · x)
template <typename T>
void RmsNormBackward(const T* x, const T* w, const T* inv, const T* dy, int64_t n, int64_t d,
                     T* dx) {
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + i * d;
    const T* dyi = dy + i * d;
    T dot = 0;
    for (int64_t j = 0; j < d; ++j) dot += dyi[j] * w[j] * xi[j];
    const T r = inv[i];
    const T c = r * r * r * dot / static_cast<T>(d);
    for (int64_t j = 0; j < d; ++j) dx[i * d + j] += r * dyi[j] * w[j] - xi[j] * c;
  }
}

// ---- RoPE, in place; `inverse` turns by −angle, which is also the backward ----

template <typename T>
void RopeInPlace(T* x, int64_t n, int64_t num_heads, int64_t head_dim,
                 std::span<const int32_t> positions, const RopeTable& rope, bool inverse) {
  const int64_t pairs = head_dim / 2;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < pairs; ++i) {
      // The same float angle as the inference backend, then cos/sin in T.
      const float angle = static_cast<float>(static_cast<double>(positions[t]) * rope.inv_freq[i]);
      const T c = static_cast<T>(std::cos(static_cast<double>(angle)));
      const T s = static_cast<T>(inverse ? -std::sin(static_cast<double>(angle))
                                         : std::sin(static_cast<double>(angle)));
      const int64_t a = rope.style == RopeStyle::kNormal ? 2 * i : i;
      const int64_t b = rope.style == RopeStyle::kNormal ? 2 * i + 1 : i + pairs;
      for (int64_t h = 0; h < num_heads; ++h) {
        T* v = x + t * num_heads * head_dim + h * head_dim;
        const T x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
  }
}

// ---- causal GQA attention over one sequence of `len` tokens ----
// q, out: [len, heads·hd]; k, v: [len, kv_heads·hd]; probs: [heads, len, len] (row i holds
// the softmax over keys 0..i; the rest is zero).

template <typename T>
void AttentionForward(const T* q, const T* k, const T* v, int64_t len, int64_t heads,
                      int64_t kv_heads, int64_t hd, T* out, T* probs) {
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(hd)));
  const int64_t qs = heads * hd, ks = kv_heads * hd, group = heads / kv_heads;
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t kh = h / group;
    for (int64_t i = 0; i < len; ++i) {
      T* p = probs + (h * len + i) * len;
      const T* qi = q + i * qs + h * hd;
      T mx = -INFINITY;
      for (int64_t j = 0; j <= i; ++j) {
        const T* kj = k + j * ks + kh * hd;
        T s = 0;
        for (int64_t e = 0; e < hd; ++e) s += qi[e] * kj[e];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      T sum = 0;
      for (int64_t j = 0; j <= i; ++j) {
        p[j] = static_cast<T>(std::exp(static_cast<double>(p[j] - mx)));
        sum += p[j];
      }
      for (int64_t j = 0; j <= i; ++j) p[j] /= sum;
      for (int64_t j = i + 1; j < len; ++j) p[j] = 0;
      T* oi = out + i * qs + h * hd;
      std::fill(oi, oi + hd, T{0});
      for (int64_t j = 0; j <= i; ++j) {
        const T* vj = v + j * ks + kh * hd;
        for (int64_t e = 0; e < hd; ++e) oi[e] += p[j] * vj[e];
      }
    }
  }
}

// dq, dk, dv += the gradients of out given dout. `scratch`: [len] of T.
template <typename T>
void AttentionBackward(const T* q, const T* k, const T* v, const T* probs, const T* dout,
                       int64_t len, int64_t heads, int64_t kv_heads, int64_t hd, T* dq, T* dk,
                       T* dv, T* scratch) {
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(hd)));
  const int64_t qs = heads * hd, ks = kv_heads * hd, group = heads / kv_heads;
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t kh = h / group;
    for (int64_t i = 0; i < len; ++i) {
      const T* p = probs + (h * len + i) * len;
      const T* doi = dout + i * qs + h * hd;
      T* dp = scratch;
      T dot = 0;
      for (int64_t j = 0; j <= i; ++j) {
        const T* vj = v + j * ks + kh * hd;
        T* dvj = dv + j * ks + kh * hd;
        T s = 0;
        for (int64_t e = 0; e < hd; ++e) {
          s += doi[e] * vj[e];
          dvj[e] += p[j] * doi[e];
        }
        dp[j] = s;
        dot += p[j] * s;
      }
      const T* qi = q + i * qs + h * hd;
      T* dqi = dq + i * qs + h * hd;
      for (int64_t j = 0; j <= i; ++j) {
        const T ds = p[j] * (dp[j] - dot) * scale;
        const T* kj = k + j * ks + kh * hd;
        T* dkj = dk + j * ks + kh * hd;
        for (int64_t e = 0; e < hd; ++e) {
          dqi[e] += ds * kj[e];
          dkj[e] += ds * qi[e];
        }
      }
    }
  }
}

// ---- SwiGLU: out = silu(gate) · up ----

template <typename T>
void SwiGluForward(const T* gate, const T* up, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) {
    const T sig = static_cast<T>(1.0 / (1.0 + std::exp(-static_cast<double>(gate[i]))));
    out[i] = gate[i] * sig * up[i];
  }
}

template <typename T>
void SwiGluBackward(const T* gate, const T* up, const T* dout, int64_t n, T* dgate, T* dup) {
  for (int64_t i = 0; i < n; ++i) {
    const T sig = static_cast<T>(1.0 / (1.0 + std::exp(-static_cast<double>(gate[i]))));
    const T silu = gate[i] * sig;
    dup[i] += dout[i] * silu;
    dgate[i] += dout[i] * up[i] * sig * (1 + gate[i] * (1 - sig));
  }
}

// ---- cross-entropy of one row of logits against `target` ----
// Returns −log softmax(logits)[target]; writes dlogits = weight · (softmax − onehot).
template <typename T>
T CrossEntropy(const T* logits, int64_t vocab, int64_t target, T weight, T* dlogits) {
  T mx = logits[0];
  for (int64_t j = 1; j < vocab; ++j) mx = std::max(mx, logits[j]);
  double sum = 0;
  for (int64_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(logits[j] - mx));
  const double lse = static_cast<double>(mx) + std::log(sum);
  for (int64_t j = 0; j < vocab; ++j) {
    dlogits[j] = static_cast<T>(weight * std::exp(static_cast<double>(logits[j]) - lse));
  }
  dlogits[target] -= weight;
  return static_cast<T>(lse - static_cast<double>(logits[target]));
}

// ---- a LoRA branch: y += s · (x Aᵀ) Bᵀ, A: [r, in], B: [out, r] ----

// u = x Aᵀ ([n, r], kept for backward); y += s · u Bᵀ.
template <typename T>
void LoraForward(const T* x, int64_t n, int64_t in, const T* a, const T* b, int64_t r, int64_t out,
                 T s, T* u, T* y, T* scratch /*[n, r]*/) {
  GemmNT(x, n, in, a, r, u, /*accumulate=*/false);
  for (int64_t i = 0; i < n * r; ++i) scratch[i] = s * u[i];
  GemmNT(scratch, n, r, b, out, y, /*accumulate=*/true);
}

// dB += s · dyᵀ u; du = s · dy B; dA += duᵀ x; dx += du A.
template <typename T>
void LoraBackward(const T* x, const T* u, const T* dy, int64_t n, int64_t in, const T* a,
                  const T* b, int64_t r, int64_t out, T s, T* da, T* db, T* dx,
                  T* du /*[n, r] scratch*/) {
  GemmTNAdd(dy, u, n, out, r, s, db);
  std::fill(du, du + n * r, T{0});
  GemmNNAdd(dy, n, out, b, r, du);
  for (int64_t i = 0; i < n * r; ++i) du[i] *= s;
  GemmTNAdd(du, x, n, r, in, T{1}, da);
  GemmNNAdd(du, n, r, a, in, dx);
}

}  // namespace spillway::engine::train
