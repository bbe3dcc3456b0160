// DequantizeRow / QuantizeRow against (a) references written here from the block formats and
// (b) goldens made by the `gguf` Python package (tests/golden/quant/make_quant_goldens.py,
// which writes quant_goldens.json).
#include "engine/cpu/quant_rows.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/escaping.h"
#include "common/string_views.h"
#include "engine/cpu/fp16.h"
#include "engine/cpu/matmul.h"
#include "tests/golden_json.h"

namespace spillway::engine::cpu {
namespace {

// f16 -> f32 straight from the IEEE 754 definition.
double HalfValue(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  const double s = sign ? -1.0 : 1.0;
  if (exp == 0) return s * std::ldexp(mant, -24);
  if (exp == 31) return mant ? NAN : s * INFINITY;
  return s * std::ldexp(1024 + mant, exp - 25);
}

void PutHalf(uint8_t* p, float v) {
  const uint16_t h = F32ToF16(v);
  std::memcpy(p, &h, 2);
}

float GetHalf(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return static_cast<float>(HalfValue(h));
}

TEST(Fp16, F16ToF32IsExactForEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double want = HalfValue(static_cast<uint16_t>(h));
    const float got = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << "half bits " << h;
    }
  }
}

TEST(Fp16, F32ToF16RoundsToNearestEven) {
  for (uint32_t h = 0; h < 0x7C00; ++h) {  // every finite non-negative half
    const float v = F16ToF32(static_cast<uint16_t>(h));
    ASSERT_EQ(F32ToF16(v), h);
    ASSERT_EQ(F32ToF16(-v), h | 0x8000);
    if (h + 1 < 0x7C00) {
      // The midpoint to the next half rounds to the even one of the two.
      const double mid =
          (HalfValue(static_cast<uint16_t>(h)) + HalfValue(static_cast<uint16_t>(h + 1))) / 2;
      const uint16_t even = (h & 1) ? h + 1 : h;
      ASSERT_EQ(F32ToF16(static_cast<float>(mid)), even) << h;
    }
  }
  EXPECT_EQ(F32ToF16(1e6f), 0x7C00);      // overflow -> inf
  EXPECT_EQ(F32ToF16(65519.0f), 0x7BFF);  // rounds down to max half
  EXPECT_EQ(F32ToF16(65520.0f), 0x7C00);  // rounds up to inf
  EXPECT_EQ(F32ToF16(1e-9f), 0);          // underflow -> 0
  EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(NAN))));
}

TEST(Fp16, Bf16RoundsToNearestEven) {
  EXPECT_EQ(Bf16ToF32(0x3F80), 1.0f);
  EXPECT_EQ(F32ToBf16(1.0f), 0x3F80);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(F32ToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even.
  EXPECT_EQ(F32ToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_EQ(F32ToBf16(-2.5f), 0xC020);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(NAN))));
  for (uint32_t b = 0; b < 0x7F80; b += 7) EXPECT_EQ(F32ToBf16(Bf16ToF32(b)), b);
}

// ---- Hand-built blocks against references written from the format descriptions. ----

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Value v of a Q4_0/Q4_1 block: low nibbles are values 0-15, high nibbles 16-31.
int Nibble32(const uint8_t* qs, int v) { return (qs[v % 16] >> (4 * (v / 16))) & 15; }

// The 6-bit scale (what == 0) or min (what == 1) of sub-block j of a Q4_K/Q5_K block, from
// the layout: bytes 0-3 hold scales 0-3 (low 6 bits), bytes 4-7 mins 0-3 (low 6 bits); bytes
// 8-11 hold the low 4 bits of scales 4-7 (low nibble) and mins 4-7 (high nibble); the top 2
// bits of bytes 0-3 / 4-7 are the high bits of scales 4-7 / mins 4-7.
int K4Scale(const uint8_t* s, int j, int what) {
  if (j < 4) return s[j + 4 * what] & 63;
  const int low = (s[j + 4] >> (4 * what)) & 15;
  const int high = s[j - 4 + 4 * what] >> 6;
  return low | (high << 4);
}

std::vector<float> Dequantize(GgmlType type, const std::vector<uint8_t>& data, int64_t n) {
  std::vector<float> out(n);
  DequantizeRow(type, data.data(), out.data(), n);
  return out;
}

TEST(DequantizeRow, Q4_0MatchesFormat) {
  auto data = RandomBytes(3 * 18, 1);
  for (int b = 0; b < 3; ++b) PutHalf(&data[b * 18], 0.5f + b);
  const auto got = Dequantize(GgmlType::kQ4_0, data, 96);
  for (int v = 0; v < 96; ++v) {
    const uint8_t* blk = &data[(v / 32) * 18];
    EXPECT_EQ(got[v], GetHalf(blk) * (Nibble32(blk + 2, v % 32) - 8)) << v;
  }
}

TEST(DequantizeRow, Q4_1MatchesFormat) {
  auto data = RandomBytes(3 * 20, 2);
  for (int b = 0; b < 3; ++b) {
    PutHalf(&data[b * 20], 0.25f * (b + 1));
    PutHalf(&data[b * 20 + 2], -1.5f + b);
  }
  const auto got = Dequantize(GgmlType::kQ4_1, data, 96);
  for (int v = 0; v < 96; ++v) {
    const uint8_t* blk = &data[(v / 32) * 20];
    EXPECT_FLOAT_EQ(got[v], GetHalf(blk) * Nibble32(blk + 4, v % 32) + GetHalf(blk + 2)) << v;
  }
}

TEST(DequantizeRow, Q8_0MatchesFormat) {
  auto data = RandomBytes(2 * 34, 3);
  for (int b = 0; b < 2; ++b) PutHalf(&data[b * 34], 0.125f * (b + 1));
  const auto got = Dequantize(GgmlType::kQ8_0, data, 64);
  for (int v = 0; v < 64; ++v) {
    const uint8_t* blk = &data[(v / 32) * 34];
    EXPECT_EQ(got[v], GetHalf(blk) * static_cast<int8_t>(blk[2 + v % 32])) << v;
  }
}

TEST(DequantizeRow, Q4_KMatchesFormat) {
  auto data = RandomBytes(2 * 144, 4);
  for (int b = 0; b < 2; ++b) {
    PutHalf(&data[b * 144], 0.01f * (b + 1));
    PutHalf(&data[b * 144 + 2], 0.003f * (b + 1));
  }
  const auto got = Dequantize(GgmlType::kQ4_K, data, 512);
  for (int v = 0; v < 512; ++v) {
    const uint8_t* blk = &data[(v / 256) * 144];
    const int i = v % 256, j = i / 32;
    // Values 64k..64k+31 are the low nibbles of qs[32k..32k+31], the next 32 the high ones.
    const int q = (blk[16 + 32 * (j / 2) + i % 32] >> (4 * (j % 2))) & 15;
    const float want =
        GetHalf(blk) * K4Scale(blk + 4, j, 0) * q - GetHalf(blk + 2) * K4Scale(blk + 4, j, 1);
    EXPECT_NEAR(got[v], want, 1e-6f * (1 + std::fabs(want))) << v;
  }
}

TEST(DequantizeRow, Q5_KMatchesFormat) {
  auto data = RandomBytes(2 * 176, 5);
  for (int b = 0; b < 2; ++b) {
    PutHalf(&data[b * 176], 0.02f * (b + 1));
    PutHalf(&data[b * 176 + 2], 0.004f * (b + 1));
  }
  const auto got = Dequantize(GgmlType::kQ5_K, data, 512);
  for (int v = 0; v < 512; ++v) {
    const uint8_t* blk = &data[(v / 256) * 176];
    const int i = v % 256, j = i / 32, l = i % 32;
    const uint8_t* qh = blk + 16;
    const uint8_t* qs = blk + 48;
    // Bit j of qh[l] is the fifth bit of value 32j + l.
    const int q = ((qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15) | (((qh[l] >> j) & 1) << 4);
    const float want =
        GetHalf(blk) * K4Scale(blk + 4, j, 0) * q - GetHalf(blk + 2) * K4Scale(blk + 4, j, 1);
    EXPECT_NEAR(got[v], want, 1e-6f * (1 + std::fabs(want))) << v;
  }
}

TEST(DequantizeRow, Q6_KMatchesFormat) {
  auto data = RandomBytes(2 * 210, 6);
  for (int b = 0; b < 2; ++b) PutHalf(&data[b * 210 + 208], 0.01f * (b + 1));
  const auto got = Dequantize(GgmlType::kQ6_K, data, 512);
  for (int v = 0; v < 512; ++v) {
    const uint8_t* blk = &data[(v / 256) * 210];
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
    // Each half of 128 values: 64 ql bytes, 32 qh bytes. Quarter k (32 values, index l)
    // takes nibble k / 2 of ql[l + 32 (k % 2)] and bits 2k..2k+1 of qh[l]; scale per 16 values.
    const int i = v % 256, n = i / 128, k = (i % 128) / 32, l = i % 32;
    const int low = (ql[64 * n + l + 32 * (k % 2)] >> (4 * (k / 2))) & 15;
    const int high = (qh[32 * n + l] >> (2 * k)) & 3;
    const float want = GetHalf(blk + 208) * sc[i / 16] * ((low | (high << 4)) - 32);
    EXPECT_NEAR(got[v], want, 1e-6f * (1 + std::fabs(want))) << v;
  }
}

TEST(DequantizeRow, FloatTypes) {
  const std::vector<float> x = {1.0f, -2.5f, 0.333f, 65504.0f};
  std::vector<uint16_t> h(4), b(4);
  QuantizeRow(GgmlType::kF16, x.data(), h.data(), 4);
  QuantizeRow(GgmlType::kBF16, x.data(), b.data(), 4);
  std::vector<float> out(4);
  DequantizeRow(GgmlType::kF16, h.data(), out.data(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], static_cast<float>(HalfValue(h[i])));
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[3], 65504.0f);
  DequantizeRow(GgmlType::kBF16, b.data(), out.data(), 4);
  EXPECT_EQ(out[1], -2.5f);
  EXPECT_NEAR(out[2], 0.333f, 0.002f);
  DequantizeRow(GgmlType::kF32, x.data(), out.data(), 4);
  EXPECT_EQ(out, x);
}

// ---- Goldens from gguf-py. ----

struct GoldenRecord {
  GgmlType type;
  int64_t n = 0;
  std::vector<float> input;  // empty for K-quants
  std::vector<uint8_t> blocks;
  std::vector<float> dequantized;
};

std::vector<float> Floats(const boost::json::value& v) {
  std::vector<float> out;
  for (double d : testing::Doubles(v)) out.push_back(static_cast<float>(d));
  return out;
}

std::vector<GoldenRecord> ReadGoldens() {
  const boost::json::value doc = testing::ReadJsonFile("tests/golden/quant/quant_goldens.json");
  std::vector<GoldenRecord> out;
  for (const boost::json::value& v : doc.at("records").as_array()) {
    const boost::json::object& o = v.as_object();
    GoldenRecord r;
    r.type = static_cast<GgmlType>(o.at("type").as_int64());
    r.n = o.at("n").as_int64();
    if (!o.at("input").is_null()) r.input = Floats(o.at("input"));
    // HexStringToBytes does not check its digits: a bad one changes the bytes, which the
    // tests' size and value checks then refuse.
    const std::string bytes = absl::HexStringToBytes(AbslSv(o.at("blocks_hex").as_string()));
    r.blocks.assign(bytes.begin(), bytes.end());
    r.dequantized = Floats(o.at("dequantized"));
    EXPECT_EQ(static_cast<int64_t>(r.dequantized.size()), r.n);
    EXPECT_TRUE(r.input.empty() || static_cast<int64_t>(r.input.size()) == r.n);
    out.push_back(std::move(r));
  }
  return out;
}

TEST(DequantizeRow, MatchesGgufPythonGoldens) {
  const auto goldens = ReadGoldens();
  ASSERT_EQ(goldens.size(), 6u);
  for (const GoldenRecord& g : goldens) {
    SCOPED_TRACE(GgmlTypeName(g.type));
    ASSERT_EQ(static_cast<int64_t>(g.blocks.size()), RowBytes(g.type, g.n).value());
    const auto got = Dequantize(g.type, g.blocks, g.n);
    for (int64_t i = 0; i < g.n; ++i) {
      ASSERT_NEAR(got[i], g.dequantized[i], 1e-6f * (1 + std::fabs(g.dequantized[i]))) << i;
    }
  }
}

TEST(QuantizeRow, MatchesGgufPythonGoldens) {
  int checked = 0;
  for (const GoldenRecord& g : ReadGoldens()) {
    if (g.input.empty()) continue;
    SCOPED_TRACE(GgmlTypeName(g.type));
    std::vector<uint8_t> mine(g.blocks.size());
    QuantizeRow(g.type, g.input.data(), mine.data(), g.n);
    EXPECT_EQ(mine, g.blocks);
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

TEST(QuantizeRow, RoundTripErrorIsWithinHalfAStep) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(256);
  for (float& v : x) v = normal(rng);
  for (GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    SCOPED_TRACE(GgmlTypeName(type));
    std::vector<uint8_t> q(RowBytes(type, 256).value());
    QuantizeRow(type, x.data(), q.data(), 256);
    const auto y = Dequantize(type, q, 256);
    for (int b = 0; b < 8; ++b) {
      float lo = x[b * 32], hi = lo, amax = 0;
      for (int j = 0; j < 32; ++j) {
        lo = std::min(lo, x[b * 32 + j]);
        hi = std::max(hi, x[b * 32 + j]);
        amax = std::max(amax, std::fabs(x[b * 32 + j]));
      }
      const float step = type == GgmlType::kQ4_1   ? (hi - lo) / 15
                         : type == GgmlType::kQ4_0 ? amax / 8
                                                   : amax / 127;
      for (int j = 0; j < 32; ++j) {
        // Half a step, plus the f16 rounding of the scale (2^-11 relative) over 8/15/127 steps.
        // Q4_0 maps the largest magnitude to -8 steps, so the other sign reaches only 7 steps
        // and values beyond are clipped by up to a whole step.
        const float slack = type == GgmlType::kQ4_0 ? step : 0.5f * step;
        EXPECT_NEAR(y[b * 32 + j], x[b * 32 + j], slack + 130 * step / 2048 + 1e-3f * amax);
      }
    }
  }
}

}  // namespace
}  // namespace spillway::engine::cpu
