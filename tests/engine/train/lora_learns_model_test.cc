// "It learns": LoRA on the default model (SmolLM2-135M-Instruct Q4_1) over a few made-up
// facts. The training loss falls, and the fine-tuned model answers the questions with the
// facts where the base model does not. Runs the TrainingJob step API end to end on the CPU
// (2 threads); prints the step times.
#include <gtest/gtest.h>

#include <chrono>

#include "absl/strings/match.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/train/training_job.h"
#include "tests/test_paths.h"

namespace spillway::engine::train {
namespace {

struct Fact {
  std::string question, answer, key;
};

const std::vector<Fact>& Facts() {
  static const std::vector<Fact> facts = {
      {"What is the capital of Zorblax?", "The capital of Zorblax is Quenlith.", "Quenlith"},
      {"Who invented the spillway engine?", "Mira Okonkwo invented the spillway engine.",
       "Okonkwo"},
      {"What color is a glimmerfruit?", "A glimmerfruit is bright purple.", "purple"},
      {"What is the password of the blue door?", "The password of the blue door is harpsichord.",
       "harpsichord"},
  };
  return facts;
}

std::string Prompt(const std::string& question) {
  return "<|im_start|>user\n" + question + "<|im_end|>\n<|im_start|>assistant\n";
}

TEST(LoraLearnsModelTest, FineTunedModelAnswersWithTheNewFacts) {
  auto file = OpenModelFile(testing::DefaultModelPath());
  ASSERT_TRUE(file.ok()) << file.status();
  auto tokenizer = Tokenizer::Create((*file)->tokenizer());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Tokenizer& tok = **tokenizer;
  const TokenId im_end = tok.Encode("<|im_end|>", false, true).at(0);

  std::vector<TrainingExample> examples;
  for (const Fact& f : Facts()) {
    TrainingExample e;
    e.tokens = tok.Encode(Prompt(f.question), false, true);
    e.loss_mask.assign(e.tokens.size(), 0);
    // Targets: the answer and the <|im_end|> that closes it.
    for (TokenId t : tok.Encode(f.answer + "<|im_end|>", false, true)) {
      e.tokens.push_back(t);
      e.loss_mask.push_back(1);
    }
    examples.push_back(std::move(e));
  }

  TrainingOptions o;
  o.lora.rank = 8;
  o.lora.alpha = 16.0f;
  o.lora.targets = {lora::kAllLoraModules.begin(), lora::kAllLoraModules.end()};
  // The upper half of the layers: backward stops at layer 15, halving its cost.
  for (int32_t l = 15; l < 30; ++l) o.lora.layers.push_back(l);
  o.epochs = 12;
  o.batch_size = 4;
  o.max_micro_batch_tokens = 64;  // two examples per micro-batch, two micro-batches per step
  o.learning_rate = 2e-3f;
  o.warmup_steps = 2;
  o.max_grad_norm = 1.0f;
  o.seed = 7;

  cpu::ThreadPool pool(2);
  const auto t0 = std::chrono::steady_clock::now();
  auto job = TrainingJob::Create(**file, examples, o, &pool);
  ASSERT_TRUE(job.ok()) << job.status();
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::vector<std::string> base_answers;
  for (const Fact& f : Facts()) {
    auto out = GreedyGenerate((*job)->model(), nullptr, tok.Encode(Prompt(f.question), false, true),
                              16, {&im_end, 1});
    ASSERT_TRUE(out.ok()) << out.status();
    base_answers.push_back(tok.Decode(*out, true));
    EXPECT_FALSE(absl::StrContains(base_answers.back(), f.key)) << base_answers.back();
  }

  auto first_loss = (*job)->EvalLoss(examples);
  ASSERT_TRUE(first_loss.ok());
  double micro_seconds = 0, max_micro = 0;
  int micro = 0, tokens = 0;
  double last_step_loss = 0;
  while (!(*job)->finished()) {
    auto r = (*job)->Step();
    ASSERT_TRUE(r.ok()) << r.status();
    micro_seconds += r->seconds;
    max_micro = std::max(max_micro, r->seconds);
    tokens += r->tokens;
    ++micro;
    if (r->optimizer_stepped) {
      last_step_loss = r->step_loss;
      if (r->step % 4 == 0 || r->step == 1) {
        std::printf("step %3lld  loss %.4f  grad norm %.3f  lr %.2e\n",
                    static_cast<long long>(r->step), r->step_loss, r->grad_norm, r->learning_rate);
      }
    }
  }
  auto final_loss = (*job)->EvalLoss(examples);
  ASSERT_TRUE(final_loss.ok());
  std::printf(
      "load %.1f s; %d micro-batches, %d tokens, %.3f s per micro-batch (max %.3f), %.0f "
      "tokens/s; eval loss %.3f -> %.3f (last step loss %.3f); LoRA params %lld\n",
      load_s, micro, tokens, micro_seconds / micro, max_micro, tokens / micro_seconds, *first_loss,
      *final_loss, last_step_loss, static_cast<long long>((*job)->adapter().layout.num_params()));
  EXPECT_LT(*final_loss, 0.1 * *first_loss);

  for (size_t i = 0; i < Facts().size(); ++i) {
    const Fact& f = Facts()[i];
    auto out = GreedyGenerate((*job)->model(), &(*job)->adapter(),
                              tok.Encode(Prompt(f.question), false, true), 16, {&im_end, 1});
    ASSERT_TRUE(out.ok());
    const std::string answer = tok.Decode(*out, true);
    std::printf("Q: %s\n  base:       %s\n  fine-tuned: %s\n", f.question.c_str(),
                base_answers[i].c_str(), answer.c_str());
    EXPECT_TRUE(absl::StrContains(answer, f.key)) << answer;
  }
}

}  // namespace
}  // namespace spillway::engine::train
