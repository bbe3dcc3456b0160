#include "kvcache/disk/internal/disk_format.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace spillway::kvcache::internal {
namespace {

constexpr uint64_t kSlotMagic = 0x544f4c5357505300;   // "\0SPWSLOT" read little-endian
constexpr uint64_t kIndexMagic = 0x5844494b57505300;  // "\0SPWKIDX"
constexpr uint32_t kVersion = 1;
constexpr int64_t kIndexHeaderBytes = 64;
constexpr int64_t kIndexEntryBytes = 24;

// Appends / reads fixed-width little-endian integers (x86-64 and aarch64 Linux are both LE).
template <typename T>
void Put(std::vector<std::byte>& out, T value) {
  size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &value, sizeof(T));
}
template <typename T>
T Get(std::span<const std::byte> bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

uint64_t Hash(std::span<const std::byte> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

}  // namespace

int64_t SlotBytes(int64_t block_bytes) {
  return kSlotHeaderBytes + (block_bytes + kSlotAlignBytes - 1) / kSlotAlignBytes * kSlotAlignBytes;
}

uint64_t PayloadChecksum(std::span<const std::byte> bytes) { return Hash(bytes); }

// Layout (64 bytes): magic u64 | version u32 | header bytes u32 | key u64 | fingerprint u64 |
// payload bytes i64 | payload XXH3 u64 | zero u64 | XXH3 of the previous 56 bytes u64.
std::vector<std::byte> EncodeSlotHeader(const SlotHeader& header) {
  std::vector<std::byte> out;
  out.reserve(kEncodedHeaderBytes);
  Put(out, kSlotMagic);
  Put(out, kVersion);
  Put(out, static_cast<uint32_t>(kEncodedHeaderBytes));
  Put(out, header.key);
  Put(out, header.layout_fingerprint);
  Put(out, header.payload_bytes);
  Put(out, header.payload_checksum);
  Put(out, uint64_t{0});
  Put(out, Hash(out));
  return out;
}

absl::StatusOr<SlotHeader> DecodeSlotHeader(std::span<const std::byte> bytes) {
  if (std::ssize(bytes) < kEncodedHeaderBytes) return absl::DataLossError("short slot header");
  if (Get<uint64_t>(bytes, 0) != kSlotMagic) return absl::DataLossError("bad slot magic");
  if (Get<uint32_t>(bytes, 8) != kVersion ||
      Get<uint32_t>(bytes, 12) != static_cast<uint32_t>(kEncodedHeaderBytes)) {
    return absl::DataLossError("unknown slot header version");
  }
  if (Get<uint64_t>(bytes, 56) != Hash(bytes.first(56))) {
    return absl::DataLossError("slot header checksum mismatch");
  }
  return SlotHeader{.key = Get<uint64_t>(bytes, 16),
                    .layout_fingerprint = Get<uint64_t>(bytes, 24),
                    .payload_bytes = Get<int64_t>(bytes, 32),
                    .payload_checksum = Get<uint64_t>(bytes, 40)};
}

// Layout: a 64-byte header (magic u64 | version u32 | zero u32 | fingerprint u64 | block bytes
// i64 | slot bytes i64 | slots per file i64 | slots i64 | entries i64), then 24 bytes per entry
// (key u64 | payload XXH3 u64 | slot i64), then an XXH3 of everything before it (u64).
std::vector<std::byte> EncodeIndex(const IndexFile& index) {
  std::vector<std::byte> out;
  out.reserve(kIndexHeaderBytes + index.entries.size() * kIndexEntryBytes + 8);
  Put(out, kIndexMagic);
  Put(out, kVersion);
  Put(out, uint32_t{0});
  Put(out, index.layout_fingerprint);
  Put(out, index.block_bytes);
  Put(out, index.slot_bytes);
  Put(out, index.slots_per_file);
  Put(out, index.num_slots);
  Put(out, static_cast<int64_t>(index.entries.size()));
  for (const IndexEntry& e : index.entries) {
    Put(out, e.key);
    Put(out, e.payload_checksum);
    Put(out, e.slot);
  }
  Put(out, Hash(out));
  return out;
}

absl::StatusOr<IndexFile> DecodeIndex(std::span<const std::byte> bytes) {
  if (std::ssize(bytes) < kIndexHeaderBytes + 8) return absl::DataLossError("short index file");
  if (Get<uint64_t>(bytes, 0) != kIndexMagic || Get<uint32_t>(bytes, 8) != kVersion) {
    return absl::DataLossError("not an index file of this version");
  }
  int64_t num_entries = Get<int64_t>(bytes, 56);
  if (num_entries < 0 ||
      std::ssize(bytes) != kIndexHeaderBytes + num_entries * kIndexEntryBytes + 8) {
    return absl::DataLossError(absl::StrFormat("index file of %d bytes cannot hold %d entries",
                                               bytes.size(), num_entries));
  }
  if (Get<uint64_t>(bytes, bytes.size() - 8) != Hash(bytes.first(bytes.size() - 8))) {
    return absl::DataLossError("index file checksum mismatch");
  }
  IndexFile index{.layout_fingerprint = Get<uint64_t>(bytes, 16),
                  .block_bytes = Get<int64_t>(bytes, 24),
                  .slot_bytes = Get<int64_t>(bytes, 32),
                  .slots_per_file = Get<int64_t>(bytes, 40),
                  .num_slots = Get<int64_t>(bytes, 48)};
  index.entries.reserve(num_entries);
  for (int64_t i = 0; i < num_entries; ++i) {
    size_t at = kIndexHeaderBytes + i * kIndexEntryBytes;
    index.entries.push_back({.key = Get<uint64_t>(bytes, at),
                             .payload_checksum = Get<uint64_t>(bytes, at + 8),
                             .slot = Get<int64_t>(bytes, at + 16)});
  }
  return index;
}

}  // namespace spillway::kvcache::internal
