#include "server/admin/admin_grpc_service.h"

#include <grpcpp/grpcpp.h>

#include <boost/json.hpp>

#include "absl/strings/str_format.h"
#include "spillway/v1/admin.grpc.pb.h"

namespace spillway::server::admin {
namespace {

namespace json = boost::json;
namespace pb = ::spillway::v1;

grpc::Status ToGrpc(const absl::Status& st) {
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

grpc::Status Reply(const absl::StatusOr<json::object>& o, pb::AdminObject* out) {
  if (!o.ok()) return ToGrpc(o.status());
  out->set_json(json::serialize(*o));
  if (const json::value* id = o->if_contains("id"); id != nullptr && id->is_string()) {
    out->set_id(std::string(id->get_string()));
  }
  const json::value* object = o->if_contains("object");
  const json::value* status = o->if_contains("status");
  if (object != nullptr && *object == "fine_tuning.job" && status != nullptr &&
      status->is_string()) {
    out->set_status(std::string(status->get_string()));
  }
  return grpc::Status::OK;
}

class AdminGrpcService final : public pb::Admin::Service {
 public:
  AdminGrpcService(FileStore& files, FineTuneJobs& jobs, const http::AccessPolicy& policy)
      : files_(files), jobs_(jobs), policy_(policy) {}

  grpc::Status CreateFile(grpc::ServerContext* c, const pb::CreateFileRequest* r,
                          pb::AdminObject* out) override {
    if (grpc::Status a = Authorize(c); !a.ok()) return a;
    absl::StatusOr<FileInfo> f = files_.Put(r->filename(), r->purpose(), r->content());
    if (!f.ok()) return ToGrpc(f.status());
    return Reply(FileObject(*f), out);
  }
  grpc::Status ListFiles(grpc::ServerContext* c, const pb::ListRequest*,
                         pb::AdminObject* out) override {
    if (grpc::Status a = Authorize(c); !a.ok()) return a;
    json::array data;
    for (const FileInfo& f : files_.List()) data.push_back(FileObject(f));
    return Reply(json::object{{"object", "list"}, {"data", std::move(data)}, {"has_more", false}},
                 out);
  }
  grpc::Status GetFile(grpc::ServerContext* c, const pb::IdRequest* r,
                       pb::AdminObject* out) override {
    if (grpc::Status a = Authorize(c); !a.ok()) return a;
    absl::StatusOr<FileInfo> f = files_.Get(r->id());
    if (!f.ok()) return ToGrpc(f.status());
    return Reply(FileObject(*f), out);
  }
  grpc::Status DeleteFile(grpc::ServerContext* c, const pb::IdRequest* r,
                          pb::AdminObject* out) override {
    if (grpc::Status a = Authorize(c); !a.ok()) return a;
    if (absl::Status st = files_.Delete(r->id()); !st.ok()) return ToGrpc(st);
    return Reply(json::object{{"object", "file"}, {"id", r->id()}, {"deleted", true}}, out);
  }
  grpc::Status GetFileContent(grpc::ServerContext* c, const pb::IdRequest* r,
                              pb::FileContent* out) override {
    if (grpc::Status a = Authorize(c); !a.ok()) return a;
    absl::StatusOr<std::string> data = files_.Content(r->id());
    if (!data.ok()) return ToGrpc(data.status());
    out->set_content(*std::move(data));
    return grpc::Status::OK;
  }
  grpc::Status CreateFineTuningJob(grpc::ServerContext* c, const pb::CreateFineTuningJobRequest* r,
                                   pb::AdminObject* out) override {
    if (grpc::Status a = Authorize(c); !a.ok()) return a;
    boost::system::error_code ec;
    json::value v = json::parse(r->json(), ec);
    if (ec || !v.is_object()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "json must be a JSON object");
    }
    return Reply(jobs_.Create(v.as_object()), out);
  }
  grpc::Status ListFineTuningJobs(grpc::ServerContext* c, const pb::ListRequest* r,
                                  pb::AdminObject* out) override {
    if (grpc::Status a = Authorize(c); !a.ok()) return a;
    return Reply(jobs_.List(r->after(), Limit(*r)), out);
  }
  grpc::Status GetFineTuningJob(grpc::ServerContext* c, const pb::IdRequest* r,
                                pb::AdminObject* out) override {
    if (grpc::Status a = Authorize(c); !a.ok()) return a;
    return Reply(jobs_.Get(r->id()), out);
  }
  grpc::Status CancelFineTuningJob(grpc::ServerContext* c, const pb::IdRequest* r,
                                   pb::AdminObject* out) override {
    if (grpc::Status a = Authorize(c); !a.ok()) return a;
    return Reply(jobs_.Cancel(r->id()), out);
  }
  grpc::Status ListFineTuningEvents(grpc::ServerContext* c, const pb::ListRequest* r,
                                    pb::AdminObject* out) override {
    if (grpc::Status a = Authorize(c); !a.ok()) return a;
    return Reply(jobs_.Events(r->id(), r->after(), Limit(*r)), out);
  }

 private:
  static int64_t Limit(const pb::ListRequest& r) {
    return r.limit() <= 0 ? 20 : std::min<int64_t>(r.limit(), 100);
  }
  grpc::Status Authorize(grpc::ServerContext* c) const {
    const auto& md = c->client_metadata();
    const auto it = md.find("authorization");
    const std::string_view value = it == md.end()
                                       ? std::string_view()
                                       : std::string_view(it->second.data(), it->second.size());
    if (policy_.Allows(http::AccessScope::kAdmin, value)) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "Incorrect admin API key provided: send metadata 'authorization: Bearer "
                        "<key>'");
  }

  FileStore& files_;
  FineTuneJobs& jobs_;
  const http::AccessPolicy& policy_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeAdminGrpcService(FileStore& files, FineTuneJobs& jobs,
                                                    const http::AccessPolicy& policy) {
  return std::make_unique<AdminGrpcService>(files, jobs, policy);
}

}  // namespace spillway::server::admin
