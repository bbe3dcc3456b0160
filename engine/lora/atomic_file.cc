#include "engine/lora/atomic_file.h"

#include <cstddef>
#include <span>

#include "common/status_macros.h"

namespace spillway::engine::lora {
namespace {

std::string DirOf(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status WriteAndSync(kvcache::FileLayer& fs, const std::string& tmp, std::string_view bytes) {
  SPW_ASSIGN_OR_RETURN(std::unique_ptr<kvcache::File> f,
                       fs.Open(tmp, kvcache::OpenMode::kTruncate));
  SPW_RETURN_IF_ERROR(f->WriteAt(
      0,
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size())));
  return f->Sync();
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes,
                                 kvcache::FileLayer& fs) {
  const std::string tmp = path + ".tmp";
  absl::Status s = WriteAndSync(fs, tmp, bytes);
  if (s.ok()) s = fs.Rename(tmp, path);
  if (!s.ok()) {
    fs.Remove(tmp).IgnoreError();
    return s;
  }
  return fs.SyncDir(DirOf(path));
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, kvcache::FileLayer& fs) {
  SPW_ASSIGN_OR_RETURN(std::unique_ptr<kvcache::File> f, fs.Open(path, kvcache::OpenMode::kRead));
  SPW_ASSIGN_OR_RETURN(int64_t size, f->Size());
  std::string out(static_cast<size_t>(size), '\0');
  SPW_ASSIGN_OR_RETURN(
      int64_t got,
      f->ReadAt(0, std::span<std::byte>(reinterpret_cast<std::byte*>(out.data()), out.size())));
  out.resize(static_cast<size_t>(got));
  return out;
}

}  // namespace spillway::engine::lora
