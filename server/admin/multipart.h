// ParseMultipartFormData: the parts of a multipart/form-data body (RFC 7578) as the official
// `openai` client (httpx) sends an upload: each part's field name, optional filename and bytes.
// Bounded work: one pass over the body. Pure function; any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace spillway::server::admin {

struct FormPart {
  std::string name;
  std::string filename;  // empty when the part is not a file
  std::string content_type;
  std::string data;
};

// `content_type` is the request's Content-Type header (it carries the boundary).
// InvalidArgument (naming what is wrong) for another content type, a missing boundary or a
// malformed body.
absl::StatusOr<std::vector<FormPart>> ParseMultipartFormData(std::string_view content_type,
                                                             std::string_view body);

}  // namespace spillway::server::admin
