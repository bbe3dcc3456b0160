#include "server/http/internal/session.h"

#include <spdlog/spdlog.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/http/auth.h"
#include "server/http/exchange.h"
#include "server/http/router.h"

namespace spillway::server::http::internal {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

constexpr std::chrono::seconds kLingerTime{2};

std::string StatusLine(int status) {
  const auto reason = bhttp::obsolete_reason(static_cast<bhttp::status>(status));
  return absl::StrCat("HTTP/1.1 ", status, " ",
                      reason.empty() ? std::string("Unknown") : std::string(reason), "\r\n");
}

std::string Headers(const HttpResponse& r) {
  std::string out = absl::StrCat(StatusLine(r.status), "Server: spillway\r\n");
  if (!r.content_type.empty()) absl::StrAppend(&out, "Content-Type: ", r.content_type, "\r\n");
  for (const auto& [name, value] : r.headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  return out;
}

// Errors that mean the peer is gone or idle, as opposed to a malformed request.
bool IsHttpSyntaxError(const beast::error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() &&
         ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
}

}  // namespace

Session::Session(net::ip::tcp::socket socket, const Router& router, SessionOptions options)
    : stream_(std::move(socket)), router_(router), options_(options) {}

Session::~Session() = default;

void Session::Run() {
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->ReadRequest(); });
}

void Session::Shutdown() {
  net::post(stream_.get_executor(), [self = shared_from_this()] { self->PeerGone(); });
}

void Session::Post(std::function<void()> fn) { net::post(stream_.get_executor(), std::move(fn)); }

std::function<void(std::function<void()>)> Session::Poster() {
  return [executor = stream_.get_executor()](std::function<void()> fn) {
    net::post(executor, std::move(fn));
  };
}

void Session::ReadRequest() {
  if (closed_ || watching_) return;  // a pending watch read calls back here when data comes
  if (buffer_.size() == 0) {
    // NOTE(http): the wait for a request's first bytes is idle time (--idle-timeout-s); from
    // the first byte on, the whole request must arrive within --read-timeout-s, so a client
    // that trickles its header or body (slowloris) cannot hold a connection for long.
    stream_.expires_after(options_.idle_timeout);
    Watch();  // calls back here once bytes are buffered
    return;
  }
  parser_.emplace();
  parser_->body_limit(static_cast<uint64_t>(options_.max_body_bytes));
  parser_->header_limit(static_cast<uint32_t>(options_.max_header_bytes));
  stream_.expires_after(options_.header_timeout);
  bhttp::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

void Session::OnHeader(beast::error_code ec) {
  if (closed_) return;
  if (ec == bhttp::error::body_limit) {
    RefuseAndClose(router_.pages().body_too_large(options_.max_body_bytes));
    return;
  }
  if (ec == bhttp::error::header_limit) {
    HttpResponse r = router_.pages().malformed(
        absl::StrCat("request header fields larger than ", options_.max_header_bytes, " bytes"));
    r.status = 431;
    RefuseAndClose(r);
    return;
  }
  if (ec) {
    if (IsHttpSyntaxError(ec)) {
      RefuseAndClose(router_.pages().malformed(ec.message()));
    } else {
      Close();
    }
    return;
  }
  const auto& fields = parser_->get();
  if (beast::iequals(fields[bhttp::field::expect], "100-continue")) {
    Write("HTTP/1.1 100 Continue\r\n\r\n");
  }
  if (parser_->is_done()) {
    OnRequest({});
    return;
  }
  stream_.expires_after(options_.header_timeout);
  bhttp::async_read(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRequest(ec); });
}

void Session::OnRequest(beast::error_code ec) {
  if (closed_) return;
  if (ec == bhttp::error::body_limit) {
    RefuseAndClose(router_.pages().body_too_large(options_.max_body_bytes));
    return;
  }
  if (ec) {
    if (IsHttpSyntaxError(ec)) {
      RefuseAndClose(router_.pages().malformed(ec.message()));
    } else {
      Close();
    }
    return;
  }
  stream_.expires_never();
  bhttp::request<bhttp::string_body> msg = parser_->release();
  parser_.reset();
  HttpRequest request;
  request.method = std::string(msg.method_string());
  request.target = std::string(msg.target());
  request.path = request.target.substr(0, request.target.find('?'));
  request.body = std::move(msg.body());
  for (const auto& field : msg) {
    request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  const std::string_view client_id = FindHeader(request, "x-request-id");
  request.request_id = IsValidRequestId(client_id) ? std::string(client_id) : NewRequestId();
  request_id_ = request.request_id;
  method_ = request.method;
  path_ = request.path;
  status_ = 0;
  log_fields_.clear();
  started_ = std::chrono::steady_clock::now();
  // NOTE(http): HTTP/1.0 clients get `Connection: close` and an unchunked stream.
  request.keep_alive = msg.version() >= 11 && msg.keep_alive();
  ++seq_;
  exchange_open_ = true;
  answer_complete_ = false;
  keep_alive_ = request.keep_alive;
  chunked_ = msg.version() >= 11;
  Watch();
  router_.Dispatch(request, Exchange(shared_from_this(), seq_));
}

// NOTE(http): a client that pipelined its next request is evidently still there, and a read
// pending here would keep EndExchange from parsing that request; so no watch then (a
// disconnect still shows as a failed write).
void Session::Watch() {
  if (watching_ || closed_ || buffer_.size() > 0) return;
  watching_ = true;
  stream_.async_read_some(
      net::buffer(watch_buffer_),
      [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWatch(ec, n); });
}

void Session::OnWatch(beast::error_code ec, size_t bytes) {
  watching_ = false;
  if (closed_) return;
  if (ec) {  // EOF, reset, or the idle timeout of a keep-alive connection
    PeerGone();
    return;
  }
  auto space = buffer_.prepare(bytes);
  net::buffer_copy(space, net::buffer(watch_buffer_.data(), bytes));
  buffer_.commit(bytes);
  if (exchange_open_) {
    Watch();
  } else {
    ReadRequest();
  }
}

void Session::Write(std::string bytes) {
  if (closed_) return;
  write_pending_ += bytes;
  if (writing_) return;
  writing_ = true;
  write_inflight_.swap(write_pending_);
  write_pending_.clear();
  net::async_write(
      stream_, net::buffer(write_inflight_),
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWrite(ec); });
}

void Session::OnWrite(beast::error_code ec) {
  writing_ = false;
  if (closed_) return;
  if (ec) {
    PeerGone();
    return;
  }
  if (!write_pending_.empty()) {
    Write("");
    return;
  }
  if (linger_) {
    LingerClose();
    return;
  }
  if (exchange_open_ && answer_complete_) EndExchange();
}

void Session::LogExchange(std::string_view outcome) {
  // NOTE(ops): never the body (prompt text) or headers (API key); only what identifies it.
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_)
          .count();
  spdlog::info("request id={} method={} path={} status={} duration_ms={:.1f}{}{}", request_id_,
               method_, path_, status_, ms, log_fields_, outcome);
}

void Session::EndExchange() {
  LogExchange("");
  exchange_open_ = false;
  on_disconnect_ = nullptr;
  if (kept_) net::post(stream_.get_executor(), [kept = std::move(kept_)] {});
  if (!keep_alive_) {
    beast::error_code ignored;
    stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ignored);
    Close();
    return;
  }
  stream_.expires_after(options_.idle_timeout);
  if (!watching_) ReadRequest();
}

void Session::PeerGone() {
  if (exchange_open_) {
    LogExchange(" client_gone=true");
    exchange_open_ = false;
    std::function<void()> fn = std::move(on_disconnect_);
    on_disconnect_ = nullptr;
    if (fn) fn();
  }
  Close();
}

void Session::Close() {
  if (closed_) return;
  closed_ = true;
  beast::error_code ignored;
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  stream_.close();
  if (kept_) net::post(stream_.get_executor(), [kept = std::move(kept_)] {});
}

void Session::RefuseAndClose(const HttpResponse& response) {
  keep_alive_ = false;
  linger_ = true;
  Write(absl::StrCat(Headers(response), "Content-Length: ", response.body.size(),
                     "\r\nConnection: close\r\n\r\n", response.body));
}

// After refusing a request whose body is still coming, read and drop that body for a while
// so the client can finish sending and then read the refusal (closing at once would reset
// the connection and lose the response).
void Session::LingerClose() {
  beast::error_code ignored;
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ignored);
  stream_.expires_after(kLingerTime);
  stream_.async_read_some(net::buffer(watch_buffer_),
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            if (ec) {
                              self->Close();
                            } else {
                              self->LingerClose();
                            }
                          });
}

void Session::Reply(uint64_t seq, HttpResponse response) {
  if (!Current(seq) || answer_complete_) return;
  answer_complete_ = true;
  status_ = response.status;
  Write(absl::StrCat(Headers(response), "X-Request-Id: ", request_id_, "\r\n",
                     "Content-Length: ", response.body.size(), "\r\n",
                     keep_alive_ ? "" : "Connection: close\r\n", "\r\n", response.body));
}

void Session::StartStream(uint64_t seq, const HttpResponse& head) {
  if (!Current(seq) || answer_complete_) return;
  if (!chunked_) keep_alive_ = false;  // HTTP/1.0: the body ends when the connection does
  status_ = head.status;
  Write(absl::StrCat(Headers(head), "X-Request-Id: ", request_id_, "\r\n",
                     "Cache-Control: no-cache\r\n",
                     chunked_ ? "Transfer-Encoding: chunked\r\n" : "",
                     keep_alive_ ? "" : "Connection: close\r\n", "\r\n"));
}

void Session::Send(uint64_t seq, std::string data) {
  if (!Current(seq) || answer_complete_ || data.empty()) return;
  if (chunked_) {
    Write(absl::StrCat(absl::StrFormat("%x\r\n", data.size()), data, "\r\n"));
  } else {
    Write(std::move(data));
  }
}

void Session::EndStream(uint64_t seq) {
  if (!Current(seq) || answer_complete_) return;
  answer_complete_ = true;
  if (chunked_) Write("0\r\n\r\n");
  if (!writing_) EndExchange();
}

void Session::SetOnDisconnect(uint64_t seq, std::function<void()> fn) {
  if (Current(seq)) on_disconnect_ = std::move(fn);
}

void Session::Keep(uint64_t seq, std::shared_ptr<void> state) {
  if (Current(seq)) {
    kept_ = std::move(state);
  } else if (state) {
    net::post(stream_.get_executor(), [kept = std::move(state)] {});
  }
}

bool Session::IsActive(uint64_t seq) const { return Current(seq) && !answer_complete_; }

void Session::AddLogField(uint64_t seq, std::string_view key, int64_t value) {
  if (Current(seq)) absl::StrAppend(&log_fields_, " ", std::string(key), "=", value);
}

}  // namespace spillway::server::http::internal
