// Constants of the GGUF container format shared by its reader (gguf_reader.cc) and writer
// (gguf_writer.cc): the magic number and the numbers of metadata value types.
#pragma once

#include <cstdint>

namespace spillway::engine::internal {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian

enum GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

}  // namespace spillway::engine::internal
