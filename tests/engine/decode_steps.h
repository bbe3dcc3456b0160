// DecodeSteps: the batches of a small scripted serving run over five sequences (two KV blocks
// each, blocks 3..12, contexts below 32 tokens, tokens below 40): prompt chunks and decode
// steps of any subset, positions tracked. Shared by the decode-graph tests (the CPU half in
// tests/engine/decode_graph_padding_test.cc, the GPU half in tests/gpu/decode_graph_test.cc).
#pragma once

#include <memory>
#include <vector>

#include "engine/lora/backend_adapter.h"
#include "engine/lora/lora_adapter.h"
#include "engine/model.h"
#include "kvcache/ids.h"

namespace spillway::engine::testing {

class DecodeSteps {
 public:
  DecodeSteps() {
    for (int s = 0; s < 5; ++s) {
      tables_.push_back(
          {static_cast<kvcache::BlockId>(2 * s + 3), static_cast<kvcache::BlockId>(2 * s + 4)});
    }
  }
  // A prompt chunk of `n` tokens for sequence `s`.
  Batch Prefill(int s, int n) {
    Batch batch;
    for (int i = 0; i < n; ++i) batch.tokens.push_back(static_cast<TokenId>((s * 7 + i * 3) % 40));
    Add(batch, s, n);
    return batch;
  }
  // One token for each of `seqs`.
  Batch Decode(const std::vector<int>& seqs, int step) {
    Batch batch;
    for (int s : seqs) {
      batch.tokens.push_back(static_cast<TokenId>((s * 5 + step) % 40));
      Add(batch, s, 1);
    }
    return batch;
  }
  // Prompt tokens of `s` beside a decode token of `t`: a step that is not pure decode.
  Batch Mixed(int s, int t) {
    Batch batch = Prefill(s, 3);
    batch.tokens.push_back(1);
    Add(batch, t, 1);
    return batch;
  }

 private:
  void Add(Batch& batch, int s, int n) {
    batch.chunks.push_back({.num_tokens = n,
                            .first_position = lengths_[s],
                            .block_table = tables_[s],
                            .want_logits = true});
    lengths_[s] += n;
  }

  std::vector<std::vector<kvcache::BlockId>> tables_;
  std::vector<int32_t> lengths_ = std::vector<int32_t>(5, 0);
};

// The adapters of the decode-graph tests with adapters: rank 4 on every projection of both
// layers, and rank 2 on q and v of layer 1 (another set of adapted projections).
inline lora::LoraConfig AllProjectionsLora() {
  lora::LoraConfig c;
  c.rank = 4;
  c.alpha = 8.0f;
  c.targets = {lora::kAllLoraModules.begin(), lora::kAllLoraModules.end()};
  return c;
}
inline lora::LoraConfig QvOfLayer1Lora() {
  lora::LoraConfig c;
  c.rank = 2;
  c.alpha = 2.0f;
  c.layers = {1};
  return c;
}

// Sets chunk i of `batch` to run with adapters[use[i]] (use[i] < 0: the base model).
inline void SetAdapters(Batch& batch, const std::vector<int>& use,
                        const std::vector<std::unique_ptr<lora::BackendLoraAdapter>>& adapters) {
  for (size_t i = 0; i < use.size() && i < batch.chunks.size(); ++i) {
    batch.chunks[i].adapter = use[i] < 0 ? nullptr : adapters[use[i]].get();
  }
}

}  // namespace spillway::engine::testing
