// KvTierOptions: the `spillway serve` flags of the host-RAM and SSD KV tiers (added to the
// command line by server/cli/kv_tiers.h, documented in docs/kv-tiers.md). Plain data.
#pragma once

#include <cstdint>
#include <string>

namespace spillway::server {

struct KvTierOptions {
  int64_t host_bytes = 0;     // --kv-host-bytes; 0: no host tier (unless the SSD needs one)
  std::string disk_path;      // --kv-disk-path; empty: no SSD tier
  int64_t disk_bytes = 0;     // --kv-disk-bytes
  bool disk_persist = false;  // --kv-disk-persist
};

}  // namespace spillway::server
