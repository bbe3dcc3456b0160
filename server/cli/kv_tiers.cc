#include "server/cli/kv_tiers.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <utility>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "absl/strings/str_format.h"
#include "kvcache/tier_manager.h"
#include "scheduler/backend_block_io.h"

namespace spillway::server {
namespace {

// NOTE(tiers): the SSD tier stages its reads in host slots, so an SSD without a host tier
// (--kv-host-bytes 0) gets this many host blocks anyway.
constexpr int32_t kMinStagingHostBlocks = 64;

// Bytes of each tensor's data hashed into the fingerprint (its start).
constexpr int64_t kFingerprintSampleBytes = 4096;

}  // namespace

void AddKvTierFlags(CLI::App& serve, int32_t& device_blocks, KvTierOptions& o) {
  serve
      .add_option("--kv-device-blocks", device_blocks,
                  "device KV tier size in 16-token blocks (alias of --kv-blocks)")
      ->check(CLI::Range(0, 1 << 28))
      ->envname("SPILLWAY_KV_DEVICE_BLOCKS");
  serve
      .add_option("--kv-host-bytes", o.host_bytes,
                  "host-RAM KV tier: cold blocks evicted from the device go here (e.g. 4GiB; "
                  "0: none)")
      ->transform(CLI::AsSizeValue(false))
      ->envname("SPILLWAY_KV_HOST_BYTES");
  serve
      .add_option("--kv-disk-path", o.disk_path,
                  "directory of the SSD KV tier (blocks evicted from host RAM go here)")
      ->envname("SPILLWAY_KV_DISK_PATH");
  serve.add_option("--kv-disk-bytes", o.disk_bytes, "size of the SSD KV tier (e.g. 64GiB)")
      ->transform(CLI::AsSizeValue(false))
      ->envname("SPILLWAY_KV_DISK_BYTES");
  serve
      .add_flag("--kv-disk-persist", o.disk_persist,
                "keep the SSD tier's index across restarts and reuse its blocks (checked "
                "against a fingerprint of the model and its KV layout)")
      ->envname("SPILLWAY_KV_DISK_PERSIST");
}

uint64_t KvLayoutFingerprint(const engine::ModelFile& file, int64_t kv_block_bytes) {
  const engine::ModelConfig& c = file.config();
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  const std::string head =
      absl::StrFormat("spillway-kv-v1|%s|%s|%d|%d|%d|%d|%d|%d|%g|%d|%d", c.architecture, c.name,
                      c.num_layers, c.hidden, c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size,
                      c.rope_theta, kvcache::kBlockTokens, kv_block_bytes);
  XXH3_64bits_update(state, head.data(), head.size());
  // Names, types, shapes and the first bytes of every tensor: another quantisation or another
  // fine-tune of the same shape gives another fingerprint.
  for (const auto& [name, t] : file.tensors()) {
    const std::string desc = absl::StrFormat("|%s:%d:%d", name, static_cast<int>(t.type), t.nbytes);
    XXH3_64bits_update(state, desc.data(), desc.size());
    if (t.data != nullptr) {
      XXH3_64bits_update(state, t.data,
                         static_cast<size_t>(std::min(t.nbytes, kFingerprintSampleBytes)));
    }
  }
  const uint64_t fingerprint = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return fingerprint;
}

absl::Status AttachKvTiers(const KvTierOptions& o, LoadedEngine& e) {
  if (o.host_bytes == 0 && o.disk_path.empty()) return absl::OkStatus();
  if (o.host_bytes < 0 || o.disk_bytes < 0) {
    return absl::InvalidArgumentError("--kv-host-bytes and --kv-disk-bytes must be >= 0");
  }
  if (!o.disk_path.empty() && o.disk_bytes == 0) {
    return absl::InvalidArgumentError("--kv-disk-path needs --kv-disk-bytes");
  }
  const int64_t block_bytes = e.backend->kv_block_bytes();
  if (block_bytes <= 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the %s backend cannot move KV blocks; run without --kv-host-bytes / --kv-disk-path",
        std::string(e.backend->name())));
  }
  int64_t host_blocks = o.host_bytes / block_bytes;
  if (!o.disk_path.empty() && host_blocks == 0) {
    spdlog::info("KV tiers: the SSD tier stages reads in host RAM; host tier of {} blocks",
                 kMinStagingHostBlocks);
    host_blocks = kMinStagingHostBlocks;
  }
  std::unique_ptr<kvcache::DiskTier> disk;
  if (!o.disk_path.empty()) {
    absl::StatusOr<std::unique_ptr<kvcache::DiskTier>> d =
        kvcache::DiskTier::Open({.path = o.disk_path,
                                 .capacity_bytes = o.disk_bytes,
                                 .block_bytes = block_bytes + kvcache::kDiskKeyBytes,
                                 .layout_fingerprint = KvLayoutFingerprint(*e.file, block_bytes),
                                 .persist = o.disk_persist});
    if (!d.ok()) return d.status();
    disk = *std::move(d);
    const kvcache::DiskTierStats s = disk->stats();
    spdlog::info("KV tiers: SSD at {} holds {} of {} blocks{}", o.disk_path, s.num_blocks,
                 s.capacity_blocks, o.disk_persist ? " (persistent)" : "");
  }
  spdlog::info("KV tiers: device {} blocks, host {} blocks ({} MiB), {} KiB per block", e.kv_blocks,
               host_blocks, host_blocks * block_bytes >> 20, block_bytes >> 10);
  auto tiers = std::make_unique<kvcache::TierManager>(
      std::make_unique<scheduler::BackendBlockIo>(*e.backend),
      kvcache::TierManager::Options{
          .host_slots = static_cast<int32_t>(host_blocks),
          .disk = std::move(disk),
          // NOTE(tiers): spill 1/16 of the pool ahead (4..256 blocks) when its free list runs
          // dry, so allocations find blocks whose copies are done (docs/kv-tiers.md).
          .spill_ahead_blocks = std::clamp(e.kv_blocks / 16, 4, 256)});
  e.kv = std::make_unique<kvcache::KvCache>(e.kv_blocks, std::move(tiers));
  return absl::OkStatus();
}

}  // namespace spillway::server
