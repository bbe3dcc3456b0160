// SPW_TARGET_BEGIN(features) / SPW_TARGET_END: compile the functions between them for the given
// x86 features (runtime dispatch without per-file compile flags), with GCC and clang alike.
// Used only by the kernel files in engine/cpu/x86/. Include every other header before
// SPW_TARGET_BEGIN, and keep the code between the markers in an anonymous namespace (apart from
// the one entry point), so that no inline function compiled for AVX-512 can be picked by the
// linker for a caller that runs on a CPU without it.
#pragma once

#define SPW_PRAGMA(x) _Pragma(#x)

#if defined(__clang__)
#define SPW_TARGET_BEGIN(features) \
  SPW_PRAGMA(clang attribute push(__attribute__((target(features))), apply_to = function))
#define SPW_TARGET_END SPW_PRAGMA(clang attribute pop)
#else
#define SPW_TARGET_BEGIN(features) \
  SPW_PRAGMA(GCC push_options)     \
  SPW_PRAGMA(GCC target(features))
#define SPW_TARGET_END SPW_PRAGMA(GCC pop_options)
#endif
