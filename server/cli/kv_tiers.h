// KV tier options of `spillway serve` (docs/kv-tiers.md): the device tier's size
// (--kv-device-blocks, an alias of --kv-blocks), host RAM (--kv-host-bytes) and the SSD
// (--kv-disk-path, --kv-disk-bytes, --kv-disk-persist), each also read from SPILLWAY_<NAME>;
// and AttachKvTiers, which puts a TierManager behind a loaded engine's KV cache. Main thread,
// at start-up.
#pragma once

#include <cstdint>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "engine/weights/model_file.h"
#include "server/cli/kv_tier_options.h"
#include "server/cli/loaded_engine.h"

namespace spillway::server {

// Adds the tier flags to `serve`: --kv-device-blocks writes `device_blocks` (the variable
// --kv-blocks writes), the others `options`. Sizes take units (512MiB, 4GiB, 100MB).
void AddKvTierFlags(CLI::App& serve, int32_t& device_blocks, KvTierOptions& options);

// A fingerprint of the model and its KV layout: an SSD tier persisted under another one is
// discarded at start-up (another model, quantisation, layer count or block size).
uint64_t KvLayoutFingerprint(const engine::ModelFile& file, int64_t kv_block_bytes);

// Replaces `e.kv` by a KV cache of the same device size with the lower tiers `options` ask for
// (nothing when they ask for none). FailedPrecondition when the backend cannot move blocks,
// InvalidArgument for inconsistent options, the SSD tier's error when its directory is
// unusable.
[[nodiscard]] absl::Status AttachKvTiers(const KvTierOptions& options, LoadedEngine& e);

}  // namespace spillway::server
