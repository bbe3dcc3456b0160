// Session: one client connection (Beast tcp_stream on its own strand). Reads a request,
// hands it to the Router with an Exchange, writes the answer, and loops while the client
// keeps the connection alive (HTTP/1.1 keep-alive; an idle connection costs one pending read
// and no thread). While an exchange is open, one read stays pending to notice a client that
// goes away (it also collects a pipelined next request); the exchange's on_disconnect then
// runs. All methods run on the strand; Exchange forwards to them.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "server/http/http_message.h"

namespace spillway::server::http {
class Router;
}

namespace spillway::server::http::internal {

struct SessionOptions {
  int64_t max_body_bytes = 4 << 20;
  std::chrono::seconds idle_timeout{75};    // keep-alive connections with no request
  std::chrono::seconds header_timeout{30};  // to read a request once it has begun
  int64_t max_header_bytes = 16 << 10;      // 431 past it
  // Held for the connection's life (HttpServer counts connections by it).
  std::shared_ptr<void> connection_slot = nullptr;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(boost::asio::ip::tcp::socket socket, const Router& router, SessionOptions options);
  ~Session();

  // Starts reading requests.
  void Run();
  // Closes the connection now (server shutdown). Thread-safe.
  void Shutdown();

  // Exchange's operations; `seq` names the exchange, stale ones are ignored.
  void Reply(uint64_t seq, HttpResponse response);
  void StartStream(uint64_t seq, const HttpResponse& head);
  void Send(uint64_t seq, std::string data);
  void EndStream(uint64_t seq);
  void SetOnDisconnect(uint64_t seq, std::function<void()> fn);
  void Keep(uint64_t seq, std::shared_ptr<void> state);
  bool IsActive(uint64_t seq) const;
  void AddLogField(uint64_t seq, std::string_view key, int64_t value);
  void Post(std::function<void()> fn);
  std::function<void(std::function<void()>)> Poster();

 private:
  using Parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

  void ReadRequest();
  void OnHeader(boost::beast::error_code ec);
  void OnRequest(boost::beast::error_code ec);
  void Watch();
  void OnWatch(boost::beast::error_code ec, size_t bytes);
  void Write(std::string bytes);
  void OnWrite(boost::beast::error_code ec);
  // Replies to a request the server could not read (413, 400) and closes after draining.
  void RefuseAndClose(const HttpResponse& response);
  void EndExchange();
  void PeerGone();
  void Close();
  void LingerClose();
  bool Current(uint64_t seq) const { return exchange_open_ && seq == seq_; }
  // Logs the access line of the exchange that ends (id, method, path, status, duration).
  void LogExchange(std::string_view outcome);

  boost::beast::tcp_stream stream_;
  const Router& router_;
  const SessionOptions options_;
  boost::beast::flat_buffer buffer_;
  std::optional<Parser> parser_;

  uint64_t seq_ = 0;
  bool exchange_open_ = false;    // a request is being answered
  bool answer_complete_ = false;  // its answer is fully queued
  bool keep_alive_ = true;
  bool chunked_ = false;  // streamed body with chunked encoding (HTTP/1.1)
  bool closed_ = false;
  bool watching_ = false;
  bool linger_ = false;
  std::array<char, 4096> watch_buffer_{};
  std::function<void()> on_disconnect_;
  std::shared_ptr<void> kept_;

  // The open exchange, for its X-Request-Id header and its access log line.
  std::string request_id_;
  std::string method_;
  std::string path_;
  int status_ = 0;
  std::chrono::steady_clock::time_point started_;
  std::string log_fields_;  // ` key=value` pairs the endpoint added (Exchange::AddLogField)

  std::string write_pending_;
  std::string write_inflight_;
  bool writing_ = false;
};

}  // namespace spillway::server::http::internal
