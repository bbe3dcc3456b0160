#include "engine/weights/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "engine/weights/internal/gguf_format.h"

namespace spillway::engine {
namespace {

constexpr int64_t kAlignment = 32;  // GGUF's default general.alignment

using enum internal::GgufValueType;

class Out {
 public:
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void Str(const std::string& s) {
    U64(s.size());
    Raw(s.data(), s.size());
  }
  void Raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
  }
  void PadTo(int64_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(0);
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace

void GgufWriter::SetString(const std::string& key, const std::string& value) {
  metadata_.emplace_back(key, value);
}
void GgufWriter::SetUint32(const std::string& key, uint32_t value) {
  metadata_.emplace_back(key, value);
}
void GgufWriter::SetFloat32(const std::string& key, float value) {
  metadata_.emplace_back(key, value);
}
void GgufWriter::SetBool(const std::string& key, bool value) { metadata_.emplace_back(key, value); }
void GgufWriter::SetStrings(const std::string& key, const std::vector<std::string>& values) {
  metadata_.emplace_back(key, values);
}
void GgufWriter::SetFloat32s(const std::string& key, const std::vector<float>& values) {
  metadata_.emplace_back(key, values);
}
void GgufWriter::SetInt32s(const std::string& key, const std::vector<int32_t>& values) {
  metadata_.emplace_back(key, values);
}

void GgufWriter::AddTensor(const std::string& name, GgmlType type, std::vector<int64_t> shape,
                           Fill fill) {
  SPW_CHECK(!shape.empty());
  const std::optional<int64_t> row = RowBytes(type, shape[0]);
  SPW_CHECK(row.has_value()) << name << ": " << shape[0] << " values per row";
  int64_t rows = 1;
  for (size_t i = 1; i < shape.size(); ++i) rows *= shape[i];
  tensors_.push_back({name, type, std::move(shape), *row * rows, std::move(fill)});
}

absl::Status GgufWriter::Write(const std::string& path, int64_t chunk_bytes) const {
  Out h;
  h.U32(internal::kGgufMagic);
  h.U32(3);
  h.U64(tensors_.size());
  h.U64(metadata_.size());
  for (const auto& [key, value] : metadata_) {
    h.Str(key);
    if (const auto* s = std::get_if<std::string>(&value)) {
      h.U32(kString);
      h.Str(*s);
    } else if (const auto* u = std::get_if<uint32_t>(&value)) {
      h.U32(kU32);
      h.U32(*u);
    } else if (const auto* f = std::get_if<float>(&value)) {
      h.U32(kF32);
      h.Raw(f, 4);
    } else if (const auto* b = std::get_if<bool>(&value)) {
      h.U32(kBool);
      const uint8_t byte = *b ? 1 : 0;
      h.Raw(&byte, 1);
    } else if (const auto* ss = std::get_if<std::vector<std::string>>(&value)) {
      h.U32(kArray);
      h.U32(kString);
      h.U64(ss->size());
      for (const std::string& s : *ss) h.Str(s);
    } else if (const auto* fs = std::get_if<std::vector<float>>(&value)) {
      h.U32(kArray);
      h.U32(kF32);
      h.U64(fs->size());
      h.Raw(fs->data(), fs->size() * 4);
    } else {
      const auto& is = std::get<std::vector<int32_t>>(value);
      h.U32(kArray);
      h.U32(kI32);
      h.U64(is.size());
      h.Raw(is.data(), is.size() * 4);
    }
  }
  int64_t offset = 0;
  std::vector<int64_t> offsets;
  for (const Tensor& t : tensors_) {
    h.Str(t.name);
    h.U32(static_cast<uint32_t>(t.shape.size()));
    for (int64_t d : t.shape) h.U64(d);
    h.U32(static_cast<uint32_t>(t.type));
    h.U64(offset);
    offsets.push_back(offset);
    offset = (offset + t.nbytes + kAlignment - 1) / kAlignment * kAlignment;
  }
  h.PadTo(kAlignment);

  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (f == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrFormat("cannot create %s: %s", path, std::strerror(errno)));
  }
  auto put = [&](const void* p, size_t n) { return std::fwrite(p, 1, n, f.get()) == n; };
  bool ok = put(h.bytes().data(), h.bytes().size());
  std::vector<uint8_t> buf;
  int64_t written = 0;
  for (size_t i = 0; i < tensors_.size() && ok; ++i) {
    const Tensor& t = tensors_[i];
    static const uint8_t kZeros[kAlignment] = {};
    ok = put(kZeros, offsets[i] - written);
    for (int64_t b = 0; b < t.nbytes && ok; b += chunk_bytes) {
      const int64_t n = std::min(chunk_bytes, t.nbytes - b);
      buf.resize(n);
      t.fill(buf.data(), b, n);
      ok = put(buf.data(), n);
    }
    written = offsets[i] + t.nbytes;
  }
  if (!ok || std::fflush(f.get()) != 0) {
    return absl::DataLossError(absl::StrFormat("writing %s: %s", path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace spillway::engine
