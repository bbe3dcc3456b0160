#include "engine/cpu/matmul_kernels.h"

namespace spillway::engine::cpu::internal {
const KernelSet* Avx512Kernels() { return nullptr; }
}  // namespace spillway::engine::cpu::internal
