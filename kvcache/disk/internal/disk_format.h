// The SSD tier's on-disk format (private to kvcache/disk/): the header at the start of every
// slot of a slab file, and the persisted index file. docs/kv-tiers.md ("SSD tier") draws both.
// All integers are little-endian (the format is not meant to move between machines). Pure
// functions; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace spillway::kvcache::internal {

// A slot is [header region: kSlotHeaderBytes][payload: block_bytes, zero-padded to 4 KiB].
// The header region is a whole page so that payloads stay page-aligned (O_DIRECT-ready).
inline constexpr int64_t kSlotAlignBytes = 4096;
inline constexpr int64_t kSlotHeaderBytes = 4096;
// The encoded header's own size; the rest of the header region is zeros and is not read.
inline constexpr int64_t kEncodedHeaderBytes = 64;
// Slab files hold at most this many bytes of slots each.
inline constexpr int64_t kSlabFileBytes = int64_t{1} << 30;

int64_t SlotBytes(int64_t block_bytes);

// XXH3-64 of `bytes` (seed 0): the payload checksum.
uint64_t PayloadChecksum(std::span<const std::byte> bytes);

struct SlotHeader {
  uint64_t key = 0;
  uint64_t layout_fingerprint = 0;
  int64_t payload_bytes = 0;
  uint64_t payload_checksum = 0;
};

// kEncodedHeaderBytes bytes: magic, version, the fields above, and an XXH3 of them all.
std::vector<std::byte> EncodeSlotHeader(const SlotHeader& header);
// The fields of an encoded header; DataLoss when its magic, version or own checksum is wrong.
absl::StatusOr<SlotHeader> DecodeSlotHeader(std::span<const std::byte> bytes);

// The persisted index: the tier's geometry and every block written to disk, oldest first.
struct IndexEntry {
  uint64_t key = 0;
  uint64_t payload_checksum = 0;
  int64_t slot = 0;
};
struct IndexFile {
  uint64_t layout_fingerprint = 0;
  int64_t block_bytes = 0;
  int64_t slot_bytes = 0;
  int64_t slots_per_file = 0;
  int64_t num_slots = 0;
  std::vector<IndexEntry> entries{};
};

std::vector<std::byte> EncodeIndex(const IndexFile& index);
// DataLoss when the bytes are not a complete index of this version (bad magic, size or checksum).
absl::StatusOr<IndexFile> DecodeIndex(std::span<const std::byte> bytes);

}  // namespace spillway::kvcache::internal
