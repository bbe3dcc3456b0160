// Exchange: one HTTP request's way back to its client. An endpoint either Reply()s once, or
// StartStream()s and then Send()s chunks until EndStream(). The answer may come later, from
// any callback, as long as it runs on the exchange's strand: Post() gets there from any
// thread (e.g. a TokenChannel notifier on the engine-loop thread). Calls on an exchange that
// has ended (answered, or its client went away) do nothing.
//
// Thread safety: Post() is safe from any thread; everything else must run on the strand (the
// handler is called there). Exchange is a cheap copyable handle that keeps its connection
// object alive while held.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "server/http/http_message.h"

namespace spillway::server::http {

namespace internal {
class Session;
}  // namespace internal

class Exchange {
 public:
  Exchange(std::shared_ptr<internal::Session> session, uint64_t seq)
      : session_(std::move(session)), seq_(seq) {}

  // Sends the whole response and ends the exchange.
  void Reply(HttpResponse response) const;
  // Sends the status line and headers of a streamed body (chunked on HTTP/1.1).
  void StartStream(const HttpResponse& head) const;
  // Queues `data` as the next piece of the streamed body. Never blocks.
  void Send(std::string data) const;
  // Ends the streamed body and the exchange.
  void EndStream() const;

  // `on_disconnect` runs (on the strand, at most once) if the client goes away before the
  // exchange ends — e.g. to cancel the request's generation.
  void OnDisconnect(std::function<void()> on_disconnect) const;
  // Keeps `state` alive until the exchange ends; it is released on the strand afterwards.
  void Keep(std::shared_ptr<void> state) const;
  // True while the exchange is unanswered and its client connected.
  bool active() const;
  // Appends ` key=value` to the exchange's access log line (e.g. token counts). Values must
  // not hold secrets or prompt text.
  void AddLogField(std::string_view key, int64_t value) const;

  // Runs `fn` on this exchange's strand. Safe from any thread; `fn` runs even after the
  // exchange ended (it should then find active() false).
  void Post(std::function<void()> fn) const;
  // A function that does what Post does but holds only the strand, not the connection: for
  // callbacks that may outlive the exchange (a TokenChannel notifier). Safe from any thread.
  std::function<void(std::function<void()>)> Poster() const;

 private:
  std::shared_ptr<internal::Session> session_;
  uint64_t seq_;
};

}  // namespace spillway::server::http
