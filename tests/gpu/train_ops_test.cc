// Every launcher of kernels/train_ops.h against its CPU twin (engine/train/ops.h in double,
// or the host code of engine/train/train_model.cc) on random inputs of awkward sizes: rows and
// columns that are not multiples of a block (37 rows of 576 and 4099), odd head counts (9
// heads over 3 KV heads), head sizes 64, 80, 128 and 256, three sequences of lengths 1, 17
// and 70 packed in one batch (and 300, 5, 129: rows longer than a block), a vocabulary of
// 49159 and one of 256001. The device runs f32, the twin double on the same f32 inputs.
// Tolerances, per op (|gpu − twin|):
//   Add, Axpy (no FMA: the host's two roundings), ScatterAddRows, Dropout (the host's
//   counter-based mask and f32 scale): bit-exact. CrossEntropy's `correct`: exact (the argmax
//   compares the same f32 values; ties go to the lowest id), and dlogits computed in place
//   equal dlogits computed out of place, bit for bit.
//   RmsNormForward / RmsNormBackward: 1e-5 of the twin's RMS (f32 sums of squares and dots).
//   Rope: 1e-6 absolute on values in [−1, 1] (f32 cos/sin factors of the twin's float angle,
//   positions up to 8k), and the inverse undoes the forward to 1e-6.
//   AttentionForward: probabilities 1e-6 absolute (f32 scores, expf), out 1e-5 absolute on
//   q, k, v in [−1, 1]; every probability past the diagonal written as 0.
//   AttentionBackward: 3e-5 of each gradient's RMS (f32 sums of up to 300 keys or, for dk
//   and dv, 300 query rows times the group's heads, onto gradients that start at ±1); two
//   runs agree bit for bit (no atomics); ds written everywhere, zero past the diagonal.
//   SwiGluForward / SwiGluBackward: 5e-6 of the twin's RMS (the sigmoid in double as the twin,
//   then three or four f32 roundings of values up to 4x the RMS).
//   CrossEntropy: loss 1e-5 absolute (log-sum-exp in double of f32 differences), dlogits 1e-6
//   absolute.
// The errors, measured on a CPU emulation of these kernels (the same f32 operations in the
// same order, without FMA), are 8x (attention backward) to 25x below these bounds.
// Skips without a GPU.
#include "kernels/train_ops.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/train/ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace spillway::engine::testing {
namespace {

namespace dev = ::spillway::kernels::train;
namespace host = ::spillway::engine::train;

// A device array of n T, freed on scope exit; failures are test failures.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(int64_t n) : n_(n) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p_), std::max<int64_t>(n, 1) * sizeof(T)),
              cudaSuccess);
  }
  explicit DeviceArray(const std::vector<T>& v) : DeviceArray(static_cast<int64_t>(v.size())) {
    Upload(v);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(p_); }

  T* get() const { return p_; }
  void Upload(const std::vector<T>& v) {
    ASSERT_EQ(static_cast<int64_t>(v.size()), n_);
    EXPECT_EQ(cudaMemcpy(p_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  // Every byte `byte`: 0xff makes f32 NaNs, so an element a kernel forgets to write shows.
  void Fill(int byte) { EXPECT_EQ(cudaMemset(p_, byte, n_ * sizeof(T)), cudaSuccess); }
  std::vector<T> Download() const {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<T> v(n_);
    EXPECT_EQ(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }

 private:
  int64_t n_;
  T* p_ = nullptr;
};

std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Largest |got − want| and the RMS of `want`; NaN in `got` counts as infinitely far.
struct Err {
  double max_abs = 0, rms = 0;
};
Err Compare(const std::vector<float>& got, const std::vector<double>& want) {
  Err e;
  EXPECT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double d = std::abs(double{got[i]} - want[i]);
    e.max_abs = std::max(e.max_abs, std::isnan(d) ? INFINITY : d);
    e.rms += want[i] * want[i];
  }
  e.rms = std::sqrt(e.rms / std::max<size_t>(want.size(), 1));
  return e;
}

#define EXPECT_CLOSE_REL(got, want, tol)                                                          \
  do {                                                                                            \
    const Err spw_e = Compare((got), (want));                                                     \
    EXPECT_LE(spw_e.max_abs, (tol)*spw_e.rms) << "max " << spw_e.max_abs << " rms " << spw_e.rms; \
  } while (0)
#define EXPECT_CLOSE_ABS(got, want, tol)                        \
  do {                                                          \
    const Err spw_e = Compare((got), (want));                   \
    EXPECT_LE(spw_e.max_abs, (tol)) << "max " << spw_e.max_abs; \
  } while (0)

class TrainOpsTest : public ::testing::Test {
 protected:
  void SetUp() override { SPW_SKIP_WITHOUT_GPU(); }
};

TEST_F(TrainOpsTest, RmsNormForwardAndBackwardMatchTwin) {
  const int64_t rows = 37;
  for (int64_t cols : {576, 4096 + 3}) {
    SCOPED_TRACE("cols " + std::to_string(cols));
    const float eps = 1e-5f;
    const std::vector<float> x = RandomFloats(rows * cols, 1, 3.0f), w = RandomFloats(cols, 2),
                             dy = RandomFloats(rows * cols, 3), dx0 = RandomFloats(rows * cols, 4);
    DeviceArray<float> dx_(x), dw(w), ddy(dy), ddx(dx0), dy_out(rows * cols), dinv(rows);
    dy_out.Fill(0xff);
    dinv.Fill(0xff);
    ASSERT_EQ(dev::RmsNormForward(dx_.get(), dw.get(), rows, cols, eps, dy_out.get(), dinv.get(),
                                  nullptr),
              cudaSuccess);
    std::vector<double> y(rows * cols), inv(rows);
    const std::vector<double> xd = ToDouble(x), wd = ToDouble(w), dyd = ToDouble(dy);
    host::RmsNormForward(xd.data(), wd.data(), rows, cols, double{eps}, y.data(), inv.data());
    const std::vector<float> inv_gpu = dinv.Download();
    EXPECT_CLOSE_REL(dy_out.Download(), y, 1e-5);
    EXPECT_CLOSE_REL(inv_gpu, inv, 1e-5);

    // Backward from the device's inv (what the training pass keeps), adding into dx0.
    ASSERT_EQ(dev::RmsNormBackward(dx_.get(), dw.get(), dinv.get(), ddy.get(), rows, cols,
                                   ddx.get(), nullptr),
              cudaSuccess);
    std::vector<double> dx = ToDouble(dx0);
    const std::vector<double> inv_used = ToDouble(inv_gpu);
    host::RmsNormBackward(xd.data(), wd.data(), inv_used.data(), dyd.data(), rows, cols, dx.data());
    EXPECT_CLOSE_REL(ddx.Download(), dx, 1e-5);
  }
}

TEST_F(TrainOpsTest, RopeMatchesTwinInBothStylesAndDirections) {
  const int64_t rows = 37;
  std::mt19937 rng(5);
  std::vector<int32_t> positions(rows);
  for (int32_t& p : positions) p = static_cast<int32_t>(rng() % 8192);
  DeviceArray<int32_t> dpos(positions);
  for (int64_t head_dim : {64, 128}) {
    for (int64_t heads : {9, 3}) {
      for (RopeStyle style : {RopeStyle::kNormal, RopeStyle::kNeox}) {
        SCOPED_TRACE("head_dim " + std::to_string(head_dim) + " heads " + std::to_string(heads) +
                     (style == RopeStyle::kNeox ? " neox" : " normal"));
        RopeTable table{.style = style};
        for (int64_t i = 0; i < head_dim / 2; ++i) {
          table.inv_freq.push_back(static_cast<float>(std::pow(500000.0, -2.0 * i / head_dim)));
        }
        DeviceArray<float> dfreq(table.inv_freq);
        const std::vector<float> x = RandomFloats(rows * heads * head_dim, 6 + heads + head_dim);
        DeviceArray<float> dx(x);
        // Turns dx on the device and `from` with the twin; returns the device's result after
        // checking it against the twin's.
        auto turn = [&](const std::vector<float>& from, bool inverse) {
          EXPECT_EQ(dev::Rope(dx.get(), dpos.get(), dfreq.get(), rows, heads, head_dim,
                              style == RopeStyle::kNeox, inverse, nullptr),
                    cudaSuccess);
          std::vector<double> want = ToDouble(from);
          host::RopeInPlace(want.data(), rows, heads, head_dim, positions, table, inverse);
          std::vector<float> got = dx.Download();
          EXPECT_CLOSE_ABS(got, want, 1e-6);
          return got;
        };
        // Forward, then the inverse (the backward) of the device's output, and back to the
        // start.
        const std::vector<float> undone = turn(turn(x, false), true);
        EXPECT_CLOSE_ABS(undone, ToDouble(x), 1e-6);
      }
    }
  }
}

// Sequences packed in one batch, with their starts and probability offsets on both sides.
struct Packed {
  std::vector<int64_t> lens;
  int64_t heads, kv_heads, hd;
  std::vector<int32_t> seq_starts{0};
  std::vector<int64_t> prob_starts{0};

  Packed(std::vector<int64_t> l, int64_t h, int64_t kvh, int64_t d)
      : lens(std::move(l)), heads(h), kv_heads(kvh), hd(d) {
    for (int64_t len : lens) {
      seq_starts.push_back(seq_starts.back() + static_cast<int32_t>(len));
      prob_starts.push_back(prob_starts.back() + heads * len * len);
    }
  }
  int64_t rows() const { return seq_starts.back(); }
  int64_t max_len() const { return *std::max_element(lens.begin(), lens.end()); }
  std::string Name() const {
    return "heads " + std::to_string(heads) + "/" + std::to_string(kv_heads) + " hd " +
           std::to_string(hd);
  }
};

// The twin's forward over each packed sequence: out [rows, heads·hd] and the probabilities.
struct HostAttention {
  std::vector<double> out, probs;
};
HostAttention HostForward(const Packed& b, const std::vector<double>& q,
                          const std::vector<double>& k, const std::vector<double>& v) {
  const int64_t qd = b.heads * b.hd, kd = b.kv_heads * b.hd;
  HostAttention h{std::vector<double>(b.rows() * qd), std::vector<double>(b.prob_starts.back())};
  for (size_t s = 0; s < b.lens.size(); ++s) {
    const int64_t start = b.seq_starts[s];
    host::AttentionForward(q.data() + start * qd, k.data() + start * kd, v.data() + start * kd,
                           b.lens[s], b.heads, b.kv_heads, b.hd, h.out.data() + start * qd,
                           h.probs.data() + b.prob_starts[s]);
  }
  return h;
}

std::vector<Packed> AttentionShapes() {
  return {Packed({1, 17, 70}, 9, 3, 64), Packed({1, 17, 70}, 32, 8, 128),
          Packed({70, 1, 17}, 4, 1, 256), Packed({33, 2}, 3, 3, 80),
          Packed({300, 5, 129}, 9, 3, 64)};
}

TEST_F(TrainOpsTest, AttentionForwardMatchesTwinPerSequence) {
  for (const Packed& b : AttentionShapes()) {
    SCOPED_TRACE(b.Name());
    const int64_t qd = b.heads * b.hd, kd = b.kv_heads * b.hd, n = b.rows();
    const std::vector<float> q = RandomFloats(n * qd, 10), k = RandomFloats(n * kd, 11),
                             v = RandomFloats(n * kd, 12);
    DeviceArray<float> dq(q), dk(k), dv(v), dout(n * qd), dprobs(b.prob_starts.back());
    DeviceArray<int32_t> dstarts(b.seq_starts);
    DeviceArray<int64_t> dpstarts(b.prob_starts);
    dout.Fill(0xff);
    dprobs.Fill(0xff);
    // A max_len past the longest sequence is allowed: those rows have nothing to do.
    for (int64_t max_len : {b.max_len(), b.max_len() + 3}) {
      ASSERT_EQ(dev::AttentionForward(dq.get(), dk.get(), dv.get(), dstarts.get(), dpstarts.get(),
                                      static_cast<int64_t>(b.lens.size()), max_len, b.heads,
                                      b.kv_heads, b.hd, dout.get(), dprobs.get(), nullptr),
                cudaSuccess);
    }
    const HostAttention want = HostForward(b, ToDouble(q), ToDouble(k), ToDouble(v));
    EXPECT_CLOSE_ABS(dprobs.Download(), want.probs, 1e-6);  // zeros past the diagonal included
    EXPECT_CLOSE_ABS(dout.Download(), want.out, 1e-5);
  }
}

TEST_F(TrainOpsTest, AttentionBackwardMatchesTwinAndIsDeterministic) {
  for (const Packed& b : AttentionShapes()) {
    SCOPED_TRACE(b.Name());
    const int64_t qd = b.heads * b.hd, kd = b.kv_heads * b.hd, n = b.rows();
    const std::vector<float> q = RandomFloats(n * qd, 20), k = RandomFloats(n * kd, 21),
                             v = RandomFloats(n * kd, 22), dout = RandomFloats(n * qd, 23);
    const std::vector<float> dq0 = RandomFloats(n * qd, 24), dk0 = RandomFloats(n * kd, 25),
                             dv0 = RandomFloats(n * kd, 26);
    // The probabilities both sides start from: the twin's forward, rounded to f32.
    const std::vector<double> qh = ToDouble(q), kh = ToDouble(k), vh = ToDouble(v),
                              douth = ToDouble(dout);
    const std::vector<double> probs_d = HostForward(b, qh, kh, vh).probs;
    const std::vector<float> probs(probs_d.begin(), probs_d.end());
    const std::vector<double> probs_h = ToDouble(probs);

    std::vector<double> dq = ToDouble(dq0), dk = ToDouble(dk0), dv = ToDouble(dv0);
    std::vector<double> scratch(b.max_len());
    for (size_t s = 0; s < b.lens.size(); ++s) {
      const int64_t start = b.seq_starts[s];
      host::AttentionBackward(qh.data() + start * qd, kh.data() + start * kd,
                              vh.data() + start * kd, probs_h.data() + b.prob_starts[s],
                              douth.data() + start * qd, b.lens[s], b.heads, b.kv_heads, b.hd,
                              dq.data() + start * qd, dk.data() + start * kd,
                              dv.data() + start * kd, scratch.data());
    }

    DeviceArray<float> dq_(q), dk_(k), dv_(v), dprobs(probs), ddout(dout);
    DeviceArray<int32_t> dstarts(b.seq_starts);
    DeviceArray<int64_t> dpstarts(b.prob_starts);
    std::vector<float> first[3];
    for (int run = 0; run < 2; ++run) {
      DeviceArray<float> gq(dq0), gk(dk0), gv(dv0), ds(b.prob_starts.back());
      ds.Fill(0xff);
      ASSERT_EQ(dev::AttentionBackward(
                    dq_.get(), dk_.get(), dv_.get(), dprobs.get(), ddout.get(), dstarts.get(),
                    dpstarts.get(), static_cast<int64_t>(b.lens.size()), b.max_len(), b.heads,
                    b.kv_heads, b.hd, gq.get(), gk.get(), gv.get(), ds.get(), nullptr),
                cudaSuccess);
      const std::vector<float> got[3] = {gq.Download(), gk.Download(), gv.Download()};
      if (run == 0) {
        EXPECT_CLOSE_REL(got[0], dq, 3e-5);
        EXPECT_CLOSE_REL(got[1], dk, 3e-5);
        EXPECT_CLOSE_REL(got[2], dv, 3e-5);
        for (int i = 0; i < 3; ++i) first[i] = got[i];
        // ds: every entry written, zero past the diagonal.
        const std::vector<float> dsh = ds.Download();
        int64_t bad = 0;
        for (size_t s = 0; s < b.lens.size(); ++s) {
          const int64_t len = b.lens[s];
          for (int64_t x = 0; x < b.heads * len * len; ++x) {
            const float e = dsh[b.prob_starts[s] + x];
            bad += !std::isfinite(e) || (x % len > x / len % len && e != 0.0f);
          }
        }
        EXPECT_EQ(bad, 0);
      } else {
        for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i], first[i]) << "gradient " << i;
      }
    }
  }
}

TEST_F(TrainOpsTest, SwiGluForwardAndBackwardMatchTwin) {
  const int64_t n = 37 * 1536 + 5;
  const std::vector<float> gate = RandomFloats(n, 30, 8.0f), up = RandomFloats(n, 31),
                           dout = RandomFloats(n, 32), dgate0 = RandomFloats(n, 33),
                           dup0 = RandomFloats(n, 34);
  DeviceArray<float> dgate_in(gate), dup_in(up), ddout(dout), dout_(n), dg(dgate0), du(dup0);
  dout_.Fill(0xff);
  ASSERT_EQ(dev::SwiGluForward(dgate_in.get(), dup_in.get(), n, dout_.get(), nullptr), cudaSuccess);
  ASSERT_EQ(dev::SwiGluBackward(dgate_in.get(), dup_in.get(), ddout.get(), n, dg.get(), du.get(),
                                nullptr),
            cudaSuccess);
  const std::vector<double> g = ToDouble(gate), u = ToDouble(up), d = ToDouble(dout);
  std::vector<double> out(n), dgate = ToDouble(dgate0), dup = ToDouble(dup0);
  host::SwiGluForward(g.data(), u.data(), n, out.data());
  host::SwiGluBackward(g.data(), u.data(), d.data(), n, dgate.data(), dup.data());
  EXPECT_CLOSE_REL(dout_.Download(), out, 5e-6);
  EXPECT_CLOSE_REL(dg.Download(), dgate, 5e-6);
  EXPECT_CLOSE_REL(du.Download(), dup, 5e-6);
}

// TrainModel's head: the first maximum wins (engine/train/train_model.cc ArgmaxLowestId).
int64_t ArgmaxLowestId(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t j = 1; j < n; ++j) {
    if (v[j] > v[best]) best = j;
  }
  return best;
}

TEST_F(TrainOpsTest, CrossEntropyMatchesTwinInPlaceOrNot) {
  struct Shape {
    int64_t rows, vocab;
  };
  for (const Shape& sh : {Shape{37, 49152 + 7}, Shape{3, 256000 + 1}, Shape{5, 7}}) {
    SCOPED_TRACE("vocab " + std::to_string(sh.vocab));
    const int64_t rows = sh.rows, vocab = sh.vocab;
    std::vector<float> logits = RandomFloats(rows * vocab, 40, 6.0f);
    std::mt19937 rng(41);
    std::vector<int32_t> targets(rows);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = logits.data() + r * vocab;
      const int64_t top = ArgmaxLowestId(row, vocab);
      // Every third row: a tie for the maximum at a lower and a higher id than the first one.
      if (r % 3 == 1 && top > 0) row[top / 2] = row[top];
      if (r % 3 == 1 && top + 1 < vocab) row[vocab - 1] = row[top];
      // Half the rows target their argmax (correct = 1); rows of ties target the later copy.
      targets[r] = static_cast<int32_t>(r % 2 == 0   ? ArgmaxLowestId(row, vocab)
                                        : r % 3 == 1 ? top
                                                     : rng() % vocab);
    }
    DeviceArray<float> dlogits(logits), dgrad(rows * vocab);
    DeviceArray<int32_t> dtargets(targets), dcorrect(rows);
    DeviceArray<double> dloss(rows);
    dgrad.Fill(0xff);
    ASSERT_EQ(dev::CrossEntropy(dlogits.get(), dtargets.get(), rows, vocab, dgrad.get(),
                                dloss.get(), dcorrect.get(), nullptr),
              cudaSuccess);
    const std::vector<float> grad = dgrad.Download();
    const std::vector<double> loss = dloss.Download();
    const std::vector<int32_t> correct = dcorrect.Download();

    std::vector<double> want_grad(rows * vocab), want_loss(rows);
    const std::vector<double> ld = ToDouble(logits);
    for (int64_t r = 0; r < rows; ++r) {
      want_loss[r] = host::CrossEntropy(ld.data() + r * vocab, vocab, targets[r], 1.0,
                                        want_grad.data() + r * vocab);
      const int32_t want_correct =
          ArgmaxLowestId(logits.data() + r * vocab, vocab) == targets[r] ? 1 : 0;
      EXPECT_EQ(correct[r], want_correct) << "row " << r;
    }
    const std::vector<float> loss_f(loss.begin(), loss.end());
    EXPECT_CLOSE_ABS(loss_f, want_loss, 1e-5);
    EXPECT_CLOSE_ABS(grad, want_grad, 1e-6);

    // In place (dlogits == logits): the same bits.
    ASSERT_EQ(dev::CrossEntropy(dlogits.get(), dtargets.get(), rows, vocab, dlogits.get(),
                                dloss.get(), dcorrect.get(), nullptr),
              cudaSuccess);
    EXPECT_EQ(dlogits.Download(), grad);
    EXPECT_EQ(dloss.Download(), loss);
    EXPECT_EQ(dcorrect.Download(), correct);
  }
}

TEST_F(TrainOpsTest, CrossEntropyOfATargetOutsideTheVocabularyIsNaN) {
  const int64_t rows = 2, vocab = 7;
  DeviceArray<float> dlogits(RandomFloats(rows * vocab, 45)), dgrad(rows * vocab);
  DeviceArray<int32_t> dtargets(std::vector<int32_t>{-1, 7}), dcorrect(rows);
  DeviceArray<double> dloss(rows);
  ASSERT_EQ(dev::CrossEntropy(dlogits.get(), dtargets.get(), rows, vocab, dgrad.get(), dloss.get(),
                              dcorrect.get(), nullptr),
            cudaSuccess);
  for (double l : dloss.Download()) EXPECT_TRUE(std::isnan(l));
  EXPECT_EQ(dcorrect.Download(), (std::vector<int32_t>{0, 0}));
}

// engine/train/train_model.cc's Mix and ApplyDropout<float>, restated: the device must give
// the host's mask bit for bit (a pass's backward recomputes it from the key).
uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
void HostDropout(float p, uint64_t key, const float* x, int64_t count, float* out) {
  const float keep_scale = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < count; ++i) {
    const double u = static_cast<double>(Mix(key ^ static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53;
    out[i] = u < p ? 0.0f : x[i] * keep_scale;
  }
}

TEST_F(TrainOpsTest, DropoutIsTheHostMaskBitForBit) {
  const int64_t count = 37 * 576 + 11;
  const std::vector<float> x = RandomFloats(count, 50);
  for (float p : {0.05f, 0.1f, 0.5f}) {
    const uint64_t key = Mix(0x5eed ^ Mix(static_cast<uint64_t>(p * 1000)));
    std::vector<float> want(count);
    HostDropout(p, key, x.data(), count, want.data());
    DeviceArray<float> dx(x), dout(count);
    ASSERT_EQ(dev::Dropout(p, key, dx.get(), count, dout.get(), nullptr), cudaSuccess);
    EXPECT_EQ(dout.Download(), want) << "p " << p;
    ASSERT_EQ(dev::Dropout(p, key, dx.get(), count, dx.get(), nullptr), cudaSuccess);  // in place
    EXPECT_EQ(dx.Download(), want) << "p " << p;
    const int64_t dropped = std::count(want.begin(), want.end(), 0.0f);
    EXPECT_NEAR(static_cast<double>(dropped) / count, p, 0.02) << "p " << p;
  }
}

TEST_F(TrainOpsTest, AddAxpyAndScatterAddRowsAreExact) {
  const int64_t n = 37 * 4099;
  const std::vector<float> a = RandomFloats(n, 60), b = RandomFloats(n, 61);
  const float alpha = -0.37f;
  std::vector<float> sum(n), axpy(n);
  for (int64_t i = 0; i < n; ++i) {
    sum[i] = a[i] + b[i];
    const float prod = alpha * b[i];
    axpy[i] = a[i] + prod;
  }
  DeviceArray<float> da(a), db(b), dy(n);
  ASSERT_EQ(dev::Add(da.get(), db.get(), n, dy.get(), nullptr), cudaSuccess);
  EXPECT_EQ(dy.Download(), sum);
  ASSERT_EQ(dev::Axpy(alpha, db.get(), n, da.get(), nullptr), cudaSuccess);
  EXPECT_EQ(da.Download(), axpy);
  ASSERT_EQ(dev::Add(da.get(), db.get(), n, da.get(), nullptr), cudaSuccess);  // y aliases a
  std::vector<float> sum2(n);
  for (int64_t i = 0; i < n; ++i) sum2[i] = axpy[i] + b[i];
  EXPECT_EQ(da.Download(), sum2);

  // 23 distinct rows of a 61-row table, in shuffled order.
  const int64_t table_rows = 61, cols = 576 + 3, num_rows = 23;
  std::vector<int32_t> ids(table_rows);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(62));
  ids.resize(num_rows);
  const std::vector<float> src = RandomFloats(num_rows * cols, 63),
                           table = RandomFloats(table_rows * cols, 64);
  std::vector<float> want = table;
  for (int64_t i = 0; i < num_rows; ++i) {
    for (int64_t c = 0; c < cols; ++c) want[ids[i] * cols + c] += src[i * cols + c];
  }
  DeviceArray<float> dsrc(src), dtable(table);
  DeviceArray<int32_t> dids(ids);
  ASSERT_EQ(dev::ScatterAddRows(dsrc.get(), dids.get(), num_rows, cols, dtable.get(), nullptr),
            cudaSuccess);
  EXPECT_EQ(dtable.Download(), want);
}

TEST_F(TrainOpsTest, EmptyLaunchesSucceedAndBadAttentionShapesAreRefused) {
  EXPECT_EQ(dev::Add(nullptr, nullptr, 0, nullptr, nullptr), cudaSuccess);
  EXPECT_EQ(dev::RmsNormForward(nullptr, nullptr, 0, 576, 1e-5f, nullptr, nullptr, nullptr),
            cudaSuccess);
  EXPECT_EQ(dev::CrossEntropy(nullptr, nullptr, 0, 49152, nullptr, nullptr, nullptr, nullptr),
            cudaSuccess);
  EXPECT_EQ(dev::AttentionForward(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0, 9, 3, 64,
                                  nullptr, nullptr, nullptr),
            cudaSuccess);
  // 9 heads over 4 KV heads, and a head of 512: refused before any launch.
  EXPECT_EQ(dev::AttentionForward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 4, 9, 4, 64,
                                  nullptr, nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(dev::AttentionBackward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1,
                                   4, 8, 8, 512, nullptr, nullptr, nullptr, nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
}  // namespace spillway::engine::testing
