// GrpcServer: the spillway.v1.Inference gRPC service (proto/spillway/v1/inference.proto,
// docs/grpc.md) on the gRPC callback API, plus grpc.health.v1.Health and server reflection.
// It shares the engine with the HTTP front end through openai::GenerationEngine and reuses the
// OpenAI front end's parsing and validation: a gRPC request is turned into the equivalent JSON
// body and parsed by openai::ParseCompletionRequest / ParseChatRequest, so both APIs accept and
// refuse exactly the same inputs (errors keep their absl code, which is gRPC's, and name the
// field). Each streaming call is one ServerWriteReactor fed by its TokenChannel's notifier;
// client cancellation and deadlines cancel the scheduler request (EngineLoop::Cancel and
// Request::deadline), so its KV blocks are freed within one engine step.
// Thread safety: Start, SetServing, Shutdown from one controlling thread; the service itself
// runs on gRPC's threads and the engine-loop thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/openai/generation_engine.h"
#include "server/openai/served_model.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace spillway::server::grpc_api {

struct GrpcServerOptions {
  std::string host = "127.0.0.1";
  int port = 50051;  // 0: any free port (port() tells which)
  // Not empty: Inference calls need metadata `authorization: Bearer <api_key>`
  // (UNAUTHENTICATED otherwise). Health and reflection stay open.
  std::string api_key;
  // More services on the same port (e.g. spillway.v1.Admin, server/admin/); they check their
  // own auth. Must outlive the server.
  std::vector<grpc::Service*> extra_services;
};

class InferenceService;

class GrpcServer {
 public:
  // `model` and `engine` must outlive the server.
  GrpcServer(const openai::ServedModel& model, openai::GenerationEngine& engine);
  ~GrpcServer();

  // Binds and starts serving; health is NOT_SERVING until SetServing(true).
  absl::Status Start(const GrpcServerOptions& options);
  int port() const { return port_; }
  // grpc.health.v1.Health status of "" (the server) and "spillway.v1.Inference"; while not
  // serving, new Inference calls get UNAVAILABLE (draining).
  void SetServing(bool serving);
  // Streams that have not finished yet.
  int64_t num_active_calls() const;
  // Refuses new calls, waits up to `grace_ms` for the calls in flight, cancels the rest.
  void Shutdown(int64_t grace_ms);

 private:
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace spillway::server::grpc_api
