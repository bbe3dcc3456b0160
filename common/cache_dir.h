// Where spillway keeps downloaded models: $SPILLWAY_CACHE, or ~/.cache/spillway.
#pragma once

#include <string>

namespace spillway {

// The cache directory (not created here).
std::string CacheDir();
// Path of the default model file inside the cache; setup (scripts/setup.sh) puts it there.
std::string DefaultModelPath();

}  // namespace spillway
