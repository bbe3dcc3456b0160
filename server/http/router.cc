#include "server/http/router.h"

#include "common/check.h"

namespace spillway::server::http {

Router::Router(ErrorPages pages) : pages_(std::move(pages)) {
  SPW_CHECK(pages_.not_found && pages_.method_not_allowed && pages_.body_too_large &&
            pages_.malformed);
}

void Router::Add(std::string method, std::string path, Handler handler) {
  std::string allow;
  SPW_CHECK(Find(method, path, &allow) == nullptr) << method << " " << path << " added twice";
  routes_.push_back({std::move(method), std::move(path), std::move(handler)});
}

void Router::AddPrefix(std::string method, std::string prefix, Handler handler) {
  for (const Route& r : routes_) {
    SPW_CHECK(!(r.prefix && r.method == method && r.path == prefix))
        << method << " " << prefix << "* added twice";
  }
  routes_.push_back({std::move(method), std::move(prefix), std::move(handler), /*prefix=*/true});
}

const Handler* Router::Find(std::string_view method, std::string_view path,
                            std::string* allow) const {
  allow->clear();
  for (const Route& r : routes_) {
    if (r.prefix || r.path != path) continue;
    if (r.method == method) return &r.handler;
    if (!allow->empty()) *allow += ", ";
    *allow += r.method;
  }
  if (!allow->empty()) return nullptr;
  for (const Route& r : routes_) {
    if (!r.prefix || !path.starts_with(r.path)) continue;
    if (r.method == method) return &r.handler;
    if (!allow->empty()) *allow += ", ";
    *allow += r.method;
  }
  return nullptr;
}

HttpResponse Router::RouteError(std::string_view method, std::string_view path,
                                const std::string& allow) const {
  if (allow.empty()) return pages_.not_found(method, path);
  HttpResponse r = pages_.method_not_allowed(method, path, allow);
  r.headers.emplace_back("Allow", allow);
  return r;
}

HttpResponse Router::RouteErrorForTesting(std::string_view method, std::string_view path) const {
  std::string allow;
  if (Find(method, path, &allow) != nullptr) return {.status = 0};
  return RouteError(method, path, allow);
}

void Router::Dispatch(const HttpRequest& request, const Exchange& exchange) const {
  if (gate_) {
    if (std::optional<HttpResponse> refusal = gate_(request)) {
      exchange.Reply(std::move(*refusal));
      return;
    }
  }
  std::string allow;
  if (const Handler* h = Find(request.method, request.path, &allow)) {
    (*h)(request, exchange);
    return;
  }
  exchange.Reply(RouteError(request.method, request.path, allow));
}

}  // namespace spillway::server::http
