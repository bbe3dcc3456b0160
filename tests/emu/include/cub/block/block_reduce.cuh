// Stand-in for CUB's BlockReduce in the CPU emulation (tests/emu/emu.h): the same contract —
// every thread of the block calls it, the result is defined in thread 0 only (the others get
// their own input back, as CUB leaves theirs undefined), and TempStorage may be reused only
// after a __syncthreads. The reduction runs in thread order, not CUB's tree order.
#pragma once

#include "tests/emu/emu.h"

namespace cub {

template <typename T, int BLOCK_DIM_X>
class BlockReduce {
 public:
  struct TempStorage {
    T items[BLOCK_DIM_X];
  };
  explicit BlockReduce(TempStorage& storage) : s_(storage) {
    spw_emu::RequireBlockSize(BLOCK_DIM_X, "cub::BlockReduce");
  }
  template <typename Op>
  T Reduce(T input, Op op) {
    const unsigned tid = threadIdx.x;
    s_.items[tid] = input;
    __syncthreads();
    if (tid != 0) return input;
    T r = s_.items[0];
    for (int i = 1; i < BLOCK_DIM_X; ++i) r = op(r, s_.items[i]);
    return r;
  }
  T Sum(T input) {
    return Reduce(input, [](const T& a, const T& b) { return a + b; });
  }

 private:
  TempStorage& s_;
};

}  // namespace cub
