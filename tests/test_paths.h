// Where tests find their inputs: the source tree (goldens), the build tree (generated files)
// and the model cache (the default model that setup downloads). Used by tests only.
#pragma once

#include <string>

namespace spillway::testing {

// Absolute path of `relative` inside the source tree, e.g. "tests/golden/tokenizer.json"
// ($SPILLWAY_SOURCE_DIR, when set, stands for the tree).
std::string SourcePath(const std::string& relative);
// Absolute path of `relative` inside the build tree.
std::string BinaryPath(const std::string& relative);
// Path of the default model (SmolLM2-135M-Instruct Q4_1) in the cache (common/cache_dir.h).
std::string DefaultModelPath();

}  // namespace spillway::testing
