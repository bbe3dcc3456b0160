#include "server/admin/multipart.h"

#include "absl/strings/str_cat.h"
#include "server/admin/split.h"

namespace spillway::server::admin {
namespace {

// The value of `key` among `; key=value` parameters (quotes removed, no escapes: httpx
// percent-encodes quotes in names).
std::string Param(std::string_view header, std::string_view key) {
  for (std::string_view p : Split(header, ';')) {
    p = Trim(p);
    const size_t eq = p.find('=');
    if (eq == std::string_view::npos) continue;
    if (!EqualsIgnoreCase(Trim(p.substr(0, eq)), key)) continue;
    std::string_view v = Trim(p.substr(eq + 1));
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return std::string(v);
  }
  return {};
}

}  // namespace

absl::StatusOr<std::vector<FormPart>> ParseMultipartFormData(std::string_view content_type,
                                                             std::string_view body) {
  const std::string_view type = Trim(content_type);
  if (!EqualsIgnoreCase(type.substr(0, 19), "multipart/form-data")) {
    return absl::InvalidArgumentError("the body must be multipart/form-data");
  }
  const std::string boundary = Param(content_type, "boundary");
  if (boundary.empty() || boundary.size() > 200) {
    return absl::InvalidArgumentError("multipart/form-data without a boundary");
  }
  const std::string delim = absl::StrCat("--", boundary);
  const std::string next = absl::StrCat("\r\n--", boundary);
  std::vector<FormPart> parts;
  size_t pos = body.find(delim);
  if (pos == std::string_view::npos) return absl::InvalidArgumentError("no multipart boundary");
  pos += delim.size();
  while (true) {
    if (body.substr(pos, 2) == "--") return parts;  // the closing delimiter
    if (body.substr(pos, 2) != "\r\n") return absl::InvalidArgumentError("malformed multipart");
    pos += 2;
    const size_t header_end = body.find("\r\n\r\n", pos);
    if (header_end == std::string_view::npos) {
      return absl::InvalidArgumentError("malformed multipart part header");
    }
    FormPart part;
    for (std::string_view line : Split(body.substr(pos, header_end - pos), '\n')) {
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      const std::string_view name = Trim(line.substr(0, colon));
      const std::string_view value = Trim(line.substr(colon + 1));
      if (EqualsIgnoreCase(name, "content-disposition")) {
        part.name = Param(value, "name");
        part.filename = Param(value, "filename");
      } else if (EqualsIgnoreCase(name, "content-type")) {
        part.content_type = std::string(value);
      }
    }
    const size_t data_start = header_end + 4;
    const size_t data_end = body.find(next, data_start);
    if (data_end == std::string_view::npos) {
      return absl::InvalidArgumentError("multipart body without its closing boundary");
    }
    part.data = std::string(body.substr(data_start, data_end - data_start));
    parts.push_back(std::move(part));
    pos = data_end + next.size();
  }
}

}  // namespace spillway::server::admin
