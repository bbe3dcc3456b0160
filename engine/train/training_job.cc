#include "engine/train/training_job.h"

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "engine/lora/atomic_file.h"

namespace spillway::engine::train {
namespace {

namespace json = boost::json;

constexpr char kMagic[8] = {'S', 'P', 'W', 'L', 'O', 'R', 'A', 1};

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Fnv1a(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

void AppendU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t ReadU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

std::string LoraFingerprint(const lora::LoraConfig& c) {
  std::string s = absl::StrFormat("r=%d alpha=%g targets=", c.rank, c.alpha);
  for (lora::LoraModule m : c.targets)
    absl::StrAppend(&s, std::string(lora::LoraModuleName(m)), ",");
  absl::StrAppend(&s, " layers=");
  for (int32_t l : c.layers) absl::StrAppend(&s, l, ",");
  return s;
}

// part / whole, 0 when whole is 0 (a token accuracy).
double Fraction(int64_t part, int64_t whole) {
  return whole > 0 ? static_cast<double>(part) / static_cast<double>(whole) : 0.0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TrainingJob>> TrainingJob::Create(
    const ModelFile& file, std::vector<TrainingExample> examples, const TrainingOptions& options,
    cpu::ThreadPool* pool) {
  SPW_ASSIGN_OR_RETURN(
      std::unique_ptr<TrainModel<float>> model,
      TrainModel<float>::Create(file, pool, options.frozen_type, options.head_pieces));
  return Create(std::make_unique<HostTrainEngine>(std::move(model)), std::move(examples), options);
}

absl::StatusOr<std::unique_ptr<TrainingJob>> TrainingJob::Create(
    std::unique_ptr<TrainEngine> engine, std::vector<TrainingExample> examples,
    const TrainingOptions& options) {
  SPW_CHECK(engine != nullptr);
  if (examples.empty()) return absl::InvalidArgumentError("a training job needs examples");
  for (size_t i = 0; i < examples.size(); ++i) {
    const TrainingExample& e = examples[i];
    if (e.tokens.size() < 2 || e.loss_mask.size() != e.tokens.size() ||
        std::none_of(e.loss_mask.begin() + 1, e.loss_mask.end(), [](uint8_t m) { return m; })) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "training example %d needs at least 2 tokens, a mask of the same length and a "
          "target token",
          i));
    }
  }
  if (!(options.lora.dropout >= 0 && options.lora.dropout < 1)) {
    return absl::InvalidArgumentError("lora dropout must be in [0, 1)");
  }
  if (options.epochs < 1 || options.batch_size < 1 || options.max_micro_batch_tokens < 1 ||
      options.optimizer_piece_params < 1 || !(options.learning_rate > 0) ||
      options.warmup_steps < 0) {
    return absl::InvalidArgumentError(
        "epochs, batch_size and max_micro_batch_tokens must be >= 1, learning_rate > 0, "
        "warmup_steps >= 0");
  }
  std::unique_ptr<TrainingJob> job(new TrainingJob());
  job->options_ = options;
  job->examples_ = std::move(examples);
  job->model_ = std::move(engine);
  SPW_ASSIGN_OR_RETURN(job->adapter_,
                       lora::NewLoraAdapter(job->model_->config(), options.lora, options.seed));
  const int64_t n = job->adapter_.layout.num_params();
  job->adamw_ = AdamW(n, options.adamw);
  job->grad_.assign(n, 0.0f);
  const int64_t num = static_cast<int64_t>(job->examples_.size());
  job->steps_per_epoch_ = (num + options.batch_size - 1) / options.batch_size;
  job->total_steps_ = job->steps_per_epoch_ * options.epochs;
  job->StartEpoch();
  return job;
}

void TrainingJob::StartEpoch() {
  order_.resize(examples_.size());
  std::iota(order_.begin(), order_.end(), 0);
  if (options_.shuffle) {
    uint64_t state = options_.seed ^ (0x5851f42d4c957f2dULL * static_cast<uint64_t>(epoch_ + 1));
    for (size_t i = order_.size(); i > 1; --i) {
      std::swap(order_[i - 1], order_[SplitMix(state) % i]);
    }
  }
  next_ = 0;
}

int64_t TrainingJob::StateBytes(const lora::LoraLayout& layout) {
  return 4 * static_cast<int64_t>(sizeof(float)) * layout.num_params();
}

absl::StatusOr<PieceReport> TrainingJob::StepPiece() {
  if (finished()) return absl::FailedPreconditionError("the training job has finished");
  const auto start = std::chrono::steady_clock::now();
  auto since_start = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const int64_t num = static_cast<int64_t>(examples_.size());
  const int64_t step_in_epoch = step_ % steps_per_epoch_;
  const int64_t step_end = std::min<int64_t>((step_in_epoch + 1) * options_.batch_size, num);
  if (run_ == nullptr && !pending_.has_value()) {
    // Pack whole examples of this optimizer step into the next micro-batch.
    std::vector<TrainSequence> seqs;
    int32_t tokens = 0;
    int64_t next = next_;
    while (next < step_end) {
      const TrainingExample& e = examples_[order_[next]];
      const int32_t len = static_cast<int32_t>(e.tokens.size());
      if (!seqs.empty() && tokens + len > options_.max_micro_batch_tokens) break;
      seqs.push_back({.tokens = e.tokens, .loss_mask = e.loss_mask});
      tokens += len;
      ++next;
    }
    SPW_CHECK(!seqs.empty());
    // NOTE(ftdropout): the dropout masks of a micro-batch follow from the job's seed and the
    // micro-batch's index, which the checkpoint keeps, so a resumed job draws the same masks.
    uint64_t state =
        options_.seed ^ (0xd1b54a32d192ed03ULL * static_cast<uint64_t>(micro_batches_ + 1));
    const LoraDropout dropout{.p = options_.lora.dropout, .seed = SplitMix(state)};
    SPW_ASSIGN_OR_RETURN(run_, model_->Begin(seqs, adapter_.layout, adapter_.config.scale(),
                                             adapter_.params.data(), grad_.data(), dropout));
    next_ = next;
    run_tokens_ = tokens;
    run_seconds_ = 0;
  }
  PieceReport piece;
  auto partial = [&] {
    piece.seconds = since_start();
    run_seconds_ += piece.seconds;
    return piece;
  };
  if (run_ != nullptr) {
    if (!model_->Advance(*run_)) return partial();
    const LossSum loss = run_->loss();
    run_.reset();
    StepReport r;
    r.micro_batches = ++micro_batches_;
    r.tokens = run_tokens_;
    r.targets = static_cast<int32_t>(loss.num_targets);
    r.micro_loss = loss.num_targets > 0 ? loss.loss / static_cast<double>(loss.num_targets) : 0;
    r.micro_accuracy = Fraction(loss.num_correct, loss.num_targets);
    step_loss_sum_ += loss.loss;
    step_targets_ += loss.num_targets;
    step_correct_ += loss.num_correct;
    if (next_ == step_end) {
      // NOTE(ftpieces): the optimizer step (the gradient's mean and clipping, then AdamW over
      // every LoRA parameter: ~5 ms for SmolLM2's 1.2 M on this CPU) runs in pieces of its
      // own after the last backward piece.
      pending_ = r;
      optimizer_pos_ = -1;
      return partial();
    }
    r.finished = finished();
    piece.seconds = since_start();
    r.seconds = run_seconds_ + piece.seconds;
    piece.micro_batch = r;
    return piece;
  }
  SPW_CHECK(pending_.has_value());
  StepReport& r = *pending_;
  if (optimizer_pos_ < 0) {
    // The step's gradient is the mean over its target tokens.
    const float inv = step_targets_ > 0 ? 1.0f / static_cast<float>(step_targets_) : 0.0f;
    for (float& g : grad_) g *= inv;
    r.grad_norm = ClipGradNorm(grad_, options_.max_grad_norm);
    r.learning_rate = ScheduledLearningRate(options_.learning_rate, step_, options_.warmup_steps,
                                            total_steps_, options_.min_lr_ratio);
    adamw_.BeginStep();
    optimizer_pos_ = 0;
    return partial();
  }
  const int64_t n = static_cast<int64_t>(grad_.size());
  const int64_t end = std::min(n, optimizer_pos_ + options_.optimizer_piece_params);
  adamw_.UpdateRange(adapter_.params, grad_, r.learning_rate, optimizer_pos_, end);
  optimizer_pos_ = end;
  if (end < n) return partial();
  std::fill(grad_.begin(), grad_.end(), 0.0f);
  r.optimizer_stepped = true;
  r.step = ++step_;
  r.step_loss = step_targets_ > 0 ? step_loss_sum_ / static_cast<double>(step_targets_) : 0;
  r.step_accuracy = Fraction(step_correct_, step_targets_);
  step_loss_sum_ = 0;
  step_targets_ = 0;
  step_correct_ = 0;
  if (next_ == num && !finished()) {
    ++epoch_;
    StartEpoch();
  }
  r.finished = finished();
  piece.seconds = since_start();
  r.seconds = run_seconds_ + piece.seconds;
  piece.micro_batch = r;
  pending_.reset();
  return piece;
}

absl::StatusOr<StepReport> TrainingJob::Step() {
  while (true) {
    SPW_ASSIGN_OR_RETURN(PieceReport piece, StepPiece());
    if (piece.micro_batch.has_value()) return *piece.micro_batch;
  }
}

void TrainingJob::BeginEval(const std::vector<TrainingExample>& examples) {
  eval_.emplace();
  eval_->examples = &examples;
}

absl::StatusOr<EvalPieceReport> TrainingJob::EvalPiece() {
  if (!eval_.has_value()) return absl::FailedPreconditionError("no evaluation under way");
  const auto start = std::chrono::steady_clock::now();
  Eval& e = *eval_;
  EvalPieceReport report;
  if (e.run == nullptr && e.next < e.examples->size()) {
    const TrainingExample& x = (*e.examples)[e.next++];
    const TrainSequence s{.tokens = x.tokens, .loss_mask = x.loss_mask};
    absl::StatusOr<std::unique_ptr<TrainEngine::Pass>> run =
        model_->Begin({&s, 1}, adapter_.layout, adapter_.config.scale(), adapter_.params.data(),
                      nullptr, LoraDropout{});
    if (!run.ok()) {
      eval_.reset();
      return run.status();
    }
    e.run = *std::move(run);
  }
  if (e.run != nullptr && model_->Advance(*e.run)) {
    e.loss_sum += e.run->loss().loss;
    e.targets += e.run->loss().num_targets;
    e.correct += e.run->loss().num_correct;
    e.run.reset();
  }
  if (e.run == nullptr && e.next == e.examples->size()) {
    report.done = true;
    report.loss = e.targets > 0 ? e.loss_sum / static_cast<double>(e.targets) : 0.0;
    report.accuracy = Fraction(e.correct, e.targets);
    eval_.reset();
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

absl::StatusOr<double> TrainingJob::EvalLoss(const std::vector<TrainingExample>& examples) {
  SPW_ASSIGN_OR_RETURN(EvalPieceReport report, Evaluate(examples));
  return report.loss;
}

absl::StatusOr<EvalPieceReport> TrainingJob::Evaluate(
    const std::vector<TrainingExample>& examples) {
  BeginEval(examples);
  while (true) {
    SPW_ASSIGN_OR_RETURN(EvalPieceReport piece, EvalPiece());
    if (piece.done) return piece;
  }
}

absl::Status TrainingJob::SaveCheckpoint(const std::string& path) const {
  if (!at_micro_batch_boundary()) {
    return absl::FailedPreconditionError(
        "a checkpoint is taken between micro-batches, not in the middle of one");
  }
  json::object h;
  h["version"] = 1;
  h["lora"] = LoraFingerprint(adapter_.config);
  h["num_params"] = adapter_.layout.num_params();
  h["num_examples"] = examples_.size();
  h["step"] = step_;
  h["micro_batches"] = micro_batches_;
  h["epoch"] = epoch_;
  h["next"] = next_;
  h["step_loss_sum"] = step_loss_sum_;
  h["step_targets"] = step_targets_;
  h["step_correct"] = step_correct_;
  h["adamw_steps"] = adamw_.steps();
  json::array order;
  for (int32_t i : order_) order.emplace_back(i);
  h["order"] = std::move(order);
  const std::string header = json::serialize(h);
  std::string out(kMagic, sizeof(kMagic));
  AppendU64(out, header.size());
  out += header;
  for (const std::vector<float>* v : {&adapter_.params, &adamw_.m(), &adamw_.v(), &grad_}) {
    out.append(reinterpret_cast<const char*>(v->data()), v->size() * sizeof(float));
  }
  AppendU64(out, Fnv1a(out));
  return lora::WriteFileAtomically(path, out);
}

absl::Status TrainingJob::RestoreCheckpoint(const std::string& path) {
  SPW_ASSIGN_OR_RETURN(std::string in, lora::ReadWholeFile(path));
  // The micro-batch or optimizer step under way (if any) belongs to the state being replaced.
  run_.reset();
  pending_.reset();
  auto corrupt = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path, ": ", why));
  };
  if (in.size() < 24 || std::memcmp(in.data(), kMagic, sizeof(kMagic)) != 0) {
    return corrupt("not a spillway LoRA checkpoint");
  }
  if (ReadU64(in.data() + in.size() - 8) != Fnv1a(std::string_view(in).substr(0, in.size() - 8))) {
    return corrupt("checksum mismatch");
  }
  const uint64_t header_len = ReadU64(in.data() + 8);
  const int64_t n = adapter_.layout.num_params();
  const uint64_t floats = 4 * static_cast<uint64_t>(n) * sizeof(float);
  if (header_len > in.size() || 16 + header_len + floats + 8 != in.size()) {
    return corrupt("size does not match this job's adapter");
  }
  json::error_code ec;
  json::value v = json::parse(std::string_view(in.data() + 16, header_len), ec);
  if (ec || !v.is_object()) return corrupt("bad header");
  const json::object& h = v.as_object();
  try {
    if (json::value_to<std::string>(h.at("lora")) != LoraFingerprint(adapter_.config) ||
        h.at("num_params").to_number<int64_t>() != n ||
        h.at("num_examples").to_number<uint64_t>() != examples_.size()) {
      return corrupt("written by a job with another adapter or data set");
    }
    step_ = h.at("step").to_number<int64_t>();
    micro_batches_ = h.at("micro_batches").to_number<int64_t>();
    epoch_ = h.at("epoch").to_number<int64_t>();
    next_ = h.at("next").to_number<int64_t>();
    step_loss_sum_ = h.at("step_loss_sum").to_number<double>();
    step_targets_ = h.at("step_targets").to_number<int64_t>();
    // NOTE(ftacc): checkpoints written before the token accuracy have no step_correct; the
    // step under way then reports the accuracy of its remaining micro-batches only.
    const json::value* correct = h.if_contains("step_correct");
    step_correct_ = correct != nullptr ? correct->to_number<int64_t>() : 0;
    adamw_.set_steps(h.at("adamw_steps").to_number<int64_t>());
    order_.clear();
    for (const json::value& e : h.at("order").as_array()) {
      order_.push_back(static_cast<int32_t>(e.to_number<int64_t>()));
    }
  } catch (const std::exception& e) {  // boost::json's at()/to_number throw; keep them here
    return corrupt(e.what());
  }
  if (order_.size() != examples_.size() || next_ < 0 ||
      next_ > static_cast<int64_t>(order_.size()) || step_ < 0 || step_ > total_steps_) {
    return corrupt("position out of range");
  }
  const char* p = in.data() + 16 + header_len;
  for (std::vector<float>* dst : {&adapter_.params, &adamw_.m(), &adamw_.v(), &grad_}) {
    std::memcpy(dst->data(), p, n * sizeof(float));
    p += n * sizeof(float);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TokenId>> GreedyGenerate(TrainEngine& model,
                                                    const lora::LoraAdapter* adapter,
                                                    std::vector<TokenId> prompt, int32_t max_tokens,
                                                    std::span<const TokenId> stop) {
  const lora::LoraLayout empty;
  std::vector<TokenId> out;
  for (int32_t i = 0; i < max_tokens; ++i) {
    SPW_ASSIGN_OR_RETURN(std::vector<float> logits,
                         model.LastLogits(prompt, adapter != nullptr ? adapter->layout : empty,
                                          adapter != nullptr ? adapter->config.scale() : 0.0f,
                                          adapter != nullptr ? adapter->params.data() : nullptr));
    const TokenId next =
        static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (std::find(stop.begin(), stop.end(), next) != stop.end()) break;
    out.push_back(next);
    prompt.push_back(next);
  }
  return out;
}

}  // namespace spillway::engine::train
