// Stand-in for cuda_runtime.h in the CPU emulation: the runtime API and the device-side
// language (tests/emu/emu.h: __global__, threadIdx, __syncthreads, shuffles, launches).
#pragma once

#include <cuda_runtime_api.h>

#include "tests/emu/emu.h"
