#include "server/http/http_server.h"

#include <pthread.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "server/http/internal/session.h"

namespace spillway::server::http {

namespace net = boost::asio;
using tcp = net::ip::tcp;

struct HttpServer::Impl {
  Impl(const Router& r, HttpServerOptions o)
      : router(r),
        options(std::move(o)),
        work(net::make_work_guard(ioc)),
        acceptor(net::make_strand(ioc)) {}

  void Accept() {
    acceptor.async_accept(
        net::make_strand(ioc), [this](boost::system::error_code ec, tcp::socket socket) {
          if (ec) {
            if (ec != net::error::operation_aborted && acceptor.is_open()) Accept();
            return;
          }
          boost::system::error_code ignored;
          if (open_connections->load() >= options.max_connections) {
            RefuseBusy(socket);
            Accept();
            return;
          }
          socket.set_option(tcp::no_delay(true), ignored);
          open_connections->fetch_add(1);
          std::shared_ptr<void> slot(nullptr,
                                     [count = open_connections](void*) { count->fetch_sub(1); });
          auto session = std::make_shared<internal::Session>(
              std::move(socket), router,
              internal::SessionOptions{.max_body_bytes = options.max_body_bytes,
                                       .idle_timeout = options.idle_timeout,
                                       .header_timeout = options.header_timeout,
                                       .max_header_bytes = options.max_header_bytes,
                                       .connection_slot = std::move(slot)});
          Track(session);
          session->Run();
          Accept();
        });
  }

  // NOTE(ops): past --max-connections a new connection gets a short 503 written without
  // waiting (a fresh socket's send buffer takes it) and is closed; nothing is read from it.
  static void RefuseBusy(tcp::socket& socket) {
    static constexpr std::string_view kBusy =
        "HTTP/1.1 503 Service Unavailable\r\nServer: spillway\r\nContent-Type: "
        "application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 104\r\n\r\n"
        "{\"error\":{\"message\":\"too many open connections\",\"type\":\"service_unavailable\","
        "\"param\":null,\"code\":null}}\n";
    boost::system::error_code ignored;
    socket.non_blocking(true, ignored);
    socket.write_some(net::buffer(kBusy.data(), kBusy.size()), ignored);
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    socket.close(ignored);
  }

  void Track(const std::shared_ptr<internal::Session>& s) {
    absl::MutexLock lock(&mu);
    if (sessions.size() >= 2 * last_pruned_size + 64) {
      std::erase_if(sessions, [](const auto& w) { return w.expired(); });
      last_pruned_size = sessions.size();
    }
    sessions.push_back(s);
  }

  const Router& router;
  const HttpServerOptions options;
  net::io_context ioc;
  net::executor_work_guard<net::io_context::executor_type> work;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  std::shared_ptr<std::atomic<int>> open_connections = std::make_shared<std::atomic<int>>(0);
  absl::Mutex mu;
  std::vector<std::weak_ptr<internal::Session>> sessions ABSL_GUARDED_BY(mu);
  size_t last_pruned_size ABSL_GUARDED_BY(mu) = 0;
};

HttpServer::HttpServer(const Router& router, HttpServerOptions options)
    : impl_(std::make_unique<Impl>(router, std::move(options))) {}

HttpServer::~HttpServer() {
  Stop();
  Join();
}

absl::Status HttpServer::Start() {
  const HttpServerOptions& o = impl_->options;
  boost::system::error_code ec;
  const net::ip::address address = net::ip::make_address(o.host, ec);
  if (ec)
    return absl::InvalidArgumentError(absl::StrCat("bad --host '", o.host, "': ", ec.message()));
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(o.port));
  tcp::acceptor& a = impl_->acceptor;
  if (a.open(endpoint.protocol(), ec); !ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", o.host, ":", o.port, ": ", ec.message()));
  }
  port_ = a.local_endpoint().port();
  impl_->Accept();
  for (int i = 0; i < std::max(1, o.num_threads); ++i) {
    impl_->threads.emplace_back([this, i] {
      pthread_setname_np(pthread_self(), absl::StrCat("spw-http-", i).c_str());
      impl_->ioc.run();
    });
  }
  return absl::OkStatus();
}

void HttpServer::StopAccepting() {
  net::post(impl_->acceptor.get_executor(), [impl = impl_.get()] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
  });
}

void HttpServer::Stop() {
  if (impl_->threads.empty()) return;
  StopAccepting();
  std::vector<std::shared_ptr<internal::Session>> open;
  {
    absl::MutexLock lock(&impl_->mu);
    for (const auto& w : impl_->sessions) {
      if (auto s = w.lock()) open.push_back(std::move(s));
    }
    impl_->sessions.clear();
  }
  for (const auto& s : open) s->Shutdown();
  impl_->work.reset();
}

void HttpServer::Join() {
  for (std::thread& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace spillway::server::http
