#include "tests/golden_safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "common/string_views.h"
#include "tests/golden_json.h"
#include "tests/test_paths.h"

namespace spillway::testing {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

constexpr char kFormat[] = "safetensors-text/1";

// The binary that the parsed text form `doc` describes, not yet checked against its sha256.
// Boost.JSON's as_*() and at() throw on a missing key or wrong type; the caller catches.
absl::StatusOr<std::string> Assemble(const json::object& doc) {
  if (doc.at("format").as_string() != kFormat) {
    return absl::InvalidArgumentError(absl::StrCat(
        "format is \"", AbslSv(doc.at("format").as_string()), "\", not \"", kFormat, "\""));
  }
  std::string header;
  for (const json::value& piece : doc.at("header").as_array()) header += piece.as_string();
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += header;
  // HexStringToBytes does not check its digits: a bad one (or an odd count) changes the
  // bytes, which the caller's size and sha256 checks then refuse.
  for (const json::value& line : doc.at("data_hex").as_array()) {
    out += absl::HexStringToBytes(AbslSv(line.as_string()));
  }
  return out;
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> SafetensorsFromText(const std::string& relative) {
  const std::string path = SourcePath(relative);
  if (!fs::exists(path)) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::string bytes;
  std::string want_sha256;
  int64_t want_bytes = 0;
  try {
    const json::object doc = ReadJsonFile(relative).as_object();
    SPW_ASSIGN_OR_RETURN(bytes, Assemble(doc));
    want_sha256 = std::string(doc.at("sha256").as_string());
    want_bytes = doc.at("num_bytes").to_number<int64_t>();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  if (std::ssize(bytes) != want_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": reassembled ", bytes.size(),
                                                   " bytes; the file records ", want_bytes));
  }
  if (const std::string sha256 = Sha256Hex(bytes); sha256 != want_sha256) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": reassembled sha256 ", sha256, "; the file records ", want_sha256));
  }
  return bytes;
}

ScratchGoldens::ScratchGoldens(const std::string& name)
    : dir_((fs::path(::testing::TempDir()) / absl::StrCat(name, "_", ::getpid())).string()) {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

ScratchGoldens::~ScratchGoldens() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

absl::StatusOr<std::string> ScratchGoldens::Safetensors(const std::string& relative) {
  SPW_ASSIGN_OR_RETURN(const std::string bytes, SafetensorsFromText(relative));
  std::string file = fs::path(relative).filename().string();
  if (file.ends_with(".json")) file.resize(file.size() - 5);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir_, ": ", ec.message()));
  const std::string path = dir_ + "/" + file;
  SPW_RETURN_IF_ERROR(WriteFile(path, bytes));
  return path;
}

absl::StatusOr<std::string> ScratchGoldens::PeftAdapter(const std::string& relative_dir) {
  SPW_ASSIGN_OR_RETURN(const std::string bytes,
                       SafetensorsFromText(relative_dir + "/adapter_model.safetensors.json"));
  const std::string dir = dir_ + "/" + fs::path(relative_dir).filename().string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  fs::copy_file(SourcePath(relative_dir + "/adapter_config.json"), dir + "/adapter_config.json",
                fs::copy_options::overwrite_existing, ec);
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("cannot copy ", relative_dir, "/adapter_config.json: ", ec.message()));
  }
  SPW_RETURN_IF_ERROR(WriteFile(dir + "/adapter_model.safetensors", bytes));
  return dir;
}

}  // namespace spillway::testing
