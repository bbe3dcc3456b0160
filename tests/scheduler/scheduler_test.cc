// Scheduler: table-driven multi-step simulations over a real small KvCache and the FakeModel
// (STYLE.md §9): which sequences run each step and with how many tokens, admission, chunked
// prefill, prefix reuse, preemption and resume, cancellation, deadlines, stop strings, n > 1,
// priorities and forward errors.
#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "tests/scheduler/sim.h"

namespace spillway::scheduler {
namespace {

using spillway::testing::FakeModel;
using spillway::testing::kByteEos;
using testing::Prompt;
using testing::Row;
using testing::Sim;
using Rows = std::vector<Row>;

TEST(Scheduler, ChunkedPrefillFillsTheTokenBudgetStepByStep) {
  Sim sim({.max_batch_tokens = 8});
  const RequestId a = sim.Add(Prompt(20, 1), {.max_tokens = 3});
  const RequestId b = sim.Add(Prompt(5, 2), {.max_tokens = 2});
  const kvcache::SeqId sa = sim.seq(a), sb = sim.seq(b);
  const std::vector<Rows> expected = {
      {{sa, 0, 8}},               // A's first chunk takes the whole budget
      {{sa, 8, 8}},               //
      {{sa, 16, 4}, {sb, 0, 4}},  // A's last chunk (samples), B admitted into what is left
      {{sa, 20, 1}, {sb, 4, 1}},  // A decodes; B's last prompt token (samples)
      {{sa, 21, 1}, {sb, 5, 1}},  // both finish
  };
  for (size_t step = 0; step < expected.size(); ++step) {
    EXPECT_EQ(sim.Step(), expected[step]) << "step " << step;
  }
  EXPECT_TRUE(sim.scheduler().idle());
  EXPECT_EQ(sim.output(a).choices[0].tokens, sim.Expected(Prompt(20, 1), 3));
  EXPECT_EQ(sim.output(b).choices[0].tokens, sim.Expected(Prompt(5, 2), 2));
  EXPECT_EQ(sim.output(a).choices[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ(sim.kv().occupancy().used_blocks, 0);
  EXPECT_EQ(sim.model().kv_errors(), 0);
}

TEST(Scheduler, DecodesAreNeverStalledByALongPrompt) {
  Sim sim({.num_blocks = 16, .max_batch_tokens = 8});
  const RequestId d = sim.Add(Prompt(4), {.max_tokens = 30});
  EXPECT_EQ(sim.Step(), (Rows{{sim.seq(d), 0, 4}}));
  const RequestId e = sim.Add(Prompt(40, 3), {.max_tokens = 2});
  const kvcache::SeqId sd = sim.seq(d), se = sim.seq(e);
  // Every step: D's decode token first, E's prompt in 7-token chunks behind it.
  const std::vector<Rows> expected = {
      {{sd, 4, 1}, {se, 0, 7}},   {{sd, 5, 1}, {se, 7, 7}},  {{sd, 6, 1}, {se, 14, 7}},
      {{sd, 7, 1}, {se, 21, 7}},  {{sd, 8, 1}, {se, 28, 7}}, {{sd, 9, 1}, {se, 35, 5}},
      {{sd, 10, 1}, {se, 40, 1}},
  };
  for (size_t step = 0; step < expected.size(); ++step) {
    EXPECT_EQ(sim.Step(), expected[step]) << "step " << step;
  }
  sim.RunToEnd();
  EXPECT_EQ(sim.output(d).choices[0].tokens, sim.Expected(Prompt(4), 30));
  EXPECT_EQ(sim.output(e).choices[0].tokens, sim.Expected(Prompt(40, 3), 2));
}

TEST(Scheduler, MaxRunningSeqsBoundsAdmission) {
  Sim sim({.max_batch_tokens = 64, .max_running_seqs = 2});
  const RequestId a = sim.Add(Prompt(3, 1), {.max_tokens = 2});
  const RequestId b = sim.Add(Prompt(3, 2), {.max_tokens = 2});
  const RequestId c = sim.Add(Prompt(3, 3), {.max_tokens = 2});
  const kvcache::SeqId sa = sim.seq(a), sb = sim.seq(b), sc = sim.seq(c);
  EXPECT_EQ(sim.Step(), (Rows{{sa, 0, 3}, {sb, 0, 3}}));
  EXPECT_EQ(sim.scheduler().WaitingForTesting(), (std::vector<kvcache::SeqId>{sc}));
  EXPECT_EQ(sim.scheduler().num_waiting_requests(), 1);
  EXPECT_EQ(sim.Step(), (Rows{{sa, 3, 1}, {sb, 3, 1}}));  // both finish
  EXPECT_EQ(sim.Step(), (Rows{{sc, 0, 3}}));
  EXPECT_EQ(sim.scheduler().num_waiting_requests(), 0);
}

TEST(Scheduler, PrefixCacheReusesFullBlocksAndReportsCachedTokens) {
  Sim sim({.num_blocks = 16, .max_batch_tokens = 64});
  const std::vector<TokenId> p = Prompt(40, 5);
  const RequestId r1 = sim.Add(p, {.max_tokens = 4});
  EXPECT_EQ(sim.Step(), (Rows{{sim.seq(r1), 0, 40}}));
  sim.RunToEnd();
  EXPECT_EQ(sim.output(r1).usage->cached_tokens, 0);

  // Shares 35 tokens: two full blocks come from the cache, 8 tokens are computed.
  std::vector<TokenId> p2(p.begin(), p.begin() + 35);
  for (TokenId t : Prompt(5, 9)) p2.push_back(t);
  const RequestId r2 = sim.Add(p2, {.max_tokens = 4});
  EXPECT_EQ(sim.Step(), (Rows{{sim.seq(r2), 32, 8}}));
  sim.RunToEnd();
  EXPECT_EQ(sim.output(r2).choices[0].tokens, sim.Expected(p2, 4));
  EXPECT_EQ(sim.output(r2).usage->cached_tokens, 32);
  EXPECT_EQ(sim.output(r2).usage->prompt_tokens, 40);

  // The same 32-token prompt: its last token is always computed, so one block is reused.
  const std::vector<TokenId> p3(p.begin(), p.begin() + 32);
  const RequestId r3 = sim.Add(p3, {.max_tokens = 2});
  EXPECT_EQ(sim.Step(), (Rows{{sim.seq(r3), 16, 16}}));
  sim.RunToEnd();
  EXPECT_EQ(sim.output(r3).choices[0].tokens, sim.Expected(p3, 2));
  EXPECT_EQ(sim.output(r3).usage->cached_tokens, 16);

  EXPECT_EQ(sim.scheduler().counters().prefix_cache_hits, 32 + 16);
  EXPECT_EQ(sim.scheduler().counters().prefix_cache_queries, 39 + 39 + 31);
  EXPECT_EQ(sim.model().kv_errors(), 0);
}

TEST(Scheduler, PreemptionRecomputesTheLatestAndResumesWithIdenticalTokens) {
  // 6 blocks hold 96 tokens; each request needs 70 (30 prompt + 40 generated).
  Sim sim({.num_blocks = 6, .max_batch_tokens = 64});
  const RequestId a = sim.Add(Prompt(30, 1), {.max_tokens = 40});
  const RequestId b = sim.Add(Prompt(30, 2), {.max_tokens = 40});
  const kvcache::SeqId sa = sim.seq(a), sb = sim.seq(b);
  EXPECT_EQ(sim.Step(), (Rows{{sa, 0, 30}, {sb, 0, 30}}));
  int preempted_at = -1;
  for (int step = 1; step < 200 && !sim.scheduler().idle(); ++step) {
    const Rows rows = sim.Step();
    if (!sim.last_plan().preempted.empty() && preempted_at < 0) {
      preempted_at = step;
      // Both took their 3rd block at position 32; A needs a 4th at position 48 and none is
      // free, so B (arrived later) gives up its blocks.
      EXPECT_EQ(sim.last_plan().preempted, (std::vector<kvcache::SeqId>{sb}));
      EXPECT_EQ(rows, (Rows{{sa, 48, 1}}));
      EXPECT_EQ(sim.scheduler().RunningForTesting(), (std::vector<kvcache::SeqId>{sa}));
      EXPECT_EQ(sim.scheduler().WaitingForTesting(), (std::vector<kvcache::SeqId>{sb}));
      EXPECT_TRUE(sim.kv().block_table(sb).empty());
      EXPECT_EQ(sim.scheduler().ChoiceForTesting(sb)->tokens.size(), 49u);  // kept
    }
  }
  EXPECT_EQ(preempted_at, 19);
  EXPECT_TRUE(sim.scheduler().idle());
  EXPECT_EQ(sim.output(a).choices[0].tokens, sim.Expected(Prompt(30, 1), 40));
  EXPECT_EQ(sim.output(b).choices[0].tokens, sim.Expected(Prompt(30, 2), 40));
  EXPECT_EQ(sim.output(b).choices[0].num_events, 40);  // one event per token, none repeated
  EXPECT_GE(sim.scheduler().counters().preemptions, 1);
  EXPECT_EQ(sim.kv().occupancy().used_blocks, 0);
  EXPECT_EQ(sim.model().kv_errors(), 0);
}

TEST(Scheduler, PreemptionPicksTheLowestPriorityEvenIfItArrivedFirst) {
  Sim sim({.num_blocks = 6, .max_batch_tokens = 64});
  const RequestId low = sim.Add(Prompt(30, 1), {.max_tokens = 40}, 1, /*priority=*/1);
  const RequestId high = sim.Add(Prompt(30, 2), {.max_tokens = 40}, 1, /*priority=*/0);
  const kvcache::SeqId sl = sim.seq(low), sh = sim.seq(high);
  EXPECT_EQ(sim.Step(), (Rows{{sh, 0, 30}, {sl, 0, 30}}));
  std::set<kvcache::SeqId> victims;
  while (!sim.scheduler().idle()) {
    sim.Step();
    victims.insert(sim.last_plan().preempted.begin(), sim.last_plan().preempted.end());
  }
  EXPECT_EQ(victims, (std::set<kvcache::SeqId>{sl}));
  EXPECT_EQ(sim.output(low).choices[0].tokens, sim.Expected(Prompt(30, 1), 40));
  EXPECT_EQ(sim.output(high).choices[0].tokens, sim.Expected(Prompt(30, 2), 40));
}

TEST(Scheduler, PriorityOrdersTheWaitingQueueThenArrival) {
  Sim sim({.max_running_seqs = 1});
  const RequestId r1 = sim.Add(Prompt(3, 1), {.max_tokens = 1}, 1, 5);
  const RequestId r2 = sim.Add(Prompt(3, 2), {.max_tokens = 1}, 1, 0);
  const RequestId r3 = sim.Add(Prompt(3, 3), {.max_tokens = 1}, 1, 5);
  const RequestId r4 = sim.Add(Prompt(3, 4), {.max_tokens = 1}, 1, -1);
  const std::vector<kvcache::SeqId> order = {sim.seq(r4), sim.seq(r2), sim.seq(r1), sim.seq(r3)};
  for (kvcache::SeqId s : order) EXPECT_EQ(sim.Step(), (Rows{{s, 0, 3}}));
  EXPECT_TRUE(sim.scheduler().idle());
}

TEST(Scheduler, CancelMidDecodeFreesBlocksAtOnce) {
  Sim sim({});
  const RequestId r = sim.Add(Prompt(40), {.max_tokens = 100});
  const RequestId other = sim.Add(Prompt(10, 7), {.max_tokens = 5});
  for (int i = 0; i < 3; ++i) sim.Step();
  EXPECT_EQ(sim.kv().occupancy().used_blocks, 3 + 1);
  sim.scheduler().Cancel(r, absl::CancelledError("client went away"), sim.kv());
  EXPECT_EQ(sim.kv().occupancy().used_blocks, 1);  // only `other`'s block
  sim.Collect();
  const auto& out = sim.output(r);
  EXPECT_EQ(out.choices[0].finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(out.choices[0].final_event.error.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(out.choices[0].tokens.size(), 3u);
  ASSERT_TRUE(out.usage.has_value());
  EXPECT_EQ(out.usage->completion_tokens, 3);
  EXPECT_TRUE(out.closed);
  EXPECT_EQ(sim.Step(), (Rows{{sim.seq(other), 12, 1}}));
  sim.scheduler().Cancel(r, absl::CancelledError("again"), sim.kv());  // ignored
  sim.RunToEnd();
  EXPECT_EQ(sim.output(other).choices[0].finish_reason, FinishReason::kLength);
}

TEST(Scheduler, PassedDeadlinesCancelRunningAndWaitingRequests) {
  Sim sim({.max_running_seqs = 1});
  const auto t0 = std::chrono::steady_clock::now();
  Request running = sim.MakeRequest(Prompt(5), {.max_tokens = 50});
  running.deadline = t0 + std::chrono::milliseconds(10);
  const RequestId r = running.id;
  sim.scheduler().Add(std::move(running));
  Request waiting = sim.MakeRequest(Prompt(5, 1), {.max_tokens = 50});
  waiting.deadline = t0 + std::chrono::milliseconds(20);
  const RequestId w = waiting.id;
  sim.scheduler().Add(std::move(waiting));
  sim.Step();
  sim.scheduler().CancelExpired(t0, sim.kv());
  EXPECT_EQ(sim.scheduler().num_running_seqs(), 1);
  sim.scheduler().CancelExpired(t0 + std::chrono::milliseconds(10), sim.kv());
  EXPECT_EQ(sim.scheduler().num_running_seqs(), 0);
  EXPECT_EQ(sim.kv().occupancy().used_blocks, 0);
  sim.scheduler().CancelExpired(t0 + std::chrono::milliseconds(25), sim.kv());
  EXPECT_TRUE(sim.scheduler().idle());
  sim.Collect();
  for (RequestId id : {r, w}) {
    const auto& c = sim.output(id).choices[0];
    EXPECT_EQ(c.finish_reason, FinishReason::kCancelled);
    EXPECT_EQ(c.final_event.error.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_TRUE(sim.output(id).closed);
  }
  EXPECT_EQ(sim.output(r).usage->completion_tokens, 1);
  EXPECT_EQ(sim.output(w).usage->completion_tokens, 0);
  EXPECT_EQ(sim.scheduler().num_waiting_requests(), 0);
}

TEST(Scheduler, StopStringsAcrossTokensAreCutAndEosStops) {
  // The fake model spells `text` one byte-token per step after the 5-token prompt.
  const std::string text = "Hello STOP world";
  auto spell = [text](std::span<const TokenId> context) -> TokenId {
    const size_t i = context.size() - 5;
    return i < text.size() ? static_cast<unsigned char>(text[i]) : kByteEos;
  };
  Sim sim({.rule = spell});
  const RequestId r = sim.Add(Prompt(5), {.max_tokens = 50, .stop_strings = {"STOP"}});
  const RequestId eos = sim.Add(Prompt(5), {.max_tokens = 50});
  const RequestId ignore = sim.Add(Prompt(5), {.max_tokens = 18, .ignore_eos = true});
  sim.RunToEnd();
  const auto& c = sim.output(r).choices[0];
  EXPECT_EQ(c.text, "Hello ");
  EXPECT_EQ(c.finish_reason, FinishReason::kStop);
  EXPECT_EQ(c.final_event.stop_string, "STOP");
  EXPECT_EQ(c.tokens.size(), 10u);
  EXPECT_EQ(sim.output(r).usage->completion_tokens, 10);

  const auto& e = sim.output(eos).choices[0];
  EXPECT_EQ(e.text, text);
  EXPECT_EQ(e.finish_reason, FinishReason::kStop);
  EXPECT_FALSE(e.final_event.stop_token.has_value());
  EXPECT_EQ(e.tokens.size(), text.size());                  // EOS not emitted
  EXPECT_EQ(sim.output(eos).usage->completion_tokens, 17);  // but counted

  const auto& g = sim.output(ignore).choices[0];
  EXPECT_EQ(g.text, text);
  EXPECT_EQ(g.finish_reason, FinishReason::kLength);
  EXPECT_EQ(g.tokens.size(), 18u);
}

TEST(Scheduler, ContextLengthEndsASequence) {
  Sim sim({.context_tokens = 24});
  const RequestId r = sim.Add(Prompt(20), {.max_tokens = 10});
  sim.RunToEnd();
  EXPECT_EQ(sim.output(r).choices[0].tokens.size(), 4u);
  EXPECT_EQ(sim.output(r).choices[0].finish_reason, FinishReason::kLength);
}

TEST(Scheduler, ChoicesShareThePromptBlocksAfterTheFirstPrefill) {
  Sim sim({});
  const std::vector<TokenId> p = Prompt(40, 2);
  const RequestId r = sim.Add(p, {.max_tokens = 5}, /*n=*/3);
  const kvcache::SeqId c0 = sim.seq(r, 0), c1 = sim.seq(r, 1), c2 = sim.seq(r, 2);
  EXPECT_EQ(sim.Step(), (Rows{{c0, 0, 40}}));
  EXPECT_EQ(sim.Step(), (Rows{{c0, 40, 1}, {c1, 32, 8}, {c2, 32, 8}}));
  const std::span<const kvcache::BlockId> t0 = sim.kv().block_table(c0);
  const std::span<const kvcache::BlockId> t1 = sim.kv().block_table(c1);
  EXPECT_EQ(t0[0], t1[0]);
  EXPECT_EQ(t0[1], t1[1]);
  EXPECT_NE(t0[2], t1[2]);  // the partial block is each choice's own
  sim.RunToEnd();
  const auto& out = sim.output(r);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(out.choices[i].tokens, sim.Expected(p, 5)) << i;
    EXPECT_EQ(out.choices[i].num_final_events, 1) << i;
  }
  EXPECT_EQ(out.usage->completion_tokens, 15);
  EXPECT_EQ(out.usage->prompt_tokens, 40);
  EXPECT_EQ(out.events_after_usage, 0);
  EXPECT_TRUE(out.closed);
  EXPECT_EQ(sim.model().kv_errors(), 0);
}

TEST(Scheduler, ChoiceIUsesSeedPlusI) {
  Sim sim({.rule = &FakeModel::LastTokenRule});
  engine::SamplingParams hot{.temperature = 5.0f, .seed = 42};
  const RequestId together = sim.Add(Prompt(8), {.max_tokens = 12}, 3, 0, hot);
  std::vector<RequestId> alone;
  for (uint64_t i = 0; i < 3; ++i) {
    engine::SamplingParams s = hot;
    s.seed = 42 + i;
    alone.push_back(sim.Add(Prompt(8), {.max_tokens = 12}, 1, 0, s));
  }
  sim.RunToEnd();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(sim.output(together).choices[i].tokens, sim.output(alone[i]).choices[0].tokens);
  }
  EXPECT_NE(sim.output(together).choices[0].tokens, sim.output(together).choices[1].tokens);
}

TEST(Scheduler, ForwardErrorFailsTheBatchAndTheLoopGoesOn) {
  Sim sim({.max_running_seqs = 2});
  const RequestId a = sim.Add(Prompt(10, 1), {.max_tokens = 5});
  const RequestId b = sim.Add(Prompt(10, 2), {.max_tokens = 5}, /*n=*/2);
  const RequestId c = sim.Add(Prompt(10, 3), {.max_tokens = 5});  // waits: 2 running max
  sim.Step();
  sim.model().FailNext(absl::InternalError("device lost"));
  sim.Step();
  for (RequestId id : {a, b}) {
    const auto& out = sim.output(id);
    for (const auto& choice : out.choices) {
      EXPECT_EQ(choice.finish_reason, FinishReason::kError);
      EXPECT_EQ(choice.final_event.error, absl::InternalError("device lost"));
    }
    EXPECT_TRUE(out.closed);
    EXPECT_TRUE(out.usage.has_value());
  }
  EXPECT_EQ(sim.kv().occupancy().used_blocks, 0);
  sim.RunToEnd();
  EXPECT_EQ(sim.output(c).choices[0].tokens, sim.Expected(Prompt(10, 3), 5));
}

TEST(Scheduler, APromptThatCanNeverFitFailsWithResourceExhausted) {
  Sim sim({.num_blocks = 2});
  const RequestId r = sim.Add(Prompt(40), {.max_tokens = 5});
  sim.RunToEnd(3);
  EXPECT_EQ(sim.output(r).choices[0].finish_reason, FinishReason::kError);
  EXPECT_EQ(sim.output(r).choices[0].final_event.error.code(),
            absl::StatusCode::kResourceExhausted);
  // A sequence that outgrows the whole pool while running alone fails the same way.
  const RequestId g = sim.Add(Prompt(20), {.max_tokens = 40});
  sim.RunToEnd();
  EXPECT_EQ(sim.output(g).choices[0].finish_reason, FinishReason::kError);
  EXPECT_EQ(sim.output(g).choices[0].tokens.size(), 13u);  // sampled from positions 19..31
  EXPECT_EQ(sim.kv().occupancy().used_blocks, 0);
}

}  // namespace
}  // namespace spillway::scheduler
