// AdminGrpcService: spillway.v1.Admin (proto/spillway/v1/admin.proto), the admin API's files
// and fine-tuning jobs over gRPC, answering with the same JSON objects as AdminApi. Every call
// checks `authorization` metadata against the admin scope of the AccessPolicy.
// Thread safety: gRPC's threads call it concurrently; FileStore and FineTuneJobs are
// thread-safe, and they and the policy must outlive the gRPC server.
#pragma once

#include <grpcpp/impl/service_type.h>

#include <memory>

#include "server/admin/file_store.h"
#include "server/admin/fine_tune_jobs.h"
#include "server/http/auth.h"

namespace spillway::server::admin {

// The service, to register with the gRPC server (GrpcServerOptions::extra_services).
std::unique_ptr<grpc::Service> MakeAdminGrpcService(FileStore& files, FineTuneJobs& jobs,
                                                    const http::AccessPolicy& policy);

}  // namespace spillway::server::admin
