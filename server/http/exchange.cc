#include "server/http/exchange.h"

#include "server/http/internal/session.h"

namespace spillway::server::http {

void Exchange::Reply(HttpResponse response) const { session_->Reply(seq_, std::move(response)); }
void Exchange::StartStream(const HttpResponse& head) const { session_->StartStream(seq_, head); }
void Exchange::Send(std::string data) const { session_->Send(seq_, std::move(data)); }
void Exchange::EndStream() const { session_->EndStream(seq_); }
void Exchange::OnDisconnect(std::function<void()> fn) const {
  session_->SetOnDisconnect(seq_, std::move(fn));
}
void Exchange::Keep(std::shared_ptr<void> state) const { session_->Keep(seq_, std::move(state)); }
bool Exchange::active() const { return session_->IsActive(seq_); }
void Exchange::AddLogField(std::string_view key, int64_t value) const {
  session_->AddLogField(seq_, key, value);
}
void Exchange::Post(std::function<void()> fn) const { session_->Post(std::move(fn)); }
std::function<void(std::function<void()>)> Exchange::Poster() const { return session_->Poster(); }

}  // namespace spillway::server::http
