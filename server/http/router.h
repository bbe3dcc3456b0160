// Router: (method, path) -> endpoint handler, and the error pages for what no endpoint
// handles: an unknown path (404), a known path with another method (405 with Allow), a body
// over the limit (413), a malformed HTTP request (400). The pages are supplied by the API
// layer (server/openai) so that they carry its error shape. Paths match exactly; the query
// string is ignored. Built before the server starts; const (so thread-safe) afterwards.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/http/exchange.h"
#include "server/http/http_message.h"

namespace spillway::server::http {

using Handler = std::function<void(const HttpRequest&, Exchange)>;

struct ErrorPages {
  std::function<HttpResponse(std::string_view method, std::string_view path)> not_found;
  std::function<HttpResponse(std::string_view method, std::string_view path,
                             std::string_view allow)>
      method_not_allowed;
  std::function<HttpResponse(int64_t limit_bytes)> body_too_large;
  std::function<HttpResponse(std::string_view detail)> malformed;
};

class Router {
 public:
  explicit Router(ErrorPages pages);

  // REQUIRES: (method, path) not added before.
  void Add(std::string method, std::string path, Handler handler);
  // Handles every path that starts with `prefix` (e.g. "/v1/files/" for /v1/files/{id}) and
  // matches no exact route; the handler parses the rest. REQUIRES: not added before.
  void AddPrefix(std::string method, std::string prefix, Handler handler);

  // Runs first on every request; a response it returns is sent instead (auth, draining).
  using Gate = std::function<std::optional<HttpResponse>(const HttpRequest&)>;
  void SetGate(Gate gate) { gate_ = std::move(gate); }

  // Calls the handler of request.method / request.path, or replies with an error page.
  void Dispatch(const HttpRequest& request, const Exchange& exchange) const;

  // The 404 / 405 response Dispatch would send for (method, path); status 0 when a handler
  // matches.
  HttpResponse RouteErrorForTesting(std::string_view method, std::string_view path) const;

  const ErrorPages& pages() const { return pages_; }

 private:
  struct Route {
    std::string method;
    std::string path;
    Handler handler;
    bool prefix = false;
  };
  // The handler of (method, path), or null; *allow lists the methods the path has.
  const Handler* Find(std::string_view method, std::string_view path, std::string* allow) const;
  // 404, or 405 with an Allow header when `allow` is not empty.
  HttpResponse RouteError(std::string_view method, std::string_view path,
                          const std::string& allow) const;

  ErrorPages pages_;
  std::vector<Route> routes_;
  Gate gate_;
};

}  // namespace spillway::server::http
