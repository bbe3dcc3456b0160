// Gradient checks of every backward op in engine/train/ops.h against central finite
// differences, in double precision. Each check takes a random upstream gradient c and the
// scalar L = Σ c·forward(inputs); the analytic backward with dy = c must equal dL/dinput.
#include "engine/train/ops.h"

#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <vector>

namespace spillway::engine::train {
namespace {

using Vec = std::vector<double>;

Vec Random(size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::uniform_real_distribution<double> d(-scale, scale);
  Vec v(n);
  for (double& x : v) x = d(rng);
  return v;
}

double Dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Checks analytic[i] == dL/dx[i] by central differences of `loss` over every element of x.
void ExpectGradient(Vec& x, const std::function<double()>& loss, const Vec& analytic,
                    const char* what) {
  ASSERT_EQ(x.size(), analytic.size());
  constexpr double kH = 1e-6;
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + kH;
    const double up = loss();
    x[i] = saved - kH;
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2 * kH);
    EXPECT_NEAR(analytic[i], numeric, 1e-7 * (1.0 + std::abs(numeric))) << what << " [" << i << "]";
  }
}

TEST(TrainOpsTest, RmsNormBackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(1);
  const int64_t n = 3, d = 8;
  Vec x = Random(n * d, rng), w = Random(d, rng), c = Random(n * d, rng);
  auto loss = [&] {
    Vec y(n * d), inv(n);
    RmsNormForward(x.data(), w.data(), n, d, 1e-5, y.data(), inv.data());
    return Dot(y, c);
  };
  Vec y(n * d), inv(n), dx(n * d, 0.0);
  RmsNormForward(x.data(), w.data(), n, d, 1e-5, y.data(), inv.data());
  RmsNormBackward(x.data(), w.data(), inv.data(), c.data(), n, d, dx.data());
  ExpectGradient(x, loss, dx, "dx");
}

TEST(TrainOpsTest, RopeBackwardMatchesFiniteDifferences) {
  for (RopeStyle style : {RopeStyle::kNormal, RopeStyle::kNeox}) {
    std::mt19937_64 rng(2);
    const int64_t n = 4, heads = 2, hd = 8;
    RopeTable rope{.style = style, .inv_freq = {1.0f, 0.3f, 0.1f, 0.01f}};
    const std::vector<int32_t> pos = {0, 1, 5, 17};
    Vec x = Random(n * heads * hd, rng), c = Random(n * heads * hd, rng);
    auto loss = [&] {
      Vec y = x;
      RopeInPlace(y.data(), n, heads, hd, pos, rope, false);
      return Dot(y, c);
    };
    Vec dx = c;
    RopeInPlace(dx.data(), n, heads, hd, pos, rope, /*inverse=*/true);
    ExpectGradient(x, loss, dx, style == RopeStyle::kNormal ? "normal" : "neox");
  }
}

TEST(TrainOpsTest, AttentionBackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(3);
  const int64_t len = 5, heads = 4, kv = 2, hd = 4;
  Vec q = Random(len * heads * hd, rng), k = Random(len * kv * hd, rng),
      v = Random(len * kv * hd, rng), c = Random(len * heads * hd, rng);
  auto loss = [&] {
    Vec out(len * heads * hd), probs(heads * len * len);
    AttentionForward(q.data(), k.data(), v.data(), len, heads, kv, hd, out.data(), probs.data());
    return Dot(out, c);
  };
  Vec out(len * heads * hd), probs(heads * len * len);
  AttentionForward(q.data(), k.data(), v.data(), len, heads, kv, hd, out.data(), probs.data());
  // Causality: row i's probabilities sum to 1 over keys 0..i and are zero after.
  for (int64_t i = 0; i < len; ++i) {
    double sum = 0;
    for (int64_t j = 0; j < len; ++j) sum += probs[i * len + j];
    EXPECT_NEAR(sum, 1.0, 1e-12);
    if (i + 1 < len) {
      EXPECT_EQ(probs[i * len + i + 1], 0.0);
    }
  }
  Vec dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0), scratch(len);
  AttentionBackward(q.data(), k.data(), v.data(), probs.data(), c.data(), len, heads, kv, hd,
                    dq.data(), dk.data(), dv.data(), scratch.data());
  ExpectGradient(q, loss, dq, "dq");
  ExpectGradient(k, loss, dk, "dk");
  ExpectGradient(v, loss, dv, "dv");
}

TEST(TrainOpsTest, SwiGluBackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(4);
  const int64_t n = 12;
  Vec g = Random(n, rng, 3.0), u = Random(n, rng), c = Random(n, rng);
  auto loss = [&] {
    Vec out(n);
    SwiGluForward(g.data(), u.data(), n, out.data());
    return Dot(out, c);
  };
  Vec dg(n, 0.0), du(n, 0.0);
  SwiGluBackward(g.data(), u.data(), c.data(), n, dg.data(), du.data());
  ExpectGradient(g, loss, dg, "dgate");
  ExpectGradient(u, loss, du, "dup");
}

TEST(TrainOpsTest, CrossEntropyGradientMatchesFiniteDifferences) {
  std::mt19937_64 rng(5);
  const int64_t vocab = 11;
  Vec logits = Random(vocab, rng, 4.0);
  Vec scratch(vocab);
  auto loss = [&] { return CrossEntropy(logits.data(), vocab, 3, 1.0, scratch.data()); };
  Vec d(vocab);
  const double l = CrossEntropy(logits.data(), vocab, 3, 1.0, d.data());
  double lse = 0;
  for (double z : logits) lse += std::exp(z);
  EXPECT_NEAR(l, std::log(lse) - logits[3], 1e-12);
  ExpectGradient(logits, loss, d, "dlogits");
}

TEST(TrainOpsTest, LoraBackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(6);
  const int64_t n = 3, in = 6, out = 5, r = 2;
  const double s = 1.5;
  Vec x = Random(n * in, rng), a = Random(r * in, rng), b = Random(out * r, rng),
      c = Random(n * out, rng);
  auto loss = [&] {
    Vec y(n * out, 0.0), u(n * r), tmp(n * r);
    LoraForward(x.data(), n, in, a.data(), b.data(), r, out, s, u.data(), y.data(), tmp.data());
    return Dot(y, c);
  };
  Vec y(n * out, 0.0), u(n * r), tmp(n * r);
  LoraForward(x.data(), n, in, a.data(), b.data(), r, out, s, u.data(), y.data(), tmp.data());
  Vec da(a.size(), 0.0), db(b.size(), 0.0), dx(x.size(), 0.0), du(n * r);
  LoraBackward(x.data(), u.data(), c.data(), n, in, a.data(), b.data(), r, out, s, da.data(),
               db.data(), dx.data(), du.data());
  ExpectGradient(a, loss, da, "dA");
  ExpectGradient(b, loss, db, "dB");
  ExpectGradient(x, loss, dx, "dx");
}

}  // namespace
}  // namespace spillway::engine::train
