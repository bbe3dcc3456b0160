#include "engine/generator/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_format.h"
#include "common/check.h"
#include "common/status_macros.h"

namespace spillway::engine {
namespace {

struct Sequence {
  const GenerateRequest* request;
  Sampler sampler;
  int32_t computed = 0;             // tokens already in the KV cache
  std::vector<TokenId> all_tokens;  // prompt + generated
  bool done = false;
};

}  // namespace

Generator::Generator(Model& model, kvcache::KvCache& kv, GeneratorOptions options)
    : model_(model), kv_(kv), options_(options) {
  SPW_CHECK(options_.max_batch_tokens > 0);
}

absl::StatusOr<std::vector<GenerateResult>> Generator::Run(
    std::span<const GenerateRequest> requests, const TokenCallback& on_token) {
  const int64_t context = model_.config().context_length;
  std::vector<Sequence> seqs;
  seqs.reserve(requests.size());
  for (const GenerateRequest& r : requests) {
    if (r.prompt.empty() || static_cast<int64_t>(r.prompt.size()) >= context) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "prompt is %d tokens; it must be between 1 and %d (this model's context is %d tokens)",
          r.prompt.size(), context - 1, context));
    }
    seqs.push_back({&r, Sampler(r.sampling, r.prompt), 0, r.prompt, false});
  }
  std::vector<GenerateResult> results(requests.size());
  std::vector<float> logits;
  const int64_t vocab = model_.config().vocab_size;
  auto release_all = [&] {
    for (size_t i = 0; i < seqs.size(); ++i) kv_.Release(static_cast<kvcache::SeqId>(i));
  };

  while (true) {
    // Plan: decode tokens first (one per running sequence), then prompt chunks in the budget.
    Batch batch;
    std::vector<size_t> wanted;  // sequences whose logits this step produces
    int32_t budget = options_.max_batch_tokens;
    bool has_prompt = false;
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = 0; i < seqs.size() && budget > 0; ++i) {
        Sequence& s = seqs[i];
        const int32_t pending = static_cast<int32_t>(s.all_tokens.size()) - s.computed;
        const bool decoding = s.computed >= static_cast<int32_t>(s.request->prompt.size());
        if (s.done || pending <= 0 || decoding != (pass == 0)) continue;
        const int32_t n = std::min(pending, budget);
        const auto seq_id = static_cast<kvcache::SeqId>(i);
        if (!kv_.Grow(seq_id, n).has_value()) {
          release_all();
          return absl::ResourceExhaustedError(
              absl::StrFormat("the KV cache (%d blocks) cannot hold these %d requests at once",
                              kv_.occupancy().total_blocks, requests.size()));
        }
        const bool last = s.computed + n == static_cast<int32_t>(s.all_tokens.size());
        batch.tokens.insert(batch.tokens.end(), s.all_tokens.begin() + s.computed,
                            s.all_tokens.begin() + s.computed + n);
        batch.chunks.push_back({.num_tokens = n,
                                .first_position = s.computed,
                                .block_table = kv_.block_table(seq_id),
                                .want_logits = last});
        if (last) wanted.push_back(i);
        has_prompt |= !decoding;
        s.computed += n;
        budget -= n;
      }
    }
    if (batch.chunks.empty()) break;

    const auto start = std::chrono::steady_clock::now();
    if (absl::Status st = model_.Forward(batch, &logits); !st.ok()) {
      release_all();
      return st;
    }
    for (size_t w = 0; w < wanted.size(); ++w) {
      const size_t i = wanted[w];
      Sequence& s = seqs[i];
      SampleResult sample = s.sampler.Sample(std::span<float>(logits.data() + w * vocab, vocab));
      s.sampler.Accept(sample.token);
      s.all_tokens.push_back(sample.token);
      GenerateResult& out = results[i];
      out.tokens.push_back(sample.token);
      out.samples.push_back(std::move(sample));
      if (on_token) on_token(i, out.tokens.back());
      const auto& stop = s.request->stop_ids;
      if (!s.request->ignore_eos &&
          std::find(stop.begin(), stop.end(), out.tokens.back()) != stop.end()) {
        out.finish_reason = FinishReason::kStop;
        s.done = true;
      } else if (static_cast<int32_t>(out.tokens.size()) >= s.request->max_tokens ||
                 static_cast<int64_t>(s.all_tokens.size()) >= context) {
        out.finish_reason = FinishReason::kLength;
        s.done = true;
      }
      if (s.done) kv_.Release(static_cast<kvcache::SeqId>(i));
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    (has_prompt ? stats_.prefill_seconds : stats_.decode_seconds) += seconds;
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    stats_.prompt_tokens += static_cast<int64_t>(requests[i].prompt.size());
    stats_.generated_tokens += static_cast<int64_t>(results[i].tokens.size());
  }
  release_all();
  return results;
}

}  // namespace spillway::engine
