#include "server/http/http_server.h"

#include <pthread.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>

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
    acceptor.async_accept(net::make_strand(ioc),
                          [this](boost::system::error_code ec, tcp::socket socket) {
                            if (ec) {
                              if (ec != net::error::operation_aborted && acceptor.is_open())
                                Accept();
                              return;
                            }
                            boost::system::error_code ignored;
                            socket.set_option(tcp::no_delay(true), ignored);
                            auto session = std::make_shared<internal::Session>(
                                std::move(socket), router,
                                internal::SessionOptions{.max_body_bytes = options.max_body_bytes,
                                                         .idle_timeout = options.idle_timeout});
                            Track(session);
                            session->Run();
                            Accept();
                          });
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
