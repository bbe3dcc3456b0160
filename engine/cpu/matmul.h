// Matrix products and conversions on weights as they are stored in model files (quantized or
// not), for the CPU backend. Weights keep their file type in memory (Q4_1 stays ~4.5 bits per
// weight); activations are converted per call as the weight type requires. A weight matrix can
// be used as the file has it (WeightMatrix, a view) or repacked once (PackWeight) into the
// layout the kernels read, which spares every later call that work; both give the same bits.
// Thread-safe: functions keep no state; parallelism comes from the ThreadPool passed in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "engine/cpu/thread_pool.h"
#include "engine/weights/ggml_types.h"

namespace spillway::engine::cpu {

// A weight matrix of `rows` output features by `cols` input features, row-major: row r starts
// at data + r * row_bytes and holds `cols` values of `type`.
struct WeightMatrix {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  int64_t row_bytes = 0;
};

// A weight matrix repacked (by PackWeight) into the layout the MatMul kernels read: the same
// bytes as the file's rows, rearranged so that the kernels load them without shuffling (see
// engine/cpu/matmul_kernels.h), each row on a 64-byte boundary. Owns its memory (about the
// size of the file's tensor); immutable, so any number of threads may read it.
class PackedWeight {
 public:
  PackedWeight(const PackedWeight&) = delete;
  PackedWeight& operator=(const PackedWeight&) = delete;

  GgmlType type() const { return type_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  // Bytes from one packed row to the next, and the rows themselves (64-byte aligned).
  int64_t row_stride() const { return row_stride_; }
  const uint8_t* data() const { return data_.get(); }
  // Bytes this object holds for the rows.
  int64_t size_bytes() const { return rows_ * row_stride_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  friend absl::StatusOr<std::unique_ptr<PackedWeight>> PackWeight(const WeightMatrix& w);
  PackedWeight() = default;

  GgmlType type_ = GgmlType::kF32;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  int64_t row_stride_ = 0;
  std::unique_ptr<uint8_t, Free> data_;
};

// Repacks `w` for MatMul. Reads every byte of `w` once; `w` may go away afterwards.
// Errors: InvalidArgument for a type MatMul does not support or cols not a multiple of the
// type's block; ResourceExhausted if the memory cannot be allocated.
absl::StatusOr<std::unique_ptr<PackedWeight>> PackWeight(const WeightMatrix& w);

// y[t, r] = sum_c w[r, c] * x[t, c] for t < n_tokens, r < w.rows.
//   x: [n_tokens, w.cols] f32, row stride w.cols
//   y: [n_tokens, w.rows] f32, row stride w.rows
// Supported w.type: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K.
// REQUIRES: w.cols is a multiple of BlockElements(w.type).
// Bit for bit, y depends only on the weights and on x's own row t (not on n_tokens, threads or
// instruction set), and MatMul on PackWeight(w) gives the same y as MatMul on w. The packed
// form is faster when the weights serve many calls: the plain one repacks rows on every call.
void MatMul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);
void MatMul(const PackedWeight& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);

// ys[i] = x · ws[i]ᵀ for every i: the same bits as MatMul on each weight, with x converted
// (quantized to int8 blocks) once for all of them where they read the same conversion (same
// cols, and all legacy 32-blocks or all K-quants); otherwise one MatMul per weight.
// For projections that share an input (q/k/v; gate/up). REQUIRES: ws.size() == ys.size().
void MatMulShared(std::span<const PackedWeight* const> ws, const float* x, int64_t n_tokens,
                  std::span<float* const> ys, ThreadPool& pool);

// Converts `n` values of `type` at `src` (a whole number of blocks) to f32 at `dst`.
void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

// The instruction sets MatMul has kernels for. By default MatMul uses the best one the CPU
// supports (checked once, at run time, with CPUID): AVX-512 needs F, BW, VL, DQ and VNNI;
// AVX2 needs AVX2, FMA and F16C.
enum class MatMulIsa { kScalar, kAvx2, kAvx512 };

// Whether this build has kernels for `isa` and this CPU can run them.
bool MatMulIsaSupported(MatMulIsa isa);
// The instruction set MatMul uses now.
MatMulIsa ActiveMatMulIsa();
// "scalar", "avx2", "avx512".
const char* MatMulIsaName(MatMulIsa isa);

// Test hook: makes MatMul use `isa` from now on (process-wide; not thread-safe against
// concurrent MatMul calls). REQUIRES: MatMulIsaSupported(isa).
void SetMatMulIsaForTesting(MatMulIsa isa);
// Test hook: back to the default choice.
void ResetMatMulIsaForTesting();

}  // namespace spillway::engine::cpu
