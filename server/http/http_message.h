// HttpRequest / HttpResponse: the plain data that passes between the HTTP front end (Beast
// sessions, router) and the endpoints. No Beast types leak out of server/http/.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace spillway::server::http {

struct HttpRequest {
  std::string method = {};  // "GET", "POST", ...
  std::string path = {};    // the target without its query string
  std::string target = {};  // as sent
  std::string body = {};
  bool keep_alive = true;
  // Header fields as sent (names in their original case; see FindHeader in auth.h).
  std::vector<std::pair<std::string, std::string>> headers = {};
  // The client's X-Request-Id when sane, else a generated one; echoed in the response.
  std::string request_id = {};
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body = {};  // ignored by Exchange::StartStream
  std::vector<std::pair<std::string, std::string>> headers = {};  // extra, e.g. Allow, Retry-After
};

}  // namespace spillway::server::http
