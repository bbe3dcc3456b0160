#include "server/admin/admin_api.h"

#include <boost/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "server/admin/multipart.h"
#include "server/admin/split.h"
#include "server/http/auth.h"
#include "server/openai/api_error.h"

namespace spillway::server::admin {
namespace {

namespace json = boost::json;

constexpr std::string_view kFiles = "/v1/files";
constexpr std::string_view kJobs = "/v1/fine_tuning/jobs";

void ReplyError(const http::Exchange& e, const absl::Status& st) {
  e.Reply(openai::ErrorResponse(openai::ApiErrorFromStatus(st)));
}

void ReplyJson(const http::Exchange& e, const absl::StatusOr<json::object>& o) {
  if (!o.ok()) return ReplyError(e, o.status());
  e.Reply(openai::JsonResponse(json::serialize(*o)));
}

absl::StatusOr<int64_t> Limit(const http::HttpRequest& r, int64_t fallback) {
  const std::string v = AdminApi::QueryParam(r.target, "limit");
  if (v.empty()) return fallback;
  int64_t n = 0;
  if (!absl::SimpleAtoi(v, &n) || n < 1 || n > 100) {
    return openai::InvalidParamError("limit", "limit must be an integer in 1..100");
  }
  return n;
}

}  // namespace

std::string AdminApi::QueryParam(std::string_view target, std::string_view key) {
  const size_t q = target.find('?');
  if (q == std::string_view::npos) return {};
  for (std::string_view kv : Split(target.substr(q + 1), '&')) {
    const size_t eq = kv.find('=');
    if (kv.substr(0, eq) == key)
      return eq == std::string_view::npos ? "" : std::string(kv.substr(eq + 1));
  }
  return {};
}

void AdminApi::Register(http::Router& router) {
  router.Add("POST", std::string(kFiles),
             [this](const http::HttpRequest& r, http::Exchange e) { Upload(r, e); });
  router.Add("GET", std::string(kFiles), [this](const http::HttpRequest&, http::Exchange e) {
    json::array data;
    for (const FileInfo& f : files_.List()) data.push_back(FileObject(f));
    e.Reply(openai::JsonResponse(json::serialize(
        json::object{{"object", "list"}, {"data", std::move(data)}, {"has_more", false}})));
  });
  for (const char* m : {"GET", "DELETE"}) {
    router.AddPrefix(m, absl::StrFormat("%s/", kFiles),
                     [this](const http::HttpRequest& r, http::Exchange e) { FileRoute(r, e); });
  }
  router.Add("POST", std::string(kJobs), [this](const http::HttpRequest& r, http::Exchange e) {
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (ec || !v.is_object()) {
      return ReplyError(e, absl::InvalidArgumentError("the body must be a JSON object"));
    }
    ReplyJson(e, jobs_.Create(v.as_object()));
  });
  router.Add("GET", std::string(kJobs), [this](const http::HttpRequest& r, http::Exchange e) {
    absl::StatusOr<int64_t> limit = Limit(r, 20);
    if (!limit.ok()) return ReplyError(e, limit.status());
    ReplyJson(e, jobs_.List(QueryParam(r.target, "after"), *limit));
  });
  for (const char* m : {"GET", "POST"}) {
    router.AddPrefix(m, absl::StrFormat("%s/", kJobs),
                     [this](const http::HttpRequest& r, http::Exchange e) { JobRoute(r, e); });
  }
}

void AdminApi::Upload(const http::HttpRequest& r, const http::Exchange& e) {
  absl::StatusOr<std::vector<FormPart>> parts =
      ParseMultipartFormData(http::FindHeader(r, "content-type"), r.body);
  if (!parts.ok()) return ReplyError(e, parts.status());
  const FormPart* file = nullptr;
  std::string purpose;
  for (const FormPart& p : *parts) {
    if (p.name == "file") file = &p;
    if (p.name == "purpose") purpose = p.data;
  }
  if (file == nullptr) return ReplyError(e, openai::InvalidParamError("file", "no 'file' part"));
  if (purpose.empty()) {
    return ReplyError(e, openai::InvalidParamError("purpose", "no 'purpose' part"));
  }
  absl::StatusOr<FileInfo> info = files_.Put(file->filename, purpose, file->data);
  if (!info.ok()) return ReplyError(e, info.status());
  e.Reply(openai::JsonResponse(json::serialize(FileObject(*info))));
}

void AdminApi::FileRoute(const http::HttpRequest& r, const http::Exchange& e) {
  // /v1/files/{id} or /v1/files/{id}/content; any other shape (e.g. "..") is not found.
  const std::vector<std::string_view> parts =
      Split(std::string_view(r.path).substr(kFiles.size() + 1), '/');
  const std::vector<std::string> rest(parts.begin(), parts.end());
  const bool content = rest.size() == 2 && rest[1] == "content" && r.method == "GET";
  if (rest.empty() || rest.size() > 2 || (rest.size() == 2 && !content) ||
      !FileStore::IsValidId(rest[0])) {
    return ReplyError(e, FileNotFoundError(rest.empty() ? "" : rest[0]));
  }
  const std::string& id = rest[0];
  if (content) {
    absl::StatusOr<std::string> data = files_.Content(id);
    if (!data.ok()) return ReplyError(e, data.status());
    e.Reply({.status = 200, .content_type = "application/octet-stream", .body = *std::move(data)});
    return;
  }
  if (r.method == "DELETE") {
    if (absl::Status st = files_.Delete(id); !st.ok()) return ReplyError(e, st);
    e.Reply(openai::JsonResponse(
        json::serialize(json::object{{"object", "file"}, {"id", id}, {"deleted", true}})));
    return;
  }
  absl::StatusOr<FileInfo> info = files_.Get(id);
  if (!info.ok()) return ReplyError(e, info.status());
  e.Reply(openai::JsonResponse(json::serialize(FileObject(*info))));
}

void AdminApi::JobRoute(const http::HttpRequest& r, const http::Exchange& e) {
  const std::vector<std::string_view> parts =
      Split(std::string_view(r.path).substr(kJobs.size() + 1), '/');
  const std::vector<std::string> rest(parts.begin(), parts.end());
  const std::string id = rest.empty() ? "" : rest[0];
  const std::string action = rest.size() == 2 ? rest[1] : "";
  if (rest.size() == 1 && r.method == "GET") return ReplyJson(e, jobs_.Get(id));
  if (rest.size() == 2 && action == "cancel" && r.method == "POST") {
    return ReplyJson(e, jobs_.Cancel(id));
  }
  if (rest.size() == 2 && action == "events" && r.method == "GET") {
    absl::StatusOr<int64_t> limit = Limit(r, 20);
    if (!limit.ok()) return ReplyError(e, limit.status());
    return ReplyJson(e, jobs_.Events(id, QueryParam(r.target, "after"), *limit));
  }
  if (rest.size() == 2 && action == "checkpoints" && r.method == "GET") {
    return ReplyJson(e, jobs_.Checkpoints(id));
  }
  e.Reply(openai::ErrorResponse(openai::PathNotFoundError(r.method, r.path)));
}

}  // namespace spillway::server::admin
