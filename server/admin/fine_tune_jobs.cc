#include "server/admin/fine_tune_jobs.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/check.h"
#include "engine/lora/atomic_file.h"
#include "engine/lora/peft_io.h"
#include "server/openai/api_error.h"
#if defined(SPW_WITH_CUDA)
#include "engine/cuda/cuda_train_model.h"
#endif

namespace spillway::server::admin {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using engine::lora::LoraModule;

constexpr int64_t kDefaultEpochs = 3;
constexpr int64_t kMaxEpochs = 50;
constexpr int64_t kMaxBatchSize = 256;

std::string NewJobId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("ftjob-%016x%08x", rng(), static_cast<uint32_t>(rng()));
}

bool IsValidJobId(const std::string& id) {
  if (id.size() != 30 || !id.starts_with("ftjob-")) return false;
  return std::all_of(id.begin() + 6, id.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

int64_t Now() { return std::time(nullptr); }

int64_t LongestExample(const std::vector<engine::train::TrainingExample>& examples) {
  int64_t longest = 0;
  for (const engine::train::TrainingExample& ex : examples) {
    longest = std::max<int64_t>(longest, static_cast<int64_t>(ex.tokens.size()));
  }
  return longest;
}

bool Terminal(const std::string& s) {
  return s == "succeeded" || s == "failed" || s == "cancelled";
}

// "auto" or a number in [lo, hi] (integers when `integer`).
absl::StatusOr<std::optional<double>> AutoOrNumber(const json::object& o, const char* key,
                                                   double lo, double hi, bool integer) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null() || (v->is_string() && v->get_string() == "auto")) {
    return std::nullopt;
  }
  const std::string param = absl::StrFormat("hyperparameters.%s", key);
  if (!v->is_number() || (integer && v->is_double())) {
    return openai::InvalidParamError(param, absl::StrFormat("%s must be 'auto' or a%s number",
                                                            param, integer ? "n integer" : ""));
  }
  const double d = v->to_number<double>();
  if (d < lo || d > hi) {
    return openai::InvalidParamError(
        param, absl::StrFormat("%s must be between %g and %g", param, lo, hi));
  }
  return d;
}

absl::StatusOr<std::string> OptString(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return std::string();
  if (!v->is_string())
    return openai::InvalidParamError(key, absl::StrFormat("%s must be a string", key));
  return std::string(v->get_string());
}

}  // namespace

struct FineTuneJobs::Job {
  std::string id;
  std::string status = "validating_files";
  int64_t created_at = 0;
  int64_t finished_at = -1;
  std::string training_file, validation_file, suffix;
  int64_t seed = 0;
  int64_t n_epochs = kDefaultEpochs;  // -1 until resolved ("auto")
  int64_t batch_size = -1;            // -1: auto (resolved when the data is read)
  double lr_multiplier = 1.0;
  engine::lora::LoraConfig lora;
  std::string fine_tuned_model;
  int64_t trained_tokens = 0;
  json::value error;   // null or {code, message, param}
  json::array events;  // oldest first
  json::array checkpoints;
  json::array result_files;  // file ids (purpose "fine-tune-results")
  bool cancel_requested = false;
  int64_t total_steps = 0, step = 0;
  // This run (since the job last entered the slot): when, optimizer steps, finish estimate.
  std::chrono::steady_clock::time_point run_start;
  int64_t run_steps = 0;
  int64_t estimated_finish = 0;  // unix seconds; 0: unknown
  // KV blocks requested for the job's memory (0: none) and the engine loop's answer, set on
  // its thread (nullopt until it answers); released by Finish.
  int32_t kv_blocks = 0;
  std::optional<absl::Status> kv_granted;
  // Validated and waiting for the training slot (to_start_): the examples and options.
  std::vector<engine::train::TrainingExample> train_examples, valid_examples;
  engine::train::TrainingOptions train_options;
};

FineTuneJobs::FineTuneJobs(FineTuneModel model, FineTuneOptions options, FileStore& files,
                           FineTuneObserver observer)
    : model_(std::move(model)),
      options_(std::move(options)),
      files_(files),
      observer_(std::move(observer)) {
#if defined(SPW_WITH_CUDA)
  SPW_CHECK(options_.device == "cpu" || options_.device == "cuda");
#else
  SPW_CHECK(options_.device == "cpu");  // ResolveFinetuneDevice never gives "cuda" here
#endif
  if (options_.device == "cpu") pool_.emplace(options_.threads);
}

FineTuneJobs::~FineTuneJobs() { Stop(); }

void FineTuneJobs::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (preparer_.joinable()) preparer_.join();
}

void FineTuneJobs::SetWake(std::function<void()> wake) {
  absl::MutexLock lock(&mu_);
  wake_ = std::move(wake);
}

void FineTuneJobs::SetAdapterSink(AdapterSink sink) {
  absl::MutexLock lock(&mu_);
  sink_ = std::move(sink);
}

std::string FineTuneJobs::DirOf(const std::string& id) const {
  return (fs::path(options_.jobs_dir) / id).string();
}

int64_t FineTuneJobs::FrozenBytes(const engine::ModelConfig& c) {
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t per_layer = c.hidden * (q + 2 * kv) + q * c.hidden + 3 * c.hidden * c.ffn_hidden;
  // F16 W and Wᵀ: 4 bytes per matmul parameter (the lm_head counted too).
  return 4 * (c.num_layers * per_layer + c.vocab_size * c.hidden);
}

JobMemory FineTuneJobs::MemoryOf(const engine::ModelConfig& c, const engine::lora::LoraConfig& lora,
                                 int64_t micro_batch_tokens, int64_t longest_example,
                                 std::string_view device, bool shared_weights) {
  // A micro-batch is whole examples up to the budget, at least one (training_job.h).
  const int64_t tokens = std::max(micro_batch_tokens, longest_example);
  const int64_t max_seq = std::max<int64_t>(longest_example, 1);
  // NOTE(ftcuda): the LoRA state (parameters, gradient, AdamW moments) is host memory on
  // either device; on "cuda" it is counted all the same (16 bytes per LoRA parameter: a few
  // MiB beside the frozen weights), which also covers a pass's device copies of the
  // parameters and gradient (8 bytes per parameter).
  const int64_t state = engine::train::TrainingJob::StateBytes(engine::lora::LoraLayout(c, lora));
  if (device == "cuda") {
#if defined(SPW_WITH_CUDA)
    using engine::cuda::CudaTrainModel;
    // Launch builds the CudaTrainModel with default CudaTrainOptions; the same head chunk.
    const int64_t chunk = engine::cuda::CudaTrainOptions{}.head_chunk_rows;
    return {.frozen = shared_weights ? 0 : CudaTrainModel::FrozenBytes(c),
            .state = state,
            .activations = CudaTrainModel::ActivationBytes(c, tokens, max_seq, tokens, chunk)};
#else
    SPW_CHECK(false);                   // "cuda" cannot be chosen without the CUDA backend
#endif
  }
  SPW_CHECK(device == "cpu");
  const int64_t activations =
      engine::train::TrainModel<float>::ActivationBytes(c, tokens, max_seq, tokens);
  return {.frozen = FrozenBytes(c), .state = state, .activations = activations};
}

void FineTuneJobs::SetKvBudget(KvBudget budget) { kv_budget_ = std::move(budget); }

absl::Status FineTuneJobs::CheckMemory(const JobMemory& m, int32_t* blocks) const {
  const int64_t need = m.total();
  *blocks = 0;
  if (options_.memory_bytes > 0 && need > options_.memory_bytes) {
    return openai::WithParam(
        absl::InvalidArgumentError(absl::StrFormat(
            "this job needs %d MiB for training (frozen weights %d, LoRA state %d, activations "
            "%d) but --finetune-memory-bytes allows %d MiB; use a smaller lora.rank or fewer "
            "lora.layers, or raise the limit",
            need >> 20, m.frozen >> 20, m.state >> 20, m.activations >> 20,
            options_.memory_bytes >> 20)),
        "lora", "insufficient_memory");
  }
  if (kv_budget_.block_bytes <= 0) return absl::OkStatus();
  const int64_t want = (need + kv_budget_.block_bytes - 1) / kv_budget_.block_bytes;
  if (want > kv_budget_.max_blocks) {
    return openai::WithParam(
        absl::InvalidArgumentError(absl::StrFormat(
            "this job needs %d MiB for training (frozen weights %d, LoRA state %d, activations "
            "%d), taken from the KV cache: %d blocks of %d KiB, but the KV cache can give at "
            "most %d blocks (%d MiB) while keeping room to serve one full-context request; use "
            "a smaller lora.rank, fewer lora.layers or shorter examples, or start the server "
            "with more --kv-blocks",
            need >> 20, m.frozen >> 20, m.state >> 20, m.activations >> 20, want,
            kv_budget_.block_bytes >> 10, kv_budget_.max_blocks,
            (int64_t{kv_budget_.max_blocks} * kv_budget_.block_bytes) >> 20)),
        "lora", "insufficient_memory");
  }
  *blocks = static_cast<int32_t>(want);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<engine::train::TrainingExample>> FineTuneJobs::LoadExamples(
    const std::string& file_id) const {
  absl::StatusOr<std::string> text = files_.Content(file_id);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<DatasetExample>> ex = ParseFineTuneJsonl(*text);
  if (!ex.ok()) return ex.status();
  return TokenizeExamples(*ex, model_.tokenize, model_.context_tokens);
}

absl::Status FineTuneJobs::Start() {
  std::error_code ec;
  fs::create_directories(options_.jobs_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrFormat("cannot create %s: %s", options_.jobs_dir, ec.message()));
  }
  {
    absl::MutexLock lock(&mu_);
    for (const fs::directory_entry& e : fs::directory_iterator(options_.jobs_dir, ec)) {
      const std::string id = e.path().filename().string();
      if (!IsValidJobId(id)) continue;
      absl::StatusOr<std::string> text =
          engine::lora::ReadWholeFile((e.path() / "job.json").string());
      if (!text.ok()) continue;
      boost::system::error_code jec;
      json::value v = json::parse(*text, jec);
      if (jec || !v.is_object()) continue;
      try {
        const json::object& o = v.as_object();
        auto job = std::make_unique<Job>();
        job->id = id;
        job->status = std::string(o.at("status").as_string());
        job->created_at = o.at("created_at").to_number<int64_t>();
        job->finished_at =
            o.at("finished_at").is_null() ? -1 : o.at("finished_at").to_number<int64_t>();
        job->training_file = std::string(o.at("training_file").as_string());
        job->validation_file = o.at("validation_file").is_null()
                                   ? ""
                                   : std::string(o.at("validation_file").as_string());
        job->suffix = o.at("user_provided_suffix").is_null()
                          ? ""
                          : std::string(o.at("user_provided_suffix").as_string());
        job->seed = o.at("seed").to_number<int64_t>();
        const json::object& h = o.at("hyperparameters").as_object();
        job->n_epochs = h.at("n_epochs").to_number<int64_t>();
        job->batch_size =
            h.at("batch_size").is_number() ? h.at("batch_size").to_number<int64_t>() : -1;
        job->lr_multiplier = h.at("learning_rate_multiplier").to_number<double>();
        job->lora.dropout = h.contains("lora_dropout")
                                ? static_cast<float>(h.at("lora_dropout").to_number<double>())
                                : 0.0f;
        const json::object& l = o.at("lora").as_object();
        job->lora.rank = static_cast<int32_t>(l.at("rank").to_number<int64_t>());
        job->lora.alpha = static_cast<float>(l.at("alpha").to_number<double>());
        job->lora.targets.clear();
        for (const json::value& t : l.at("target_modules").as_array()) {
          absl::StatusOr<LoraModule> m = engine::lora::ParseLoraModule(t.as_string());
          if (m.ok()) job->lora.targets.push_back(*m);
        }
        for (const json::value& t : l.at("layers").as_array()) {
          job->lora.layers.push_back(static_cast<int32_t>(t.to_number<int64_t>()));
        }
        job->lora.base_model = model_.name;
        job->fine_tuned_model = o.at("fine_tuned_model").is_null()
                                    ? ""
                                    : std::string(o.at("fine_tuned_model").as_string());
        job->trained_tokens =
            o.at("trained_tokens").is_null() ? 0 : o.at("trained_tokens").to_number<int64_t>();
        job->error = o.at("error");
        job->events = o.at("events").as_array();
        if (const json::value* c = o.if_contains("checkpoints")) job->checkpoints = c->as_array();
        if (const json::value* r = o.if_contains("result_files")) job->result_files = r->as_array();
        if (!Terminal(job->status)) {
          to_prepare_.push_back(id);
          if (job->status == "running") {
            AddEvent(*job, "The server restarted; the job resumes from its last checkpoint");
          }
          job->status = "validating_files";
        } else if (job->status == "succeeded" && !job->fine_tuned_model.empty()) {
          to_register_.push_back(id);  // served again
        }
        jobs_[id] = std::move(job);
      } catch (const std::exception&) {
        continue;  // an unreadable job file: skipped (left on disk for inspection)
      }
    }
    ReportStates();
  }
  preparer_ = std::thread([this] { PrepareLoop(); });
  return absl::OkStatus();
}

absl::StatusOr<json::object> FineTuneJobs::Create(const json::object& r) {
  auto job = std::make_unique<Job>();
  const json::value* model = r.if_contains("model");
  if (model == nullptr || !model->is_string()) {
    return openai::InvalidParamError("model", "model must be a string");
  }
  if (model->get_string() != model_.name) return openai::ModelNotFoundError(model->get_string());
  absl::StatusOr<std::string> training_file = OptString(r, "training_file");
  if (!training_file.ok()) return training_file.status();
  if (training_file->empty()) {
    return openai::InvalidParamError("training_file", "training_file is required");
  }
  absl::StatusOr<std::string> validation_file = OptString(r, "validation_file");
  if (!validation_file.ok()) return validation_file.status();
  absl::StatusOr<std::string> suffix = OptString(r, "suffix");
  if (!suffix.ok()) return suffix.status();
  if (suffix->size() > 64 || !std::all_of(suffix->begin(), suffix->end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
      })) {
    return openai::InvalidParamError("suffix",
                                     "suffix must be at most 64 characters of [A-Za-z0-9._-]");
  }
  for (const std::string* f : {&*training_file, &*validation_file}) {
    if (f->empty()) continue;
    const char* param = f == &*training_file ? "training_file" : "validation_file";
    absl::StatusOr<FileInfo> info = files_.Get(*f);
    if (!info.ok()) {
      return openai::InvalidParamError(param, absl::StrFormat("%s: no such file", param));
    }
    if (info->purpose != "fine-tune") {
      return openai::InvalidParamError(param, "the file's purpose is not 'fine-tune'");
    }
  }
  job->training_file = *training_file;
  job->validation_file = *validation_file;
  job->suffix = *suffix;
  if (const json::value* seed = r.if_contains("seed"); seed != nullptr && !seed->is_null()) {
    if (!seed->is_int64() && !seed->is_uint64()) {
      return openai::InvalidParamError("seed", "seed must be an integer");
    }
    job->seed = seed->to_number<int64_t>();
  } else {
    job->seed = std::random_device{}() & 0x7fffffff;
  }

  // Hyperparameters: top-level (the older shape) or method.supervised.hyperparameters.
  const json::object* hp = nullptr;
  if (const json::value* h = r.if_contains("hyperparameters"); h != nullptr && !h->is_null()) {
    if (!h->is_object()) {
      return openai::InvalidParamError("hyperparameters", "hyperparameters must be an object");
    }
    hp = &h->get_object();
  }
  if (const json::value* m = r.if_contains("method"); m != nullptr && !m->is_null()) {
    const json::object* mo = m->if_object();
    const json::value* type = mo != nullptr ? mo->if_contains("type") : nullptr;
    if (type == nullptr || !type->is_string() || type->get_string() != "supervised") {
      return openai::InvalidParamError("method.type", "only method.type 'supervised' is supported");
    }
    if (const json::value* s = mo->if_contains("supervised"); s != nullptr && s->is_object()) {
      if (const json::value* h = s->get_object().if_contains("hyperparameters");
          h != nullptr && h->is_object()) {
        hp = &h->get_object();
      }
    }
  }
  const json::object empty;
  if (hp == nullptr) hp = &empty;
  absl::StatusOr<std::optional<double>> epochs = AutoOrNumber(*hp, "n_epochs", 1, kMaxEpochs, true);
  if (!epochs.ok()) return epochs.status();
  absl::StatusOr<std::optional<double>> batch =
      AutoOrNumber(*hp, "batch_size", 1, kMaxBatchSize, true);
  if (!batch.ok()) return batch.status();
  absl::StatusOr<std::optional<double>> lrm =
      AutoOrNumber(*hp, "learning_rate_multiplier", 1e-4, 100, false);
  if (!lrm.ok()) return lrm.status();
  job->n_epochs = epochs->has_value() ? static_cast<int64_t>(**epochs) : kDefaultEpochs;
  job->batch_size = batch->has_value() ? static_cast<int64_t>(**batch) : -1;
  job->lr_multiplier = lrm->has_value() ? **lrm : 1.0;
  // LoRA dropout (PEFT's lora_dropout) in [0, 1); "auto" or absent: none.
  absl::StatusOr<std::optional<double>> dropout = AutoOrNumber(*hp, "lora_dropout", 0, 1, false);
  if (!dropout.ok()) return dropout.status();
  if (dropout->has_value() && **dropout >= 1) {
    return openai::InvalidParamError("hyperparameters.lora_dropout",
                                     "hyperparameters.lora_dropout must be at least 0 and below 1");
  }

  // LoRA (a spillway extension): rank, alpha, target_modules, layers. Default: rank 8 on all
  // seven projections of the upper half of the layers.
  const engine::ModelConfig& mc = model_.file->config();
  job->lora.rank = 8;
  job->lora.alpha = 16;
  job->lora.targets.assign(engine::lora::kAllLoraModules.begin(),
                           engine::lora::kAllLoraModules.end());
  for (int64_t l = mc.num_layers / 2; l < mc.num_layers; ++l) {
    job->lora.layers.push_back(static_cast<int32_t>(l));
  }
  if (const json::value* lv = r.if_contains("lora"); lv != nullptr && !lv->is_null()) {
    if (!lv->is_object()) return openai::InvalidParamError("lora", "lora must be an object");
    const json::object& l = lv->get_object();
    if (const json::value* v = l.if_contains("rank")) {
      if (!v->is_int64() || v->get_int64() < 1 || v->get_int64() > 256) {
        return openai::InvalidParamError("lora.rank", "lora.rank must be an integer in 1..256");
      }
      job->lora.rank = static_cast<int32_t>(v->get_int64());
      job->lora.alpha = 2.0f * job->lora.rank;
    }
    if (const json::value* v = l.if_contains("alpha")) {
      if (!v->is_number() || v->to_number<double>() <= 0) {
        return openai::InvalidParamError("lora.alpha", "lora.alpha must be a positive number");
      }
      job->lora.alpha = static_cast<float>(v->to_number<double>());
    }
    if (const json::value* v = l.if_contains("target_modules")) {
      if (!v->is_array() || v->get_array().empty()) {
        return openai::InvalidParamError("lora.target_modules",
                                         "lora.target_modules must be a non-empty array");
      }
      job->lora.targets.clear();
      for (const json::value& t : v->get_array()) {
        absl::StatusOr<LoraModule> m = t.is_string() ? engine::lora::ParseLoraModule(t.get_string())
                                                     : absl::InvalidArgumentError("");
        if (!m.ok()) {
          return openai::InvalidParamError(
              "lora.target_modules", "lora.target_modules: each one of q, k, v, o, gate, up, down");
        }
        job->lora.targets.push_back(*m);
      }
    }
    if (const json::value* v = l.if_contains("layers")) {
      if (!v->is_array() || v->get_array().empty()) {
        return openai::InvalidParamError("lora.layers", "lora.layers must be a non-empty array");
      }
      job->lora.layers.clear();
      for (const json::value& t : v->get_array()) {
        if (!t.is_int64() || t.get_int64() < 0 || t.get_int64() >= mc.num_layers) {
          return openai::InvalidParamError(
              "lora.layers", absl::StrFormat("lora.layers: integers in 0..%d", mc.num_layers - 1));
        }
        job->lora.layers.push_back(static_cast<int32_t>(t.get_int64()));
      }
    }
  }
  job->lora.dropout = dropout->has_value() ? static_cast<float>(**dropout) : 0.0f;
  job->lora.base_model = model_.name;
  // The memory check at creation needs the longest example; a file that does not tokenize
  // fails the job while it validates, as before (Prepare), so it is not refused here.
  int64_t longest = 0;
  if (absl::StatusOr<std::vector<engine::train::TrainingExample>> ex =
          LoadExamples(job->training_file);
      ex.ok()) {
    longest = LongestExample(*ex);
  }
  int32_t blocks = 0;
  if (absl::Status st = CheckMemory(MemoryOf(mc, job->lora, options_.micro_batch_tokens, longest,
                                             options_.device, model_.device_weights != nullptr),
                                    &blocks);
      !st.ok()) {
    return st;
  }

  job->id = NewJobId();
  job->created_at = Now();
  absl::MutexLock lock(&mu_);
  Job& j = *job;
  jobs_[j.id] = std::move(job);
  AddEvent(j, absl::StrFormat("Created fine-tuning job: %s", j.id));
  Persist(j);
  to_prepare_.push_back(j.id);
  ReportStates();
  return ToJson(j);
}

void FineTuneJobs::PrepareLoop() {
  while (true) {
    std::string id;
    void (FineTuneJobs::*action)(const std::string&) = nullptr;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](FineTuneJobs* self) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return self->stop_ || !self->to_register_.empty() || !self->to_prepare_.empty() ||
                   (!self->to_start_.empty() && !self->slot_busy_);
          },
          this));
      if (stop_) return;
      if (!to_register_.empty()) {
        id = to_register_.front();
        to_register_.pop_front();
        action = &FineTuneJobs::Register;
      } else if (!to_prepare_.empty()) {
        id = to_prepare_.front();
        to_prepare_.pop_front();
        action = &FineTuneJobs::Prepare;
      } else {
        id = to_start_.front();
        to_start_.pop_front();
        slot_busy_ = true;
        action = &FineTuneJobs::Launch;
      }
    }
    (this->*action)(id);
  }
}

void FineTuneJobs::Prepare(const std::string& id) {
  std::string training_file, validation_file;
  engine::train::TrainingOptions o;
  int64_t epochs = 0, batch_size = 0;
  {
    absl::MutexLock lock(&mu_);
    Job& job = *jobs_.at(id);
    if (job.cancel_requested || Terminal(job.status)) return;
    training_file = job.training_file;
    validation_file = job.validation_file;
    o.lora = job.lora;
    o.seed = static_cast<uint64_t>(job.seed);
    o.learning_rate = static_cast<float>(options_.base_learning_rate * job.lr_multiplier);
    epochs = job.n_epochs;
    batch_size = job.batch_size;
  }
  auto fail = [&](const absl::Status& st, const char* code) {
    absl::MutexLock lock(&mu_);
    Job& job = *jobs_.at(id);
    job.error = json::object{
        {"code", code},
        {"message", std::string(st.message())},
        {"param", code == std::string("invalid_training_file") ? json::value("training_file")
                                                               : json::value(nullptr)}};
    Finish(job, "failed", st);
  };
  absl::StatusOr<std::vector<engine::train::TrainingExample>> train = LoadExamples(training_file);
  if (!train.ok()) return fail(train.status(), "invalid_training_file");
  std::vector<engine::train::TrainingExample> validation;
  if (!validation_file.empty()) {
    absl::StatusOr<std::vector<engine::train::TrainingExample>> v = LoadExamples(validation_file);
    if (!v.ok()) return fail(v.status(), "invalid_validation_file");
    validation = *std::move(v);
  }
  const int64_t n = static_cast<int64_t>(train->size());
  if (batch_size < 0) batch_size = std::clamp<int64_t>(n / 8, 1, 8);
  o.epochs = static_cast<int32_t>(epochs);
  o.batch_size = static_cast<int32_t>(std::min(batch_size, n));
  o.max_micro_batch_tokens = options_.micro_batch_tokens;
  {
    absl::MutexLock lock(&mu_);
    Job& job = *jobs_.at(id);
    job.batch_size = o.batch_size;
    job.status = "queued";
    AddEvent(job, absl::StrFormat("Files validated: %d training examples, %d validation examples",
                                  n, validation.size()));
    job.train_examples = *std::move(train);
    job.valid_examples = std::move(validation);
    job.train_options = o;
    Persist(job);
    ReportStates();
    if (job.cancel_requested) {
      Finish(job, "cancelled", absl::OkStatus());
      return;
    }
    to_start_.push_back(id);  // waits for the training slot
  }
}

void FineTuneJobs::Launch(const std::string& id) {
  engine::train::TrainingOptions o;
  std::vector<engine::train::TrainingExample> train, validation;
  {
    absl::MutexLock lock(&mu_);
    Job& job = *jobs_.at(id);
    if (job.cancel_requested || Terminal(job.status)) {
      slot_busy_ = false;
      return;
    }
    o = job.train_options;
    train = std::move(job.train_examples);
    validation = std::move(job.valid_examples);
    job.train_examples.clear();
    job.valid_examples.clear();
  }
  auto fail = [&](const absl::Status& st, const char* code) {
    absl::MutexLock lock(&mu_);
    Job& job = *jobs_.at(id);
    job.error =
        json::object{{"code", code}, {"message", std::string(st.message())}, {"param", nullptr}};
    Finish(job, "failed", st);
    slot_busy_ = false;
  };
  // The same figure as at creation, now from the tokenized data (a job resumed after a restart
  // was not created by this process; a changed micro-batch flag changes it too).
  const JobMemory memory =
      MemoryOf(model_.file->config(), o.lora, o.max_micro_batch_tokens, LongestExample(train),
               options_.device, model_.device_weights != nullptr);
  int32_t blocks = 0;
  if (absl::Status st = CheckMemory(memory, &blocks); !st.ok()) {
    return fail(st, "insufficient_memory");
  }
  // NOTE(ftmem): the KV blocks are held before the job allocates anything (dequantizing the
  // base is most of it), so that on the CPU the pool's pages are given back first. The
  // preparer waits here for the engine loop to grant them (it does when it holds no request,
  // i.e. when training could run anyway); a cancel or Stop ends the wait.
  // NOTE(ftcuda): on the GPU the reservation is accounting only: the device KV pool is one
  // allocation and keeps its memory; the job's weights and activations are cudaMalloc'd
  // outside it, in the headroom --gpu-memory-utilization leaves (CudaTrainModel::Create fails
  // the job with ResourceExhausted when that is short). Holding the blocks keeps the scheduler
  // from filling that many with KV meanwhile, so the budget a job is admitted against is the
  // same on both devices.
  if (kv_budget_.reserve) {
    {
      absl::MutexLock lock(&mu_);
      Job& job = *jobs_.at(id);
      job.kv_blocks = blocks;
      job.kv_granted.reset();
    }
    kv_budget_.reserve(id, blocks, [this, id](absl::Status st) {
      absl::MutexLock lock(&mu_);
      jobs_.at(id)->kv_granted = std::move(st);
    });
    absl::MutexLock lock(&mu_);
    Job& job = *jobs_.at(id);
    auto done = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return stop_ || job.cancel_requested || job.kv_granted.has_value();
    };
    mu_.Await(absl::Condition(&done));
    if (job.cancel_requested || stop_) {
      // Stopping: the job stays queued (and persisted as such) and runs after a restart.
      if (!stop_) Finish(job, "cancelled", absl::OkStatus());
      ReleaseKv(job);
      slot_busy_ = false;
      return;
    }
    if (!job.kv_granted->ok()) {
      const absl::Status st = *job.kv_granted;
      job.kv_blocks = 0;  // nothing is held
      job.error = json::object{{"code", "insufficient_memory"},
                               {"message", std::string(st.message())},
                               {"param", nullptr}};
      Finish(job, "failed", st);
      slot_busy_ = false;
      return;
    }
  }
  absl::StatusOr<std::unique_ptr<engine::train::TrainingJob>> tj;
#if defined(SPW_WITH_CUDA)
  if (options_.device == "cuda") {
    // Uploads the base to the GPU here, on the preparer thread (CudaTrainModel's own stream
    // and cuBLAS handle), while the engine loop serves.
    absl::StatusOr<std::unique_ptr<engine::cuda::CudaTrainModel>> gpu =
        engine::cuda::CudaTrainModel::Create(*model_.file,
                                             {.device_weights = model_.device_weights});
    if (!gpu.ok()) return fail(gpu.status(), "training_error");
    tj = engine::train::TrainingJob::Create(*std::move(gpu), std::move(train), o);
  }
#endif
  if (options_.device == "cpu") {
    tj = engine::train::TrainingJob::Create(*model_.file, std::move(train), o, &*pool_);
  }
  if (!tj.ok()) return fail(tj.status(), "training_error");
  const std::string checkpoint = (fs::path(DirOf(id)) / "checkpoint.bin").string();
  bool resumed = false;
  if (fs::exists(checkpoint)) {
    if (absl::Status st = (*tj)->RestoreCheckpoint(checkpoint); !st.ok()) {
      return fail(st, "checkpoint_error");
    }
    resumed = true;
  }
  std::function<void()> wake;
  {
    absl::MutexLock lock(&mu_);
    Job& job = *jobs_.at(id);
    if (job.cancel_requested) {
      Finish(job, "cancelled", absl::OkStatus());
      slot_busy_ = false;
      return;
    }
    job.status = "running";
    job.run_start = std::chrono::steady_clock::now();
    job.total_steps = (*tj)->total_steps();
    job.step = (*tj)->step();
    AddEvent(job,
             resumed ? absl::StrFormat("Resumed from the checkpoint at step %d", job.step)
                     : std::string("Fine-tuning job started"),
             json::object{{"device", std::string((*tj)->model().device())}});
    AddEvent(job,
             absl::StrFormat("Reserved %d MiB: frozen weights %d, LoRA state %d, "
                             "activations %d; %d KV blocks held",
                             memory.total() >> 20, memory.frozen >> 20, memory.state >> 20,
                             memory.activations >> 20, job.kv_blocks),
             json::object{{"reserved_bytes", memory.total()}, {"kv_blocks", job.kv_blocks}});
    Persist(job);
    ReportStates();
    slot_job_ = *std::move(tj);
    slot_validation_ = std::move(validation);
    slot_id_ = id;
    slot_ready_.store(true);
    wake = wake_;
  }
  if (wake) wake();
}

void FineTuneJobs::ReleaseKv(Job& job) {
  if (job.kv_blocks == 0 && !job.kv_granted.has_value()) return;
  job.kv_blocks = 0;
  job.kv_granted.reset();
  if (kv_budget_.release) kv_budget_.release(job.id);
}

bool FineTuneJobs::HasWork() { return slot_ready_.load(); }

void FineTuneJobs::ReleaseSlot() {
  slot_ready_.store(false);
  slot_job_.reset();
  slot_validation_.clear();
  slot_evaluating_ = false;
  slot_piece_hist_.clear();
  slot_piece_max_ = 0;
  slot_pieces_ = 0;
  slot_busy_ = false;
}

void FineTuneJobs::RecordPiece(double seconds) {
  if (observer_.on_piece) observer_.on_piece(seconds);
  // Histogram of 0.1 ms buckets up to 2 s (the rest in the last bucket), and the exact max.
  if (slot_piece_hist_.empty()) slot_piece_hist_.assign(20001, 0);
  const double tenths = std::clamp(seconds * 1e4, 0.0, 20000.0);
  ++slot_piece_hist_[static_cast<size_t>(tenths)];
  slot_piece_max_ = std::max(slot_piece_max_, seconds);
  ++slot_pieces_;
}

void FineTuneJobs::AddPieceEvent(Job& job) {
  if (slot_pieces_ == 0) return;
  auto quantile_ms = [&](double q) {
    const int64_t rank = static_cast<int64_t>(q * static_cast<double>(slot_pieces_ - 1));
    int64_t seen = 0;
    for (size_t b = 0; b < slot_piece_hist_.size(); ++b) {
      seen += slot_piece_hist_[b];
      if (seen > rank) return std::min((static_cast<double>(b) + 1) * 0.1, slot_piece_max_ * 1e3);
    }
    return slot_piece_max_ * 1e3;
  };
  const double p50 = quantile_ms(0.5), p99 = quantile_ms(0.99), max = slot_piece_max_ * 1e3;
  AddEvent(job,
           absl::StrFormat("Trained in %d pieces of idle time: p50 %.1f ms, p99 %.1f ms, max "
                           "%.1f ms",
                           slot_pieces_, p50, p99, max),
           json::object{{"pieces", slot_pieces_},
                        {"piece_p50_ms", p50},
                        {"piece_p99_ms", p99},
                        {"piece_max_ms", max}});
}

void FineTuneJobs::RunOnce() {
  if (!slot_ready_.load()) return;
  engine::train::TrainingJob& tj = *slot_job_;
  {
    absl::MutexLock lock(&mu_);
    Job& job = *jobs_.at(slot_id_);
    if (job.cancel_requested) {
      AddPieceEvent(job);
      Finish(job, "cancelled", absl::OkStatus());
      ReleaseSlot();
      return;
    }
  }
  // NOTE(ftpieces): one piece per call — half a layer forward or backward, or one lm_head
  // slice (TrainEngine::Advance), a few ms on the CPU — so a request that arrives waits for
  // that piece, not for a whole micro-batch; the micro-batch's activations wait in the job.
  if (slot_evaluating_) {
    // The validation loss after the last step, in pieces as well.
    absl::StatusOr<engine::train::EvalPieceReport> e = tj.EvalPiece();
    if (e.ok()) RecordPiece(e->seconds);
    if (e.ok() && !e->done) return;
    FinishTraining(e.ok() ? std::optional<engine::train::EvalPieceReport>(*e) : std::nullopt);
    return;
  }
  absl::StatusOr<engine::train::PieceReport> piece = tj.StepPiece();
  if (piece.ok()) RecordPiece(piece->seconds);
  if (piece.ok() && !piece->micro_batch.has_value()) return;
  absl::StatusOr<engine::train::StepReport> r =
      piece.ok() ? absl::StatusOr<engine::train::StepReport>(*piece->micro_batch)
                 : absl::StatusOr<engine::train::StepReport>(piece.status());
  if (r.ok() && r->optimizer_stepped && observer_.on_optimizer_step) {
    observer_.on_optimizer_step(r->step_loss);
  }
  const std::string dir = DirOf(slot_id_);
  absl::Status checkpoint_status;
  if (r.ok() && r->optimizer_stepped && !r->finished &&
      r->step % std::max(1, options_.checkpoint_steps) == 0) {
    checkpoint_status = tj.SaveCheckpoint((fs::path(dir) / "checkpoint.bin").string());
  }
  {
    absl::MutexLock lock(&mu_);
    Job& job = *jobs_.at(slot_id_);
    if (!r.ok()) {
      job.error = json::object{{"code", "training_error"},
                               {"message", std::string(r.status().message())},
                               {"param", nullptr}};
      Finish(job, "failed", r.status());
      ReleaseSlot();
      return;
    }
    job.trained_tokens += r->tokens;
    if (r->optimizer_stepped) {
      job.step = r->step;
      // NOTE(ftapi): the finish estimate extrapolates this run's wall-clock rate (idle time
      // only, so it moves with the inference load), from the steps done since it started.
      if (++job.run_steps >= 2) {
        const double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - job.run_start).count();
        job.estimated_finish =
            Now() + static_cast<int64_t>(elapsed / job.run_steps * (job.total_steps - job.step));
      }
      AddEvent(
          job,
          absl::StrFormat("Step %d/%d: training loss=%.4f", r->step, job.total_steps, r->step_loss),
          json::object{{"step", r->step},
                       {"train_loss", r->step_loss},
                       {"train_mean_token_accuracy", r->step_accuracy},
                       {"total_steps", job.total_steps},
                       {"learning_rate", r->learning_rate},
                       {"grad_norm", r->grad_norm}});
      if (!checkpoint_status.ok()) {
        AddEvent(job, absl::StrFormat("Checkpoint failed: %s", checkpoint_status.message()));
      } else if (r->step % std::max(1, options_.checkpoint_steps) == 0 && !r->finished) {
        job.checkpoints.push_back(
            json::object{{"object", "fine_tuning.job.checkpoint"},
                         {"id", absl::StrFormat("ftckpt-%s-%d", job.id, r->step)},
                         {"created_at", Now()},
                         {"fine_tuning_job_id", job.id},
                         {"step_number", r->step},
                         {"metrics", json::object{{"step", r->step}, {"train_loss", r->step_loss}}},
                         {"fine_tuned_model_checkpoint", nullptr}});
        Persist(job);
      }
    }
    if (!r->finished) return;
  }
  if (!slot_validation_.empty()) {
    tj.BeginEval(slot_validation_);
    slot_evaluating_ = true;
    return;
  }
  FinishTraining(std::nullopt);
}

void FineTuneJobs::FinishTraining(std::optional<engine::train::EvalPieceReport> valid) {
  engine::train::TrainingJob& tj = *slot_job_;
  const std::string dir = DirOf(slot_id_);
  std::string name;
  {
    absl::MutexLock lock(&mu_);
    const Job& job = *jobs_.at(slot_id_);
    name = absl::StrFormat("ft:%s:%s:%s", model_.name, job.suffix, job.id);
  }
  const absl::Status finish_status = engine::lora::SavePeftAdapter(
      tj.adapter(), model_.file->config(), (fs::path(dir) / "adapter").string());
  absl::MutexLock lock(&mu_);
  Job& job = *jobs_.at(slot_id_);
  if (valid) {
    AddEvent(
        job,
        absl::StrFormat("Validation loss=%.4f, token accuracy=%.4f", valid->loss, valid->accuracy),
        json::object{{"step", tj.step()},
                     {"valid_loss", valid->loss},
                     {"valid_mean_token_accuracy", valid->accuracy}});
  }
  AddPieceEvent(job);
  if (!finish_status.ok()) {
    job.error = json::object{{"code", "adapter_error"},
                             {"message", std::string(finish_status.message())},
                             {"param", nullptr}};
    Finish(job, "failed", finish_status);
  } else {
    // NOTE(ftapi): registering loads the adapter through the engine loop and waits for it,
    // so it cannot happen here on the loop's thread: the preparer thread does it, then the
    // job succeeds (its model is servable the moment the status says so).
    job.fine_tuned_model = name;
    to_register_.push_back(job.id);
  }
  ReleaseSlot();
}

void FineTuneJobs::Register(const std::string& id) {
  std::string name, dir = (fs::path(DirOf(id)) / "adapter").string();
  AdapterSink sink;
  bool finishing = false;
  {
    absl::MutexLock lock(&mu_);
    Job& job = *jobs_.at(id);
    name = job.fine_tuned_model;
    finishing = job.status == "running";
    sink = sink_;
  }
  const absl::Status st = sink ? sink(name, dir) : absl::OkStatus();
  absl::MutexLock lock(&mu_);
  Job& job = *jobs_.at(id);
  if (!finishing) {
    // A job that succeeded before a restart: served again; a failure is only reported.
    if (!st.ok()) AddEvent(job, absl::StrFormat("Serving %s failed: %s", name, st.message()));
    return;
  }
  if (!st.ok()) {
    job.error = json::object{
        {"code", "adapter_error"}, {"message", std::string(st.message())}, {"param", nullptr}};
    job.fine_tuned_model.clear();
    Finish(job, "failed", st);
    return;
  }
  Finish(job, "succeeded", absl::OkStatus());
}

void FineTuneJobs::Finish(Job& job, const std::string& status, const absl::Status& error) {
  ReleaseKv(job);  // its memory goes back to serving
  job.status = status;
  job.finished_at = Now();
  if (status == "succeeded") {
    WriteResults(job);
    AddEvent(job,
             absl::StrFormat("The job has successfully completed; model %s", job.fine_tuned_model));
  } else if (status == "cancelled") {
    AddEvent(job, "The job was cancelled");
  } else {
    AddEvent(job, absl::StrFormat("The job failed: %s", error.message()));
  }
  Persist(job);
  ReportStates();
}

void FineTuneJobs::WriteResults(Job& job) {
  // One row per optimizer step, from the job's metrics events (a step run again after a
  // restart keeps its last figures); validation figures on the step they were measured at.
  // NOTE(ftacc): OpenAI's columns, in this order; the events' keys are OpenAI's metric names.
  // A cell is empty when its event lacks the figure (a job from before the token accuracy).
  static constexpr const char* kColumns[] = {"train_loss", "train_mean_token_accuracy",
                                             "valid_loss", "valid_mean_token_accuracy"};
  std::map<int64_t, std::array<std::optional<double>, 4>> rows;
  for (const json::value& e : job.events) {
    const json::object& data = e.as_object().at("data").as_object();
    const json::value* step = data.if_contains("step");
    if (step == nullptr || !step->is_number()) continue;
    std::array<std::optional<double>, 4>& row = rows[step->to_number<int64_t>()];
    for (size_t i = 0; i < row.size(); ++i) {
      if (const json::value* v = data.if_contains(kColumns[i])) row[i] = v->to_number<double>();
    }
  }
  std::string csv = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n";
  for (const auto& [step, row] : rows) {
    absl::StrAppend(&csv, step);
    for (const std::optional<double>& v : row) {
      absl::StrAppend(&csv, ",", v.has_value() ? absl::StrFormat("%.6f", *v) : std::string());
    }
    absl::StrAppend(&csv, "\n");
  }
  absl::StatusOr<FileInfo> file = files_.PutResult("step_metrics.csv", std::move(csv));
  if (!file.ok()) {
    // The model is trained and served; only the report is missing.
    AddEvent(job, absl::StrFormat("Writing the results file failed: %s", file.status().message()));
    return;
  }
  job.result_files.emplace_back(file->id);
}

void FineTuneJobs::AddEvent(Job& job, std::string message, json::object data) {
  const bool metrics = data.contains("train_loss") || data.contains("valid_loss");
  job.events.push_back(
      json::object{{"object", "fine_tuning.job.event"},
                   {"id", absl::StrFormat("ftevent-%s-%d", job.id.substr(6), job.events.size())},
                   {"created_at", Now()},
                   {"level", "info"},
                   {"message", std::move(message)},
                   {"data", std::move(data)},
                   {"type", metrics ? "metrics" : "message"}});
}

json::object FineTuneJobs::ToJson(const Job& job) const {
  json::object hp{
      {"n_epochs", job.n_epochs},
      {"batch_size", job.batch_size > 0 ? json::value(job.batch_size) : json::value("auto")},
      {"learning_rate_multiplier", job.lr_multiplier},
      // The float as the decimal it was given (0.1, not 0.10000000149011612).
      {"lora_dropout", std::round(static_cast<double>(job.lora.dropout) * 1e6) / 1e6}};
  json::array targets;
  for (LoraModule m : job.lora.targets) targets.emplace_back(engine::lora::LoraModuleName(m));
  json::array layers;
  for (int32_t l : job.lora.layers) layers.emplace_back(l);
  return json::object{
      {"object", "fine_tuning.job"},
      {"id", job.id},
      {"model", model_.name},
      {"created_at", job.created_at},
      {"finished_at", job.finished_at >= 0 ? json::value(job.finished_at) : json::value(nullptr)},
      {"fine_tuned_model",
       job.fine_tuned_model.empty() ? json::value(nullptr) : json::value(job.fine_tuned_model)},
      {"organization_id", "org-spillway"},
      {"result_files", job.result_files},
      {"status", job.status},
      {"training_file", job.training_file},
      {"validation_file",
       job.validation_file.empty() ? json::value(nullptr) : json::value(job.validation_file)},
      {"hyperparameters", hp},
      {"method",
       json::object{{"type", "supervised"}, {"supervised", json::object{{"hyperparameters", hp}}}}},
      {"trained_tokens", Terminal(job.status) || job.trained_tokens > 0
                             ? json::value(job.trained_tokens)
                             : json::value(nullptr)},
      {"error", job.error},
      {"seed", job.seed},
      {"estimated_finish", job.status == "running" && job.estimated_finish > 0
                               ? json::value(job.estimated_finish)
                               : json::value(nullptr)},
      {"integrations", json::array{}},
      {"user_provided_suffix", job.suffix.empty() ? json::value(nullptr) : json::value(job.suffix)},
      {"lora", json::object{{"rank", job.lora.rank},
                            {"alpha", job.lora.alpha},
                            {"target_modules", targets},
                            {"layers", layers}}},
      {"spillway", json::object{{"step", job.step},
                                {"total_steps", job.total_steps},
                                {"kv_reserved_blocks", job.kv_blocks}}}};
}

void FineTuneJobs::Persist(const Job& job) const {
  json::object o = ToJson(job);
  o["events"] = job.events;
  o["checkpoints"] = job.checkpoints;
  std::error_code ec;
  fs::create_directories(DirOf(job.id), ec);
  // NOTE(ftapi): a failed write leaves the previous job.json (atomic replace); the job goes on
  // and the next Persist retries, so it is not worth failing the job for.
  (void)engine::lora::WriteFileAtomically((fs::path(DirOf(job.id)) / "job.json").string(),
                                          json::serialize(o));
}

void FineTuneJobs::ReportStates() {
  if (!observer_.on_job_states) return;
  std::map<std::string, int64_t> counts;
  for (const char* s :
       {"validating_files", "queued", "running", "succeeded", "failed", "cancelled"}) {
    counts[s] = 0;
  }
  for (const auto& [id, job] : jobs_) ++counts[job->status];
  observer_.on_job_states(counts);
}

absl::StatusOr<FineTuneJobs::Job*> FineTuneJobs::Find(const std::string& id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) {
    return openai::WithParam(
        absl::NotFoundError(absl::StrFormat("No such fine-tuning job: %s", id.substr(0, 64))),
        "fine_tuning_job_id");
  }
  return it->second.get();
}

absl::StatusOr<json::object> FineTuneJobs::List(const std::string& after, int64_t limit) const {
  absl::MutexLock lock(&mu_);
  std::vector<const Job*> all;
  for (const auto& [id, job] : jobs_) all.push_back(job.get());
  std::stable_sort(all.begin(), all.end(),
                   [](const Job* a, const Job* b) { return a->created_at > b->created_at; });
  size_t start = 0;
  if (!after.empty()) {
    auto it = std::find_if(all.begin(), all.end(), [&](const Job* j) { return j->id == after; });
    if (it == all.end()) return Find(after).status();
    start = static_cast<size_t>(it - all.begin()) + 1;
  }
  json::array data;
  for (size_t i = start; i < all.size() && static_cast<int64_t>(data.size()) < limit; ++i) {
    data.push_back(ToJson(*all[i]));
  }
  const bool more = start + data.size() < all.size();
  return json::object{{"object", "list"}, {"data", std::move(data)}, {"has_more", more}};
}

absl::StatusOr<json::object> FineTuneJobs::Get(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = Find(id);
  if (!job.ok()) return job.status();
  return ToJson(**job);
}

absl::StatusOr<json::object> FineTuneJobs::Cancel(const std::string& id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = Find(id);
  if (!job.ok()) return job.status();
  Job& j = **job;
  if (Terminal(j.status)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("the job has already %s; it cannot be cancelled", j.status));
  }
  j.cancel_requested = true;
  // Not yet prepared: cancelled now. Preparing or running: the preparer or the engine loop
  // ends it (within one step).
  for (std::deque<std::string>* q : {&to_prepare_, &to_start_}) {
    auto it = std::find(q->begin(), q->end(), id);
    if (it == q->end()) continue;
    q->erase(it);
    Finish(j, "cancelled", absl::OkStatus());
  }
  return ToJson(j);
}

absl::StatusOr<json::object> FineTuneJobs::Events(const std::string& id, const std::string& after,
                                                  int64_t limit) const {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = Find(id);
  if (!job.ok()) return job.status();
  const json::array& ev = (*job)->events;
  // Newest first, as OpenAI lists them; `after` is an event id (continue past it).
  int64_t i = static_cast<int64_t>(ev.size()) - 1;
  if (!after.empty()) {
    while (i >= 0 && ev[i].as_object().at("id").as_string() != after) --i;
    --i;
  }
  json::array data;
  for (; i >= 0 && static_cast<int64_t>(data.size()) < limit; --i) data.push_back(ev[i]);
  return json::object{{"object", "list"}, {"data", std::move(data)}, {"has_more", i >= 0}};
}

absl::StatusOr<json::object> FineTuneJobs::Checkpoints(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> job = Find(id);
  if (!job.ok()) return job.status();
  json::array data;
  const json::array& c = (*job)->checkpoints;
  for (auto it = c.rbegin(); it != c.rend(); ++it) data.push_back(*it);
  return json::object{{"object", "list"}, {"data", std::move(data)}, {"has_more", false}};
}

}  // namespace spillway::server::admin
