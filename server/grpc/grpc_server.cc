#include "server/grpc/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <boost/json.hpp>
#include <chrono>
#include <deque>
#include <span>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/check.h"
#include "server/http/auth.h"
#include "server/openai/api_error.h"
#include "server/openai/info_endpoints.h"
#include "server/openai/request_parser.h"
#include "spillway/v1/inference.grpc.pb.h"

namespace spillway::server::grpc_api {
namespace {

namespace json = boost::json;
namespace pb = ::spillway::v1;

constexpr char kServiceName[] = "spillway.v1.Inference";

// NOTE(grpc): errors keep their absl code (absl's codes are gRPC's canonical codes, the same
// ones the HTTP error table in server/openai/api_error.cc maps); the field at fault is put in
// front of the message when the message does not name it already.
grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  std::string message(s.message());
  if (std::optional<std::string> param = openai::ParamOf(s);
      param && !absl::StrContains(message, *param)) {
    message = absl::StrCat(*param, ": ", message);
  }
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), message);
}

// One call's access log line, the gRPC twin of the HTTP server's (docs/operating.md "Logs"):
// the request id (the client's `x-request-id` metadata when valid, else a new one, sent back
// as initial metadata), method, final status, duration and token counts. Never the prompt or
// the metadata (the API key).
class CallLog {
 public:
  CallLog(grpc::CallbackServerContext* context, std::string_view method)
      : method_(method), started_(std::chrono::steady_clock::now()) {
    const auto& md = context->client_metadata();
    const auto it = md.find("x-request-id");
    const std::string_view client_id = it == md.end()
                                           ? std::string_view()
                                           : std::string_view(it->second.data(), it->second.size());
    id_ = http::IsValidRequestId(client_id) ? std::string(client_id) : http::NewRequestId();
    context->AddInitialMetadata("x-request-id", id_);
  }

  void Write(const grpc::Status& status, const scheduler::Usage* usage = nullptr) const {
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_)
            .count();
    const std::string code =
        absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
    if (usage == nullptr) {
      spdlog::info("grpc request id={} method={} status={} duration_ms={:.1f}", id_, method_, code,
                   ms);
    } else {
      spdlog::info(
          "grpc request id={} method={} status={} duration_ms={:.1f} prompt_tokens={} "
          "completion_tokens={} cached_tokens={}",
          id_, method_, code, ms, usage->prompt_tokens, usage->completion_tokens,
          usage->cached_tokens);
    }
  }

 private:
  std::string id_;
  std::string method_;
  std::chrono::steady_clock::time_point started_;
};

// NOTE(grpc): a gRPC request becomes the JSON body the HTTP API would get for it, and goes
// through the very same parser, so validation, prompt handling, chat templates, stop rules
// and sampling defaults cannot drift apart between the two front ends.
void AddOptions(const pb::SamplingOptions& o, bool chat, json::object& j) {
  if (o.has_max_tokens()) j["max_tokens"] = o.max_tokens();
  if (o.has_min_tokens()) j["min_tokens"] = o.min_tokens();
  if (o.has_temperature()) j["temperature"] = static_cast<double>(o.temperature());
  if (o.has_top_p()) j["top_p"] = static_cast<double>(o.top_p());
  if (o.has_top_k()) j["top_k"] = o.top_k();
  if (o.has_min_p()) j["min_p"] = static_cast<double>(o.min_p());
  if (o.has_n()) j["n"] = o.n();
  if (o.stop_size() > 0) {
    json::array stop;
    for (const std::string& s : o.stop()) stop.emplace_back(s);
    j["stop"] = std::move(stop);
  }
  if (o.stop_token_ids_size() > 0) {
    json::array ids;
    for (int32_t id : o.stop_token_ids()) ids.emplace_back(id);
    j["stop_token_ids"] = std::move(ids);
  }
  if (o.has_seed()) j["seed"] = o.seed();
  if (o.has_presence_penalty()) j["presence_penalty"] = static_cast<double>(o.presence_penalty());
  if (o.has_frequency_penalty()) {
    j["frequency_penalty"] = static_cast<double>(o.frequency_penalty());
  }
  if (o.has_repetition_penalty()) {
    j["repetition_penalty"] = static_cast<double>(o.repetition_penalty());
  }
  if (o.logit_bias_size() > 0) {
    json::object bias;
    for (const auto& [id, b] : o.logit_bias()) bias[std::to_string(id)] = static_cast<double>(b);
    j["logit_bias"] = std::move(bias);
  }
  if (o.has_logprobs()) {
    if (chat) {
      j["logprobs"] = true;
      j["top_logprobs"] = o.logprobs();
    } else {
      j["logprobs"] = o.logprobs();
    }
  }
  if (o.has_ignore_eos()) j["ignore_eos"] = o.ignore_eos();
  if (o.has_priority()) j["priority"] = o.priority();
}

json::array MessagesJson(const pb::ChatRequest& r) {
  json::array messages;
  for (const pb::ChatMessage& m : r.messages()) {
    messages.emplace_back(json::object{{"role", m.role()}, {"content", m.content()}});
  }
  return messages;
}

std::string GenerateBody(const pb::GenerateRequest& r) {
  json::object j;
  if (!r.model().empty()) j["model"] = r.model();
  if (r.prompt_case() == pb::GenerateRequest::kText) {
    j["prompt"] = r.text();
  } else if (r.prompt_case() == pb::GenerateRequest::kTokenIds) {
    json::array ids;
    for (int32_t id : r.token_ids().ids()) ids.emplace_back(id);
    j["prompt"] = std::move(ids);
  }
  AddOptions(r.options(), /*chat=*/false, j);
  return json::serialize(j);
}

std::string ChatBody(const pb::ChatRequest& r) {
  json::object j;
  if (!r.model().empty()) j["model"] = r.model();
  j["messages"] = MessagesJson(r);
  if (r.has_add_generation_prompt()) j["add_generation_prompt"] = r.add_generation_prompt();
  AddOptions(r.options(), /*chat=*/true, j);
  return json::serialize(j);
}

std::string TokenText(const engine::Tokenizer& tok, engine::TokenId id) {
  return tok.Decode(std::span(&id, 1), /*skip_special=*/false);
}

}  // namespace

class InferenceService final : public pb::Inference::CallbackService {
 public:
  InferenceService(const openai::ServedModel& model, openai::GenerationEngine& engine)
      : model_(model), engine_(engine) {}

  void set_api_key(std::string key) { api_key_ = std::move(key); }
  void set_serving(bool serving) { serving_.store(serving); }

  // Why a new call may not run: a missing or wrong API key, or draining.
  absl::Status Admit(const grpc::CallbackServerContext* context) const {
    if (!api_key_.empty()) {
      const auto& md = context->client_metadata();
      const auto it = md.find("authorization");
      const std::string_view value = it == md.end()
                                         ? std::string_view()
                                         : std::string_view(it->second.data(), it->second.size());
      if (!http::ConstantTimeEquals(http::BearerToken(value), api_key_)) {
        return absl::UnauthenticatedError(
            "Incorrect API key provided: send metadata 'authorization: Bearer <key>'");
      }
    }
    if (!serving_.load()) return absl::UnavailableError("the server is not serving (draining)");
    return absl::OkStatus();
  }

  grpc::ServerWriteReactor<pb::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const pb::GenerateRequest* request) override {
    CallLog log(context, "Generate");
    if (absl::Status s = Admit(context); !s.ok()) return Stream::Refused(*this, std::move(log), s);
    if (request->prompt_case() == pb::GenerateRequest::PROMPT_NOT_SET) {
      return Stream::Refused(
          *this, std::move(log),
          openai::InvalidParamError("prompt", "'text' or 'token_ids' is required"));
    }
    return Stream::Begin(*this, context, std::move(log),
                         openai::ParseCompletionRequest(GenerateBody(*request), model_));
  }

  grpc::ServerWriteReactor<pb::GenerateResponse>* Chat(grpc::CallbackServerContext* context,
                                                       const pb::ChatRequest* request) override {
    CallLog log(context, "Chat");
    if (absl::Status s = Admit(context); !s.ok()) return Stream::Refused(*this, std::move(log), s);
    return Stream::Begin(*this, context, std::move(log),
                         openai::ParseChatRequest(ChatBody(*request), model_));
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const pb::TokenizeRequest* request,
                                     pb::TokenizeResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const CallLog log(context, "Tokenize");
    const auto finish = [&](const grpc::Status& status) {
      log.Write(status);
      reactor->Finish(status);
      return reactor;
    };
    if (absl::Status s = Admit(context); !s.ok()) return finish(ToGrpcStatus(s));
    json::object j;
    if (!request->model().empty()) j["model"] = request->model();
    if (request->input_case() == pb::TokenizeRequest::kChat) {
      j["messages"] = MessagesJson(request->chat());
      if (request->chat().has_add_generation_prompt()) {
        j["add_generation_prompt"] = request->chat().add_generation_prompt();
      }
    } else {
      j["prompt"] = request->text();
    }
    if (request->has_add_special_tokens()) j["add_special_tokens"] = request->add_special_tokens();
    j["return_token_strs"] = true;
    absl::StatusOr<std::string> out = openai::Tokenize(json::serialize(j), model_);
    if (!out.ok()) return finish(ToGrpcStatus(out.status()));
    const json::object o = json::parse(*out).as_object();
    for (const json::value& v : o.at("tokens").as_array()) {
      response->add_token_ids(static_cast<int32_t>(v.to_number<int64_t>()));
    }
    for (const json::value& v : o.at("token_strs").as_array()) {
      response->add_tokens(std::string(v.as_string()));
    }
    response->set_count(response->token_ids_size());
    response->set_max_model_len(model_.context_tokens);
    return finish(grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const pb::ListModelsRequest* /*request*/,
                                       pb::ListModelsResponse* response) override {
    const CallLog log(context, "ListModels");
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (absl::Status s = Admit(context); !s.ok()) {
      log.Write(ToGrpcStatus(s));
      reactor->Finish(ToGrpcStatus(s));
      return reactor;
    }
    pb::Model* m = response->add_models();
    m->set_id(model_.name);
    m->set_max_model_len(model_.context_tokens);
    m->set_root(model_.path);
    m->set_created(model_.created_unix);
    // Served LoRA adapters (`root`: their source), usable as `model` like the base model.
    if (model_.adapters != nullptr) {
      for (const adapters::AdapterInfo& a : model_.adapters->List()) {
        pb::Model* am = response->add_models();
        am->set_id(a.name);
        am->set_max_model_len(model_.context_tokens);
        am->set_root(a.source);
        am->set_created(a.created_unix);
      }
    }
    log.Write(grpc::Status::OK);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  int64_t num_active() const { return num_active_.load(); }

 private:
  // One streaming call: the scheduler request's events become GenerateResponse messages,
  // written one at a time. Deletes itself in OnDone.
  class Stream final : public grpc::ServerWriteReactor<pb::GenerateResponse> {
   public:
    static Stream* Refused(InferenceService& service, CallLog log, const absl::Status& status) {
      auto* s = new Stream(service, std::move(log));
      s->Close(ToGrpcStatus(status));
      return s;
    }

    static Stream* Begin(InferenceService& service, grpc::CallbackServerContext* context,
                         CallLog log, absl::StatusOr<openai::GenerationSpec> spec) {
      if (!spec.ok()) return Refused(service, std::move(log), spec.status());
      SPW_CHECK(spec->requests.size() == 1);
      auto* s = new Stream(service, std::move(log));
      s->logprobs_ = spec->logprobs;
      scheduler::Request request = std::move(spec->requests[0]);
      request.id = service.engine_.NextRequestId();
      s->id_ = request.id;
      const auto deadline = context->deadline();
      if (deadline != std::chrono::system_clock::time_point::max()) {
        const auto left = deadline - std::chrono::system_clock::now();
        request.deadline = std::chrono::steady_clock::now() +
                           std::chrono::duration_cast<std::chrono::steady_clock::duration>(left);
      }
      request.channel = std::make_shared<scheduler::TokenChannel>([link = s->link_] {
        absl::MutexLock lock(&link->mu);
        if (link->stream != nullptr) link->stream->Pump();
      });
      s->channel_ = request.channel;
      if (absl::Status st = service.engine_.Submit(std::move(request)); !st.ok()) {
        s->Detach();
        s->Close(ToGrpcStatus(st));
        return s;
      }
      {
        absl::MutexLock lock(&s->mu_);
        s->submitted_ = true;
      }
      s->Pump();  // events that arrived before submitted_ was set
      return s;
    }

    void OnWriteDone(bool ok) override {
      bool cancel = false;
      {
        absl::MutexLock lock(&mu_);
        writing_ = false;
        if (!pending_.empty()) pending_.pop_front();
        if (!ok && !cancelled_) {
          cancelled_ = true;
          cancel = true;
        }
      }
      if (cancel) service_.engine_.Cancel(id_);
      Pump();
    }

    void OnCancel() override {
      bool cancel = false;
      {
        absl::MutexLock lock(&mu_);
        if (!cancelled_) {
          cancelled_ = true;
          cancel = submitted_ && !closed_;
        }
      }
      if (cancel) {
        spdlog::debug("gRPC client cancelled: cancelling request {}", id_);
        service_.engine_.Cancel(id_);
      }
    }

    void OnDone() override {
      Detach();
      {
        absl::MutexLock lock(&mu_);
        log_.Write(final_status_, saw_usage_ ? &usage_ : nullptr);
      }
      delete this;
    }

   private:
    // What the channel's notifier holds: the stream, until OnDone.
    struct Link {
      absl::Mutex mu;
      Stream* stream ABSL_GUARDED_BY(mu) = nullptr;
    };

    Stream(InferenceService& service, CallLog log)
        : service_(service), log_(std::move(log)), link_(std::make_shared<Link>()) {
      service_.num_active_.fetch_add(1);
      absl::MutexLock lock(&link_->mu);
      link_->stream = this;
    }
    ~Stream() override { service_.num_active_.fetch_sub(1); }

    void Detach() {
      absl::MutexLock lock(&link_->mu);
      link_->stream = nullptr;
    }

    // Ends a call that never reached the scheduler (refused, or its Submit failed).
    void Close(const grpc::Status& status) {
      {
        absl::MutexLock lock(&mu_);
        finished_ = true;
        final_status_ = status;
      }
      Finish(status);
    }

    // Drains the channel and starts the next write, or finishes once everything is written.
    // Called by the notifier (engine-loop thread) and after each write (gRPC thread).
    void Pump() {
      const pb::GenerateResponse* next = nullptr;
      bool finish = false;
      grpc::Status status;
      {
        absl::MutexLock lock(&mu_);
        if (!submitted_ || writing_ || finished_) return;
        if (!closed_) {
          for (scheduler::TokenEvent& e : channel_->Drain(&closed_)) Take(e);
        }
        if (cancelled_) pending_.clear();  // nobody reads them any more
        if (!pending_.empty()) {
          writing_ = true;
          next = &pending_.front();
        } else if (closed_) {
          finished_ = true;
          finish = true;
          status = cancelled_ && status_.ok() ? grpc::Status::CANCELLED : status_;
          final_status_ = status;
        }
      }
      // NOTE(grpc): no lock is held across StartWrite / Finish: gRPC may run reactions on
      // another thread at once, and the deque's front stays put while a write is in flight.
      if (next != nullptr) StartWrite(next);
      if (finish) Finish(status);
    }

    void Take(const scheduler::TokenEvent& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      using scheduler::FinishReason;
      if (e.finish_reason == FinishReason::kCancelled || e.finish_reason == FinishReason::kError) {
        if (status_.ok()) {
          status_ = ToGrpcStatus(e.error.ok() ? absl::InternalError("generation failed") : e.error);
        }
      } else {
        pb::GenerateResponse r;
        r.set_index(e.index);
        r.set_text(e.text);
        for (engine::TokenId t : e.token_ids) r.add_token_ids(t);
        if (logprobs_ >= 0) {
          const engine::Tokenizer& tok = *service_.model_.tokenizer;
          for (const engine::SampleResult& s : e.logprobs) {
            pb::TokenLogprob* lp = r.add_logprobs();
            lp->set_token_id(s.token);
            lp->set_token(TokenText(tok, s.token));
            lp->set_logprob(s.logprob);
            for (const engine::TokenLogprob& t : s.top) {
              pb::TopLogprob* top = lp->add_top_logprobs();
              top->set_token_id(t.token);
              top->set_token(TokenText(tok, t.token));
              top->set_logprob(t.logprob);
            }
          }
        }
        if (e.finish_reason == FinishReason::kStop) r.set_finish_reason("stop");
        if (e.finish_reason == FinishReason::kLength) r.set_finish_reason("length");
        if (e.stop_string) r.set_stop_string(*e.stop_string);
        if (e.stop_token) r.set_stop_token_id(*e.stop_token);
        pending_.push_back(std::move(r));
      }
      if (e.usage) {
        usage_ = *e.usage;
        saw_usage_ = true;
      }
      if (e.usage && status_.ok()) {
        pb::GenerateResponse r;
        pb::Usage* u = r.mutable_usage();
        u->set_prompt_tokens(e.usage->prompt_tokens);
        u->set_completion_tokens(e.usage->completion_tokens);
        u->set_cached_tokens(e.usage->cached_tokens);
        u->set_total_tokens(e.usage->prompt_tokens + e.usage->completion_tokens);
        pending_.push_back(std::move(r));
      }
    }

    InferenceService& service_;
    const CallLog log_;
    const std::shared_ptr<Link> link_;
    scheduler::RequestId id_ = 0;
    int32_t logprobs_ = -1;
    std::shared_ptr<scheduler::TokenChannel> channel_;
    absl::Mutex mu_;
    std::deque<pb::GenerateResponse> pending_ ABSL_GUARDED_BY(mu_);
    grpc::Status status_ ABSL_GUARDED_BY(mu_);
    bool submitted_ ABSL_GUARDED_BY(mu_) = false;
    bool writing_ ABSL_GUARDED_BY(mu_) = false;
    bool closed_ ABSL_GUARDED_BY(mu_) = false;
    bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
    // For the access log line written in OnDone.
    grpc::Status final_status_ ABSL_GUARDED_BY(mu_) = grpc::Status::CANCELLED;
    scheduler::Usage usage_ ABSL_GUARDED_BY(mu_);
    bool saw_usage_ ABSL_GUARDED_BY(mu_) = false;
  };

  const openai::ServedModel& model_;
  openai::GenerationEngine& engine_;
  std::atomic<int64_t> num_active_{0};
  std::string api_key_;  // set before Start
  std::atomic<bool> serving_{false};
};

GrpcServer::GrpcServer(const openai::ServedModel& model, openai::GenerationEngine& engine)
    : service_(std::make_unique<InferenceService>(model, engine)) {}

GrpcServer::~GrpcServer() { Shutdown(0); }

absl::Status GrpcServer::Start(const GrpcServerOptions& options) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(
      absl::StrContains(options.host, ':') ? absl::StrCat("[", options.host, "]") : options.host,
      ":", options.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
  service_->set_api_key(options.api_key);
  builder.RegisterService(service_.get());
  for (grpc::Service* extra : options.extra_services) builder.RegisterService(extra);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("gRPC: cannot listen on ", address));
  }
  SetServing(false);
  return absl::OkStatus();
}

void GrpcServer::SetServing(bool serving) {
  service_->set_serving(serving);
  if (server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(kServiceName, serving);
}

int64_t GrpcServer::num_active_calls() const { return service_->num_active(); }

void GrpcServer::Shutdown(int64_t grace_ms) {
  if (server_ == nullptr) return;
  SetServing(false);
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
  server_->Wait();
  server_.reset();
}

}  // namespace spillway::server::grpc_api
