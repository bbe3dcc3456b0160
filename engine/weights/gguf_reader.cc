#include "engine/weights/gguf_reader.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "engine/weights/internal/gguf_format.h"

namespace spillway::engine {
namespace {

// NOTE(lead): limits well above any real model, low enough that a corrupt count cannot make
// us reserve gigabytes before the bounds checks catch it.
constexpr int64_t kMaxStringBytes = 64 << 20;
constexpr int kMaxDims = 4;

using enum internal::GgufValueType;
using internal::kGgufMagic;

// Reads little-endian values from [data, data + size) with bounds checks. Every error names
// the byte offset where the file stopped making sense.
class Cursor {
 public:
  Cursor(const uint8_t* data, int64_t size) : data_(data), size_(size) {}

  int64_t offset() const { return pos_; }
  int64_t remaining() const { return size_ - pos_; }

  template <typename T>
  absl::StatusOr<T> Read(const char* what) {
    if (remaining() < static_cast<int64_t>(sizeof(T))) return Truncated(what);
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  absl::StatusOr<std::string> ReadString(const char* what) {
    SPW_ASSIGN_OR_RETURN(uint64_t len, Read<uint64_t>(what));
    if (len > static_cast<uint64_t>(kMaxStringBytes)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("GGUF %s at byte %d has length %d, over the %d-byte limit", what,
                          pos_ - 8, len, kMaxStringBytes));
    }
    if (static_cast<int64_t>(len) > remaining()) return Truncated(what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += static_cast<int64_t>(len);
    return s;
  }

  absl::Status Truncated(const char* what) const {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF file is truncated: %s at byte %d runs past the end of the file (%d bytes)", what,
        pos_, size_));
  }

 private:
  const uint8_t* data_;
  int64_t size_;
  int64_t pos_ = 0;
};

int64_t MinValueBytes(uint32_t type) {
  switch (type) {
    case kU8:
    case kI8:
    case kBool:
      return 1;
    case kU16:
    case kI16:
      return 2;
    case kU32:
    case kI32:
    case kF32:
      return 4;
    case kU64:
    case kI64:
    case kF64:
    case kString:
      return 8;
    case kArray:
      return 12;
    default:
      return 1;
  }
}

// Reads one scalar of `type` into a widened form.
absl::StatusOr<GgufValue> ReadScalar(Cursor& c, uint32_t type, const std::string& key) {
  GgufValue v;
  switch (type) {
    case kU8: {
      SPW_ASSIGN_OR_RETURN(uint8_t x, c.Read<uint8_t>("value"));
      v.value = int64_t{x};
      break;
    }
    case kI8: {
      SPW_ASSIGN_OR_RETURN(int8_t x, c.Read<int8_t>("value"));
      v.value = int64_t{x};
      break;
    }
    case kU16: {
      SPW_ASSIGN_OR_RETURN(uint16_t x, c.Read<uint16_t>("value"));
      v.value = int64_t{x};
      break;
    }
    case kI16: {
      SPW_ASSIGN_OR_RETURN(int16_t x, c.Read<int16_t>("value"));
      v.value = int64_t{x};
      break;
    }
    case kU32: {
      SPW_ASSIGN_OR_RETURN(uint32_t x, c.Read<uint32_t>("value"));
      v.value = int64_t{x};
      break;
    }
    case kI32: {
      SPW_ASSIGN_OR_RETURN(int32_t x, c.Read<int32_t>("value"));
      v.value = int64_t{x};
      break;
    }
    case kU64: {
      SPW_ASSIGN_OR_RETURN(uint64_t x, c.Read<uint64_t>("value"));
      v.value = x;
      break;
    }
    case kI64: {
      SPW_ASSIGN_OR_RETURN(int64_t x, c.Read<int64_t>("value"));
      v.value = x;
      break;
    }
    case kF32: {
      SPW_ASSIGN_OR_RETURN(float x, c.Read<float>("value"));
      v.value = double{x};
      break;
    }
    case kF64: {
      SPW_ASSIGN_OR_RETURN(double x, c.Read<double>("value"));
      v.value = x;
      break;
    }
    case kBool: {
      SPW_ASSIGN_OR_RETURN(uint8_t x, c.Read<uint8_t>("value"));
      v.value = x != 0;
      break;
    }
    case kString: {
      SPW_ASSIGN_OR_RETURN(v.value, c.ReadString("string value"));
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("GGUF metadata key '%s' has unknown value type %d (at byte %d)", key,
                          type, c.offset() - 4));
  }
  return v;
}

absl::StatusOr<GgufValue> ReadArray(Cursor& c, const std::string& key) {
  SPW_ASSIGN_OR_RETURN(uint32_t elem_type, c.Read<uint32_t>("array element type"));
  SPW_ASSIGN_OR_RETURN(uint64_t count, c.Read<uint64_t>("array length"));
  if (elem_type == kArray || elem_type > kF64) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF metadata key '%s' is an array of unsupported element type %d", key, elem_type));
  }
  if (count > static_cast<uint64_t>(c.remaining() / MinValueBytes(elem_type))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF metadata key '%s' claims %d array elements, more than the %d bytes left can hold",
        key, count, c.remaining()));
  }
  GgufValue out;
  if (elem_type == kString) {
    std::vector<std::string> items;
    items.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      SPW_ASSIGN_OR_RETURN(std::string s, c.ReadString("array string"));
      items.push_back(std::move(s));
    }
    out.value = GgufValue::Array(std::move(items));
  } else if (elem_type == kF32 || elem_type == kF64) {
    std::vector<double> items;
    items.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      SPW_ASSIGN_OR_RETURN(GgufValue v, ReadScalar(c, elem_type, key));
      items.push_back(*v.AsFloat());
    }
    out.value = GgufValue::Array(std::move(items));
  } else if (elem_type == kBool) {
    std::vector<bool> items;
    items.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      SPW_ASSIGN_OR_RETURN(GgufValue v, ReadScalar(c, elem_type, key));
      items.push_back(*v.AsBool());
    }
    out.value = GgufValue::Array(std::move(items));
  } else {
    std::vector<int64_t> items;
    items.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      SPW_ASSIGN_OR_RETURN(GgufValue v, ReadScalar(c, elem_type, key));
      const auto as_int = v.AsInt();
      items.push_back(as_int.value_or(std::numeric_limits<int64_t>::max()));
    }
    out.value = GgufValue::Array(std::move(items));
  }
  return out;
}

absl::StatusOr<GgufTensorInfo> ReadTensorInfo(Cursor& c) {
  GgufTensorInfo info;
  SPW_ASSIGN_OR_RETURN(info.name, c.ReadString("tensor name"));
  SPW_ASSIGN_OR_RETURN(uint32_t n_dims, c.Read<uint32_t>("tensor rank"));
  if (n_dims == 0 || n_dims > kMaxDims) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF tensor '%s' has %d dimensions; spillway supports 1 to %d", info.name,
                        n_dims, kMaxDims));
  }
  int64_t elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    SPW_ASSIGN_OR_RETURN(uint64_t dim, c.Read<uint64_t>("tensor dimension"));
    if (dim == 0 || dim > (uint64_t{1} << 40) ||
        elements > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(dim)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF tensor '%s' has an invalid dimension %d (dimension %d)", info.name, dim, d));
    }
    elements *= static_cast<int64_t>(dim);
    info.shape.push_back(static_cast<int64_t>(dim));
  }
  SPW_ASSIGN_OR_RETURN(uint32_t raw_type, c.Read<uint32_t>("tensor type"));
  const std::optional<GgmlType> type = GgmlTypeFromRaw(raw_type);
  if (!type.has_value() || *type == GgmlType::kQ8_1 || *type == GgmlType::kQ8_K) {
    return absl::UnimplementedError(absl::StrFormat(
        "GGUF tensor '%s' has type %d, which spillway does not support (supported: f32, f16, "
        "bf16, q4_0, q4_1, q8_0, q4_K, q5_K, q6_K)",
        info.name, raw_type));
  }
  info.type = *type;
  const std::optional<int64_t> row = RowBytes(info.type, info.shape[0]);
  if (!row.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF tensor '%s' of type %s has %d values per row, not a multiple of its block size %d",
        info.name, GgmlTypeName(info.type), info.shape[0], BlockElements(info.type)));
  }
  const int64_t rows = elements / info.shape[0];
  if (rows > std::numeric_limits<int64_t>::max() / std::max<int64_t>(*row, 1)) {
    return absl::InvalidArgumentError(absl::StrFormat("GGUF tensor '%s' is too large", info.name));
  }
  info.nbytes = rows * *row;
  SPW_ASSIGN_OR_RETURN(uint64_t offset, c.Read<uint64_t>("tensor offset"));
  if (offset > static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / 2)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF tensor '%s' has an invalid offset %d", info.name, offset));
  }
  info.offset = static_cast<int64_t>(offset);
  return info;
}

}  // namespace

std::optional<int64_t> GgufValue::AsInt() const {
  if (const auto* i = std::get_if<int64_t>(&value)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&value)) {
    if (*u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return static_cast<int64_t>(*u);
    }
  }
  return std::nullopt;
}

std::optional<double> GgufValue::AsFloat() const {
  if (const auto* d = std::get_if<double>(&value)) return *d;
  if (const auto i = AsInt()) return static_cast<double>(*i);
  return std::nullopt;
}

std::optional<bool> GgufValue::AsBool() const {
  if (const auto* b = std::get_if<bool>(&value)) return *b;
  return std::nullopt;
}

const std::string* GgufValue::AsString() const { return std::get_if<std::string>(&value); }

const std::vector<std::string>* GgufValue::AsStrings() const {
  const auto* a = std::get_if<Array>(&value);
  return a ? std::get_if<std::vector<std::string>>(a) : nullptr;
}

const std::vector<int64_t>* GgufValue::AsInts() const {
  const auto* a = std::get_if<Array>(&value);
  return a ? std::get_if<std::vector<int64_t>>(a) : nullptr;
}

const std::vector<double>* GgufValue::AsFloats() const {
  const auto* a = std::get_if<Array>(&value);
  return a ? std::get_if<std::vector<double>>(a) : nullptr;
}

absl::StatusOr<GgufContents> ParseGguf(const uint8_t* data, int64_t size) {
  Cursor c(data, size);
  SPW_ASSIGN_OR_RETURN(uint32_t magic, c.Read<uint32_t>("magic"));
  if (magic != kGgufMagic) {
    return absl::InvalidArgumentError(
        absl::StrFormat("not a GGUF file: the first 4 bytes are 0x%08x, expected \"GGUF\"", magic));
  }
  GgufContents out;
  SPW_ASSIGN_OR_RETURN(out.version, c.Read<uint32_t>("version"));
  if (out.version != 2 && out.version != 3) {
    return absl::UnimplementedError(absl::StrFormat(
        "GGUF version %d is not supported (spillway reads versions 2 and 3)", out.version));
  }
  SPW_ASSIGN_OR_RETURN(uint64_t tensor_count, c.Read<uint64_t>("tensor count"));
  SPW_ASSIGN_OR_RETURN(uint64_t kv_count, c.Read<uint64_t>("metadata count"));
  // A key-value pair takes at least 12 bytes and a tensor info at least 24.
  if (kv_count > static_cast<uint64_t>(c.remaining() / 12) ||
      tensor_count > static_cast<uint64_t>(c.remaining() / 24)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF header claims %d metadata entries and %d tensors, more than a %d-byte file can "
        "hold",
        kv_count, tensor_count, size));
  }
  for (uint64_t i = 0; i < kv_count; ++i) {
    SPW_ASSIGN_OR_RETURN(std::string key, c.ReadString("metadata key"));
    SPW_ASSIGN_OR_RETURN(uint32_t type, c.Read<uint32_t>("metadata value type"));
    absl::StatusOr<GgufValue> value = type == kArray ? ReadArray(c, key) : ReadScalar(c, type, key);
    if (!value.ok()) return value.status();
    out.metadata.insert_or_assign(std::move(key), *std::move(value));
  }
  if (auto it = out.metadata.find("general.alignment"); it != out.metadata.end()) {
    const std::optional<int64_t> a = it->second.AsInt();
    if (!a.has_value() || *a <= 0 || *a > 65536 || (*a & (*a - 1)) != 0) {
      return absl::InvalidArgumentError("GGUF general.alignment must be a power of two <= 65536");
    }
    out.alignment = *a;
  }
  out.tensors.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    SPW_ASSIGN_OR_RETURN(GgufTensorInfo info, ReadTensorInfo(c));
    out.tensors.push_back(std::move(info));
  }
  const int64_t data_start = (c.offset() + out.alignment - 1) / out.alignment * out.alignment;
  for (GgufTensorInfo& t : out.tensors) {
    if (t.offset % out.alignment != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF tensor '%s' starts at data offset %d, not a multiple of the alignment %d", t.name,
          t.offset, out.alignment));
    }
    t.offset += data_start;
    if (t.offset > size || t.nbytes > size - t.offset) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF tensor '%s' (%d bytes at byte %d) runs past the end of the file (%d bytes); the "
          "file is truncated or corrupt",
          t.name, t.nbytes, t.offset, size));
    }
  }
  return out;
}

}  // namespace spillway::engine
