// Stand-in for CUB's BlockScan in the CPU emulation (tests/emu/emu.h): ExclusiveSum and
// InclusiveSum with the block aggregate, which every thread gets, as CUB's; TempStorage may be
// reused only after a __syncthreads. Thread 0 sums in thread order (not CUB's raking order).
#pragma once

#include "tests/emu/emu.h"

namespace cub {

template <typename T, int BLOCK_DIM_X>
class BlockScan {
 public:
  struct TempStorage {
    T items[BLOCK_DIM_X];
    T prefix[BLOCK_DIM_X + 1];  // prefix[i]: the sum of items[0, i)
  };
  explicit BlockScan(TempStorage& storage) : s_(storage) {
    spw_emu::RequireBlockSize(BLOCK_DIM_X, "cub::BlockScan");
  }
  void ExclusiveSum(T input, T& output, T& block_aggregate) {
    const unsigned tid = Scan(input);
    output = s_.prefix[tid];
    block_aggregate = s_.prefix[BLOCK_DIM_X];
  }
  void ExclusiveSum(T input, T& output) {
    T unused;
    ExclusiveSum(input, output, unused);
  }
  void InclusiveSum(T input, T& output) {
    T unused;
    InclusiveSum(input, output, unused);
  }
  void InclusiveSum(T input, T& output, T& block_aggregate) {
    const unsigned tid = Scan(input);
    output = s_.prefix[tid + 1];
    block_aggregate = s_.prefix[BLOCK_DIM_X];
  }

 private:
  unsigned Scan(T input) {
    const unsigned tid = threadIdx.x;
    s_.items[tid] = input;
    __syncthreads();
    if (tid == 0) {
      s_.prefix[0] = T{};
      for (int i = 0; i < BLOCK_DIM_X; ++i) s_.prefix[i + 1] = s_.prefix[i] + s_.items[i];
    }
    __syncthreads();
    return tid;
  }

  TempStorage& s_;
};

}  // namespace cub
