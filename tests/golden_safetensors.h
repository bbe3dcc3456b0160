// Safetensors goldens kept as text: repository policy allows no binary files in git, so a golden
// X.safetensors is committed as X.safetensors.json (the form tests/golden/lora/
// safetensors_text.py writes and documents) and reassembled here, byte for byte, at test time.
// The bytes are checked against the size and sha256 recorded in the text before any test sees
// them. Used by the LoRA tests (peft_io_test, peft_golden_model_test); not thread-safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace spillway::testing {

// The bytes of the safetensors file that `relative` (a path inside the source tree, e.g.
// "tests/golden/lora/llama-tiny-grads.safetensors.json") holds in text form. InvalidArgument if
// the text is not that form or the bytes differ from its recorded num_bytes or sha256;
// NotFound if it cannot be read.
absl::StatusOr<std::string> SafetensorsFromText(const std::string& relative);

// ScratchGoldens: a directory under ::testing::TempDir(), named after `name` and this process,
// into which binary goldens are reassembled; emptied on construction, removed with the object.
class ScratchGoldens {
 public:
  explicit ScratchGoldens(const std::string& name);
  ~ScratchGoldens();
  ScratchGoldens(const ScratchGoldens&) = delete;
  ScratchGoldens& operator=(const ScratchGoldens&) = delete;

  // Reassembles `relative` (".../X.safetensors.json") into dir()/X.safetensors and returns
  // that path; the errors of SafetensorsFromText, or Internal if it cannot be written.
  absl::StatusOr<std::string> Safetensors(const std::string& relative);

  // A PEFT adapter directory made from the golden folder `relative_dir` (e.g.
  // "tests/golden/lora/llama-tiny-adapter", holding adapter_config.json and
  // adapter_model.safetensors.json): dir()/<its last component> with adapter_config.json
  // copied and adapter_model.safetensors reassembled. Returns its path.
  absl::StatusOr<std::string> PeftAdapter(const std::string& relative_dir);

  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

}  // namespace spillway::testing
