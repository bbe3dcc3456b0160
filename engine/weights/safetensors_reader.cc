#include "engine/weights/safetensors_reader.h"

#include <algorithm>
#include <boost/json.hpp>
#include <limits>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/string_views.h"

namespace spillway::engine {
namespace {

namespace json = boost::json;

struct DtypeInfo {
  std::string_view name;
  int64_t bytes;                 // bytes per element
  std::optional<GgmlType> type;  // nullopt: a valid safetensors dtype spillway does not load
};

// Every dtype the safetensors format defines (as of safetensors 0.5).
constexpr DtypeInfo kDtypes[] = {
    {"F32", 4, GgmlType::kF32},   {"F16", 2, GgmlType::kF16},   {"BF16", 2, GgmlType::kBF16},
    {"F64", 8, std::nullopt},     {"I64", 8, std::nullopt},     {"U64", 8, std::nullopt},
    {"I32", 4, std::nullopt},     {"U32", 4, std::nullopt},     {"I16", 2, std::nullopt},
    {"U16", 2, std::nullopt},     {"I8", 1, std::nullopt},      {"U8", 1, std::nullopt},
    {"BOOL", 1, std::nullopt},    {"F8_E4M3", 1, std::nullopt}, {"F8_E5M2", 1, std::nullopt},
    {"F8_E8M0", 1, std::nullopt},
};

const DtypeInfo* FindDtype(std::string_view name) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.name == name) return &info;
  }
  return nullptr;
}

std::optional<int64_t> AsNonNegativeInt(const json::value& v) {
  if (v.is_int64()) {
    if (v.get_int64() < 0) return std::nullopt;
    return v.get_int64();
  }
  if (v.is_uint64()) {
    if (v.get_uint64() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return std::nullopt;
    }
    return static_cast<int64_t>(v.get_uint64());
  }
  return std::nullopt;
}

class HeaderParser {
 public:
  HeaderParser(const std::string& path, int64_t data_size) : path_(path), data_size_(data_size) {}

  absl::Status Error(std::string_view tensor, std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("safetensors file ", path_, ": tensor \"",
                                                   AbslSv(tensor), "\": ", AbslSv(what)));
  }

  absl::StatusOr<SafetensorsTensor> ParseTensor(std::string_view name, const json::value& v,
                                                const uint8_t* data_begin) const {
    const json::object* obj = v.if_object();
    if (obj == nullptr) return Error(name, "entry is not a JSON object");

    const json::value* dtype_v = obj->if_contains("dtype");
    if (dtype_v == nullptr || !dtype_v->is_string()) {
      return Error(name, "missing or non-string \"dtype\"");
    }
    const std::string_view dtype_name = dtype_v->get_string();
    const DtypeInfo* dtype = FindDtype(dtype_name);
    if (dtype == nullptr)
      return Error(name, absl::StrCat("unknown dtype \"", AbslSv(dtype_name), "\""));
    if (!dtype->type.has_value()) {
      return absl::UnimplementedError(
          absl::StrCat("safetensors file ", path_, ": tensor \"", AbslSv(name), "\": dtype ",
                       AbslSv(dtype_name), " is not supported (spillway loads F32, F16 and BF16)"));
    }

    SafetensorsTensor t;
    t.name = std::string(name);
    t.type = *dtype->type;

    const json::value* shape_v = obj->if_contains("shape");
    if (shape_v == nullptr || !shape_v->is_array()) {
      return Error(name, "missing or non-array \"shape\"");
    }
    int64_t num_elements = 1;
    for (const json::value& dim_v : shape_v->get_array()) {
      const std::optional<int64_t> dim = AsNonNegativeInt(dim_v);
      if (!dim.has_value()) {
        return Error(name, absl::StrCat("shape ", json::serialize(*shape_v),
                                        " has a dimension that is not a non-negative integer"));
      }
      t.shape.push_back(*dim);
      if (*dim != 0 && num_elements > std::numeric_limits<int64_t>::max() / dtype->bytes / *dim) {
        return Error(name, absl::StrCat("shape ", json::serialize(*shape_v), " is too large"));
      }
      num_elements *= *dim;
    }
    const int64_t expected_bytes = num_elements * dtype->bytes;

    const json::value* offsets_v = obj->if_contains("data_offsets");
    if (offsets_v == nullptr || !offsets_v->is_array() || offsets_v->get_array().size() != 2) {
      return Error(name, "missing \"data_offsets\" or not an array of two integers");
    }
    const std::optional<int64_t> begin = AsNonNegativeInt(offsets_v->get_array()[0]);
    const std::optional<int64_t> end = AsNonNegativeInt(offsets_v->get_array()[1]);
    if (!begin.has_value() || !end.has_value()) {
      return Error(name, absl::StrCat("data_offsets ", json::serialize(*offsets_v),
                                      " are not non-negative integers"));
    }
    if (*begin > *end) {
      return Error(name,
                   absl::StrCat("data_offsets [", *begin, ", ", *end, "] end before they begin"));
    }
    if (*end > data_size_) {
      return Error(name, absl::StrCat("data_offsets [", *begin, ", ", *end,
                                      ") run past the end of the data buffer (", data_size_,
                                      " bytes; the file is truncated or the header is wrong)"));
    }
    if (*end - *begin != expected_bytes) {
      return Error(name, absl::StrCat("data_offsets [", *begin, ", ", *end, ") hold ",
                                      *end - *begin, " bytes but shape ", json::serialize(*shape_v),
                                      " of ", AbslSv(dtype_name), " needs ", expected_bytes));
    }
    t.nbytes = expected_bytes;
    t.data = expected_bytes == 0 ? nullptr : data_begin + *begin;
    return t;
  }

 private:
  const std::string& path_;
  int64_t data_size_;
};

}  // namespace

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  SPW_ASSIGN_OR_RETURN(internal::MappedFile mapped, internal::MappedFile::Open(path));
  SPW_ASSIGN_OR_RETURN(SafetensorsFile file, Parse(mapped.data(), mapped.size(), path));
  // The tensors point into `mapped`; moving the mapping does not move the bytes.
  file.file_ = std::move(mapped);
  return file;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(const uint8_t* bytes, int64_t size,
                                                       const std::string& path_for_messages) {
  const std::string& path = path_for_messages;
  auto file_error = [&](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors file ", path, ": ", AbslSv(what)));
  };
  if (size < 8) {
    return file_error(
        absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > static_cast<uint64_t>(kMaxSafetensorsHeaderBytes)) {
    return file_error(absl::StrCat("header length ", header_len, " bytes exceeds the limit of ",
                                   kMaxSafetensorsHeaderBytes, " (corrupt file?)"));
  }
  if (static_cast<int64_t>(header_len) > size - 8) {
    return file_error(absl::StrCat("header length ", header_len, " bytes runs past the end of the ",
                                   size, "-byte file (truncated file?)"));
  }
  const std::string_view header_text(reinterpret_cast<const char*>(bytes + 8), header_len);
  const uint8_t* data_begin = bytes + 8 + header_len;
  const int64_t data_size = size - 8 - static_cast<int64_t>(header_len);

  json::value header;
  try {
    boost::system::error_code ec;
    header = json::parse(header_text, ec);
    if (ec) return file_error(absl::StrCat("header is not valid JSON: ", ec.message()));
  } catch (const std::exception& e) {
    return file_error(absl::StrCat("cannot parse header: ", e.what()));
  }
  const json::object* root = header.if_object();
  if (root == nullptr) return file_error("header is not a JSON object");

  SafetensorsFile file;
  file.path_ = path;
  const HeaderParser parser(path, data_size);
  for (const auto& [key, value] : *root) {
    if (key == "__metadata__") {
      const json::object* meta = value.if_object();
      if (meta == nullptr) return file_error("\"__metadata__\" is not a JSON object");
      for (const auto& [mkey, mvalue] : *meta) {
        if (!mvalue.is_string()) {
          return file_error(
              absl::StrCat("\"__metadata__\" value of \"", AbslSv(mkey), "\" is not a string"));
        }
        file.metadata_.emplace(std::string(mkey), std::string(mvalue.get_string()));
      }
      continue;
    }
    SPW_ASSIGN_OR_RETURN(SafetensorsTensor tensor, parser.ParseTensor(key, value, data_begin));
    file.tensors_.push_back(std::move(tensor));
  }
  std::sort(file.tensors_.begin(), file.tensors_.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.name < b.name; });
  for (size_t i = 1; i < file.tensors_.size(); ++i) {
    if (file.tensors_[i].name == file.tensors_[i - 1].name) {
      return file_error(absl::StrCat("tensor \"", file.tensors_[i].name, "\" appears twice"));
    }
  }
  return file;
}

const SafetensorsTensor* SafetensorsFile::Find(std::string_view name) const {
  auto it =
      std::lower_bound(tensors_.begin(), tensors_.end(), name,
                       [](const SafetensorsTensor& t, std::string_view n) { return t.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

}  // namespace spillway::engine
