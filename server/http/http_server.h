// HttpServer: the HTTP/1.1 front end — an acceptor and a pool of io_context threads running
// one Beast session per connection (keep-alive, async everywhere, so thousands of idle
// connections cost memory, not threads). Requests go to a Router. The server never blocks a
// network thread on the engine: endpoints answer through their Exchange, later, from posts.
//
// Thread safety: Start, Stop and Join from one controlling thread; port() from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/http/router.h"

namespace spillway::server::http {

namespace internal {
class Session;
}

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (see port())
  int num_threads = 2;
  int64_t max_body_bytes = 4 << 20;
  std::chrono::seconds idle_timeout{75};    // keep-alive connection with no request
  std::chrono::seconds header_timeout{30};  // to read a request (slow clients) once begun
  int64_t max_header_bytes = 16 << 10;      // 431 past it
  // Open connections at most; a connection past it gets a 503 and is closed at once.
  int max_connections = 4096;
};

class HttpServer {
 public:
  // `router` must outlive the server.
  HttpServer(const Router& router, HttpServerOptions options);
  ~HttpServer();  // Stop() and Join()

  // Binds and listens, then starts the network threads. Fails (Unavailable / InvalidArgument)
  // when the address cannot be bound, naming it.
  [[nodiscard]] absl::Status Start();
  // The bound port (useful with port 0). REQUIRES: Start() succeeded.
  int port() const { return port_; }

  // Stops accepting connections; open connections continue.
  void StopAccepting();
  // Closes every open connection (their exchanges see a disconnect), then stops the threads.
  void Stop();
  void Join();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace spillway::server::http
