// WriteFileAtomically: replaces a file so that a crash leaves either the old or the new
// contents, never a mix (temporary file in the same directory, write, fsync, rename over the
// target, fsync the directory). Used for PEFT adapters and training checkpoints. Goes through
// kvcache::FileLayer so tests can inject faults. Any thread.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvcache/disk/file_layer.h"

namespace spillway::engine::lora {

// Errors: the FileLayer's (ResourceExhausted for a full disk, Internal otherwise); on error the
// target is untouched and the temporary file is removed when possible.
[[nodiscard]] absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes,
                                               kvcache::FileLayer& fs = kvcache::PosixFileLayer());

// The whole file at `path`. NotFound when it does not exist.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          kvcache::FileLayer& fs = kvcache::PosixFileLayer());

}  // namespace spillway::engine::lora
