// AdminApi: OpenAI's Files and Fine-tuning endpoints on an http::Router (issue #7):
//   POST /v1/files (multipart/form-data: file, purpose), GET /v1/files,
//   GET|DELETE /v1/files/{id}, GET /v1/files/{id}/content,
//   POST|GET /v1/fine_tuning/jobs (list: ?after=&limit=), GET /v1/fine_tuning/jobs/{id},
//   POST /v1/fine_tuning/jobs/{id}/cancel, GET /v1/fine_tuning/jobs/{id}/events,
//   GET /v1/fine_tuning/jobs/{id}/checkpoints.
// They are admin scope (http::AccessPolicy: --admin-api-key, else --api-key). Handlers run on
// the connection's strand and do only small file I/O there; training runs on the engine loop.
// Thread safety: const after Register; the store and jobs must outlive the server.
#pragma once

#include "server/admin/file_store.h"
#include "server/admin/fine_tune_jobs.h"
#include "server/http/router.h"

namespace spillway::server::admin {

class AdminApi {
 public:
  AdminApi(FileStore& files, FineTuneJobs& jobs) : files_(files), jobs_(jobs) {}
  void Register(http::Router& router);

  // The value of `key` in the query string of `target` (percent-decoding not needed for ids
  // and numbers; a value with '%' is returned as is). Empty when absent.
  static std::string QueryParam(std::string_view target, std::string_view key);

 private:
  void Upload(const http::HttpRequest& r, const http::Exchange& e);
  void FileRoute(const http::HttpRequest& r, const http::Exchange& e);
  void JobRoute(const http::HttpRequest& r, const http::Exchange& e);

  FileStore& files_;
  FineTuneJobs& jobs_;
};

}  // namespace spillway::server::admin
