// Sha256Hex: the SHA-256 digest (FIPS 180-4) of a byte string as 64 lowercase hex digits, for
// checking uploaded fine-tuning files before use (server/admin/) and the goldens the tests
// reassemble from text (tests/golden_safetensors.h). Pure function; any thread.
#pragma once

#include <string>
#include <string_view>

namespace spillway {

std::string Sha256Hex(std::string_view data);

}  // namespace spillway
