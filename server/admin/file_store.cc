#include "server/admin/file_store.h"

#include <algorithm>
#include <boost/json.hpp>
#include <ctime>
#include <filesystem>
#include <random>

#include "absl/strings/str_format.h"
#include "common/sha256.h"
#include "engine/lora/atomic_file.h"
#include "server/admin/dataset.h"
#include "server/openai/api_error.h"

namespace spillway::server::admin {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

std::string NewFileId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("file-%016x%08x", rng(), static_cast<uint32_t>(rng()));
}

std::string ToJson(const FileInfo& f) {
  return json::serialize(json::object{{"id", f.id},
                                      {"bytes", f.bytes},
                                      {"created_at", f.created_at},
                                      {"filename", f.filename},
                                      {"purpose", f.purpose},
                                      {"sha256", f.sha256}});
}

absl::StatusOr<FileInfo> FromJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return absl::DataLossError("unreadable file metadata");
  try {
    const json::object& o = v.as_object();
    return FileInfo{.id = std::string(o.at("id").as_string()),
                    .bytes = o.at("bytes").to_number<int64_t>(),
                    .created_at = o.at("created_at").to_number<int64_t>(),
                    .filename = std::string(o.at("filename").as_string()),
                    .purpose = std::string(o.at("purpose").as_string()),
                    .sha256 = std::string(o.at("sha256").as_string())};
  } catch (const std::exception&) {
    return absl::DataLossError("unreadable file metadata");
  }
}

}  // namespace

absl::Status FileNotFoundError(std::string_view id) {
  return openai::WithParam(
      absl::NotFoundError(absl::StrFormat("No such File object: %s", id.substr(0, 64))), "file_id");
}

json::object FileObject(const FileInfo& f) {
  return json::object{{"object", "file"},       {"id", f.id},
                      {"bytes", f.bytes},       {"created_at", f.created_at},
                      {"filename", f.filename}, {"purpose", f.purpose},
                      {"status", "processed"},  {"status_details", nullptr}};
}

bool FileStore::IsValidId(const std::string& id) {
  if (id.size() != 29 || !id.starts_with("file-")) return false;
  return std::all_of(id.begin() + 5, id.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string FileStore::PathOf(const std::string& id, const char* ext) const {
  return (fs::path(dir_) / (id + ext)).string();
}

absl::StatusOr<std::unique_ptr<FileStore>> FileStore::Open(std::string dir, int64_t max_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrFormat("cannot create %s: %s", dir, ec.message()));
  std::unique_ptr<FileStore> store(new FileStore(dir, max_bytes));
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.ends_with(".json") || !IsValidId(name.substr(0, name.size() - 5))) continue;
    absl::StatusOr<std::string> text = engine::lora::ReadWholeFile(e.path().string());
    if (!text.ok()) continue;
    absl::StatusOr<FileInfo> info = FromJson(*text);
    if (!info.ok() || !IsValidId(info->id)) continue;
    absl::MutexLock lock(&store->mu_);
    store->files_[info->id] = *std::move(info);
  }
  return store;
}

absl::StatusOr<FileInfo> FileStore::Put(std::string filename, std::string purpose,
                                        std::string data) {
  if (purpose != "fine-tune") {
    return openai::InvalidParamError("purpose", "purpose must be 'fine-tune'");
  }
  if (data.empty()) return openai::InvalidParamError("file", "the file is empty");
  if (static_cast<int64_t>(data.size()) > max_bytes_) {
    return openai::WithParam(absl::InvalidArgumentError(absl::StrFormat(
                                 "the file is %d bytes; the limit is %d", data.size(), max_bytes_)),
                             "file");
  }
  if (absl::StatusOr<std::vector<DatasetExample>> ex = ParseFineTuneJsonl(data); !ex.ok()) {
    return openai::InvalidParamError(
        "file", absl::StrFormat("invalid fine-tuning JSONL: %s", ex.status().message()));
  }
  return Store(std::move(filename), std::move(purpose), data);
}

absl::StatusOr<FileInfo> FileStore::PutResult(std::string filename, std::string data) {
  return Store(std::move(filename), "fine-tune-results", data);
}

absl::StatusOr<FileInfo> FileStore::Store(std::string filename, std::string purpose,
                                          const std::string& data) {
  // Display name only: the last path component, bounded.
  filename = fs::path(filename).filename().string();
  if (filename.size() > 255) filename.resize(255);
  FileInfo info{.id = NewFileId(),
                .bytes = static_cast<int64_t>(data.size()),
                .created_at = std::time(nullptr),
                .filename = std::move(filename),
                .purpose = std::move(purpose),
                .sha256 = Sha256Hex(data)};
  if (absl::Status st = engine::lora::WriteFileAtomically(PathOf(info.id, ".data"), data);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = engine::lora::WriteFileAtomically(PathOf(info.id, ".json"), ToJson(info));
      !st.ok()) {
    return st;
  }
  absl::MutexLock lock(&mu_);
  files_[info.id] = info;
  return info;
}

std::vector<FileInfo> FileStore::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<FileInfo> out;
  for (const auto& [id, f] : files_) out.push_back(f);
  std::stable_sort(out.begin(), out.end(), [](const FileInfo& a, const FileInfo& b) {
    return a.created_at < b.created_at;
  });
  return out;
}

absl::StatusOr<FileInfo> FileStore::Get(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(id);
  if (it == files_.end()) return FileNotFoundError(id);
  return it->second;
}

absl::Status FileStore::Delete(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(id);
  if (it == files_.end()) return FileNotFoundError(id);
  std::error_code ec;
  fs::remove(PathOf(id, ".json"), ec);
  fs::remove(PathOf(id, ".data"), ec);
  files_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<std::string> FileStore::Content(const std::string& id) const {
  absl::StatusOr<FileInfo> info = Get(id);
  if (!info.ok()) return info.status();
  absl::StatusOr<std::string> data = engine::lora::ReadWholeFile(PathOf(id, ".data"));
  if (!data.ok()) return data.status();
  if (Sha256Hex(*data) != info->sha256) {
    return absl::DataLossError(
        absl::StrFormat("file %s does not match its SHA-256 digest (changed on disk)", id));
  }
  return data;
}

}  // namespace spillway::server::admin
