// AdapterRegistry (server/adapters/): registration and its errors (duplicate names,
// --max-loras, --max-lora-rank, adapters made for another model, PEFT directories), content
// ids for the prefix cache, backend work on the "engine" runner, and unloading while requests
// still hold the adapter. Also the vLLM load/unload endpoint logic and `model` resolution.
#include "server/adapters/adapter_registry.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "common/check.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/lora/backend_adapter.h"
#include "engine/lora/peft_io.h"
#include "server/adapters/lora_endpoints.h"
#include "server/openai/api_error.h"
#include "server/openai/request_parser.h"
#include "tests/engine/train/tiny_random_model.h"
#include "tests/test_paths.h"

namespace spillway::server::adapters {
namespace {

using engine::lora::LoraAdapter;
using engine::lora::LoraConfig;

LoraConfig Rank(int32_t rank) {
  LoraConfig c;
  c.rank = rank;
  return c;
}

class AdapterRegistryTest : public ::testing::Test {
 protected:
  // 2 layers, hidden 16, 4 heads, 2 KV heads, head_dim 4, ffn 24.
  AdapterRegistryTest() : model_(engine::testing::TinyRandomModel(1).config()), backend_(1) {}

  LoraAdapter Make(uint64_t seed, LoraConfig config = Rank(2)) {
    absl::StatusOr<LoraAdapter> a = engine::lora::NewLoraAdapter(model_, config, seed);
    SPW_CHECK(a.ok()) << a.status();
    for (size_t i = 0; i < a->params.size(); ++i) a->params[i] += 0.01f * (i % 7);  // B != 0
    return *std::move(a);
  }

  // Runs backend work inline, counting it (the engine loop's stand-in).
  AdapterRegistry::RunOnEngine Runner() {
    return [this](absl::AnyInvocable<void() &&> task) {
      ++engine_tasks_;
      std::move(task)();
    };
  }

  engine::ModelConfig model_;
  engine::cpu::CpuBackend backend_;
  int engine_tasks_ = 0;
};

TEST_F(AdapterRegistryTest, AddFindListRemove) {
  AdapterRegistry r(model_, backend_, Runner(), {.max_loras = 4});
  absl::StatusOr<AdapterInfo> a = r.Add("a", Make(1), "/src/a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(engine_tasks_, 1);  // loaded on the engine runner
  EXPECT_EQ(a->name, "a");
  EXPECT_EQ(a->source, "/src/a");
  EXPECT_EQ(a->rank, 2);
  EXPECT_NE(a->id, kvcache::kBaseModel);
  ASSERT_TRUE(r.Add("b", Make(2), "/src/b").ok());
  std::optional<ResolvedAdapter> found = r.Find("a");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->ref.id, a->id);
  ASSERT_NE(found->ref.weights, nullptr);
  EXPECT_EQ(found->ref.weights->adapter().params, Make(1).params);
  EXPECT_FALSE(r.Find("c").has_value());
  ASSERT_EQ(r.List().size(), 2u);
  EXPECT_EQ(r.List()[1].name, "b");

  EXPECT_EQ(r.Add("a", Make(3), "x").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.Remove("zzz").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(r.Remove("a").ok());
  EXPECT_FALSE(r.Find("a").has_value());
  EXPECT_EQ(r.size(), 1);
  EXPECT_TRUE(r.Add("a", Make(3), "x").ok());  // the name is free again
}

TEST_F(AdapterRegistryTest, IdsFollowContent) {
  AdapterRegistry r(model_, backend_, Runner());
  const kvcache::AdapterId x = r.Add("x", Make(1), "").value().id;
  const kvcache::AdapterId y = r.Add("y", Make(2), "").value().id;
  const kvcache::AdapterId x2 = r.Add("x2", Make(1), "").value().id;
  EXPECT_NE(x, y);
  EXPECT_EQ(x, x2);  // same weights: same KV, so sharing blocks is right
  EXPECT_GT(x, 0);
  EXPECT_GT(y, 0);
}

TEST_F(AdapterRegistryTest, Limits) {
  AdapterRegistry r(model_, backend_, Runner(), {.max_loras = 2, .max_lora_rank = 4});
  ASSERT_TRUE(r.Add("a", Make(1), "").ok());
  ASSERT_TRUE(r.Add("b", Make(2), "").ok());
  EXPECT_EQ(r.Add("c", Make(3), "").status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(r.Remove("a").ok());
  const absl::Status big = r.Add("c", Make(3, Rank(8)), "").status();
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.message().find("max_lora_rank 4"), std::string_view::npos) << big;
  EXPECT_EQ(r.Add("", Make(3), "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AdapterRegistryTest, RefusesAnAdapterMadeForAnotherModel) {
  AdapterRegistry r(model_, backend_, Runner());
  engine::ModelConfig other = model_;
  other.hidden = 12;
  LoraAdapter a = engine::lora::NewLoraAdapter(other, Rank(2), 1).value();
  const absl::Status st = r.Add("a", std::move(a), "").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  engine::ModelConfig deeper = model_;
  deeper.num_layers = 3;
  LoraAdapter b = engine::lora::NewLoraAdapter(deeper, Rank(2), 1).value();
  EXPECT_EQ(r.Add("b", std::move(b), "").status().code(), absl::StatusCode::kInvalidArgument);
  LoraAdapter c = Make(1);
  c.params.pop_back();
  EXPECT_EQ(r.Add("c", std::move(c), "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_tasks_, 0);  // nothing reached the backend
  EXPECT_EQ(r.size(), 0);
}

TEST_F(AdapterRegistryTest, UnloadWaitsForTheRequestsThatHoldIt) {
  AdapterRegistry r(model_, backend_, Runner());
  ASSERT_TRUE(r.Add("a", Make(1), "").ok());
  scheduler::AdapterRef held = r.Find("a")->ref;  // a running request's reference
  std::weak_ptr<const engine::lora::BackendLoraAdapter> weak = held.weights;
  const int tasks = engine_tasks_;
  ASSERT_TRUE(r.Remove("a").ok());
  EXPECT_FALSE(r.Find("a").has_value());  // new requests: 404
  EXPECT_FALSE(weak.expired());           // the running one keeps its weights
  EXPECT_EQ(r.num_draining(), 1);
  held = {};  // the request ends
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(engine_tasks_, tasks + 1);  // freed through the engine runner
  EXPECT_EQ(r.num_draining(), 0);
}

TEST_F(AdapterRegistryTest, AddFromAnotherThreadWaitsForTheEngineThread) {
  // A runner that hands tasks to a separate "engine" thread, as EngineLoop::Post does.
  absl::Mutex mu;
  absl::CondVar cv;
  std::vector<absl::AnyInvocable<void() &&>> queue;
  bool stop = false;
  std::thread engine([&] {
    absl::MutexLock lock(&mu);
    for (;;) {
      while (queue.empty() && !stop) cv.Wait(&mu);
      if (queue.empty()) return;  // stopped and drained
      std::vector<absl::AnyInvocable<void()&&>> tasks = std::move(queue);
      queue.clear();
      mu.Unlock();
      for (auto& t : tasks) std::move(t)();
      mu.Lock();
    }
  });
  {
    AdapterRegistry r(model_, backend_, [&](absl::AnyInvocable<void() &&> task) {
      absl::MutexLock lock(&mu);
      queue.push_back(std::move(task));
      cv.Signal();
    });
    ASSERT_TRUE(r.Add("a", Make(1), "").ok());
    EXPECT_TRUE(r.Find("a").has_value());
  }
  {
    absl::MutexLock lock(&mu);
    stop = true;
    cv.Signal();
  }
  engine.join();
}

TEST_F(AdapterRegistryTest, PeftDirectories) {
  AdapterRegistry r(model_, backend_, Runner());
  const std::string dir = testing::BinaryPath("adapter_registry_test_peft");
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(engine::lora::SavePeftAdapter(Make(4), model_, dir).ok());
  absl::StatusOr<AdapterInfo> a = r.AddPeftDir("p", dir);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->source, dir);
  EXPECT_EQ(r.AddPeftDir("q", dir + "/missing").status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST_F(AdapterRegistryTest, LoadAndUnloadEndpoints) {
  AdapterRegistry r(model_, backend_, Runner(), {.max_loras = 1});
  const std::string dir = testing::BinaryPath("adapter_registry_test_endpoints");
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(engine::lora::SavePeftAdapter(Make(5), model_, dir).ok());
  const std::string body = R"({"lora_name":"x","lora_path":")" + dir + R"("})";
  EXPECT_EQ(LoadLoraAdapter(body, r).value(), "Success: LoRA adapter 'x' added successfully.");
  auto error = [](const absl::StatusOr<std::string>& s) {
    return openai::ApiErrorFromStatus(s.status());
  };
  EXPECT_EQ(error(LoadLoraAdapter(body, r)).http_status, 400);  // already loaded
  EXPECT_EQ(error(LoadLoraAdapter(body, r)).message,
            "The lora adapter 'x' has already been loaded.");
  const std::string y = R"({"lora_name":"y","lora_path":")" + dir + R"("})";
  EXPECT_EQ(error(LoadLoraAdapter(y, r)).http_status, 400);  // --max-loras 1
  EXPECT_EQ(error(LoadLoraAdapter(R"({"lora_name":"y"})", r)).message,
            "Both 'lora_name' and 'lora_path' must be provided.");
  EXPECT_EQ(
      error(LoadLoraAdapter(R"({"lora_name":"z","lora_path":"/nonexistent/dir"})", r)).http_status,
      404);
  EXPECT_EQ(error(UnloadLoraAdapter(R"({"lora_name":"nope"})", r)).http_status, 404);
  EXPECT_EQ(error(UnloadLoraAdapter(R"({"lora_name":"nope"})", r)).message,
            "The lora adapter 'nope' cannot be found.");
  EXPECT_EQ(error(UnloadLoraAdapter(R"({})", r)).http_status, 400);
  EXPECT_EQ(UnloadLoraAdapter(R"({"lora_name":"x"})", r).value(),
            "Success: LoRA adapter 'x' removed successfully.");
  std::filesystem::remove_all(dir);
}

TEST_F(AdapterRegistryTest, ModelFieldResolvesToTheBaseModelOrAnAdapter) {
  AdapterRegistry r(model_, backend_, Runner());
  const kvcache::AdapterId id = r.Add("tuned", Make(1), "").value().id;
  openai::ServedModel served;
  served.name = "base";
  served.adapters = &r;
  EXPECT_TRUE(openai::ResolveModel("base", served)->adapter.is_base());
  absl::StatusOr<openai::ResolvedModel> t = openai::ResolveModel("tuned", served);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->name, "tuned");
  EXPECT_EQ(t->adapter.id, id);
  EXPECT_FALSE(t->adapter.is_base());
  const absl::Status missing = openai::ResolveModel("other", served).status();
  EXPECT_EQ(openai::ApiErrorFromStatus(missing).http_status, 404);
  EXPECT_EQ(openai::ErrorCodeOf(missing), "model_not_found");
  served.adapters = nullptr;
  EXPECT_FALSE(openai::ResolveModel("tuned", served).ok());
}

}  // namespace
}  // namespace spillway::server::adapters
