#include "server/adapters/adapter_registry.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "engine/lora/backend_adapter.h"
#include "engine/lora/peft_io.h"

// NOTE(adapters): xxHash header-only, as kvcache/block_hash.cc does.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace spillway::server::adapters {

using engine::lora::BackendLoraAdapter;
using engine::lora::LoraAdapter;
using engine::lora::LoraLayout;
using engine::lora::LoraModule;

struct AdapterRegistry::Shared {
  std::atomic<int32_t> num_draining{0};
};

struct AdapterRegistry::Entry {
  AdapterInfo info;
  std::shared_ptr<const BackendLoraAdapter> weights;
};

namespace {

// NOTE(adapters): an adapter's prefix-cache id is a hash of its content (config and weights),
// not a counter: the SSD tier keeps KV blocks across restarts (--kv-disk-persist), so an id
// handed out by a counter could name another adapter's blocks after a restart. The same
// weights loaded again (or under another name) find their blocks again, which is correct.
kvcache::AdapterId ContentId(const LoraAdapter& a) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset_withSeed(st, 0x5350574c4f5241ull);  // "SPWLORA"
  const int32_t rank = a.config.rank;
  const float alpha = a.config.alpha;
  XXH3_64bits_update(st, &rank, sizeof(rank));
  XXH3_64bits_update(st, &alpha, sizeof(alpha));
  for (LoraModule m : a.config.targets) {
    const int32_t v = static_cast<int32_t>(m);
    XXH3_64bits_update(st, &v, sizeof(v));
  }
  for (int32_t l : a.config.layers) XXH3_64bits_update(st, &l, sizeof(l));
  XXH3_64bits_update(st, a.params.data(), a.params.size() * sizeof(float));
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  // Positive and never kBaseModel (0).
  return static_cast<kvcache::AdapterId>((h & 0x7fffffffu) | (h & 0x7fffffffu ? 0 : 1));
}

absl::Status CheckShape(const LoraAdapter& a, const engine::ModelConfig& model, int32_t max_rank) {
  const int32_t rank = a.config.rank;
  if (rank < 1 || rank > max_rank) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "LoRA rank %d is greater than max_lora_rank %d (start the server with a larger "
        "--max-lora-rank)",
        rank, max_rank));
  }
  for (int32_t l : a.config.layers) {
    if (l < 0 || l >= model.num_layers) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the adapter adapts layer %d; the model has %d layers", l, model.num_layers));
    }
  }
  const LoraLayout want(model, a.config);
  const LoraLayout& got = a.layout;
  bool same = got.num_layers() == want.num_layers() && got.rank() == want.rank() &&
              got.num_params() == want.num_params() &&
              static_cast<int64_t>(a.params.size()) == want.num_params();
  for (int64_t l = 0; same && l < want.num_layers(); ++l) {
    for (LoraModule m : engine::lora::kAllLoraModules) {
      const auto& x = got.slot(l, m);
      const auto& y = want.slot(l, m);
      same = same && x.a_offset == y.a_offset && x.b_offset == y.b_offset && x.in == y.in &&
             x.out == y.out;
    }
  }
  if (!same) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the adapter's matrices do not fit this model (%d layers, hidden %d, ffn %d): it was "
        "made for another model",
        model.num_layers, model.hidden, model.ffn_hidden));
  }
  return absl::OkStatus();
}

int64_t NowUnix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

AdapterRegistry::AdapterRegistry(const engine::ModelConfig& model, engine::Backend& backend,
                                 RunOnEngine run_on_engine, AdapterRegistryOptions options)
    : model_(model),
      backend_(backend),
      run_on_engine_(std::move(run_on_engine)),
      options_(options),
      shared_(std::make_shared<Shared>()) {
  SPW_CHECK(run_on_engine_ != nullptr);
  SPW_CHECK(options_.max_loras >= 0 && options_.max_lora_rank >= 1);
}

AdapterRegistry::~AdapterRegistry() = default;

absl::StatusOr<AdapterInfo> AdapterRegistry::Add(std::string name, LoraAdapter adapter,
                                                 std::string source) {
  if (name.empty()) return absl::InvalidArgumentError("the adapter's name is empty");
  if (!backend_.SupportsLora()) {
    return absl::UnimplementedError("this backend cannot serve LoRA adapters");
  }
  SPW_RETURN_IF_ERROR(CheckShape(adapter, model_, options_.max_lora_rank));
  AdapterInfo info{.name = std::move(name),
                   .source = std::move(source),
                   .id = ContentId(adapter),
                   .rank = adapter.config.rank,
                   .alpha = adapter.config.alpha,
                   .created_unix = NowUnix()};
  {
    absl::MutexLock lock(&mu_);
    for (const Entry& e : entries_) {
      if (e.info.name == info.name) {
        return absl::AlreadyExistsError(
            absl::StrCat("The lora adapter '", info.name, "' has already been loaded."));
      }
    }
    if (static_cast<int32_t>(entries_.size()) + num_loading_ >= options_.max_loras) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%d LoRA adapters are loaded, the most --max-loras allows; unload one first",
          options_.max_loras));
    }
    ++num_loading_;
  }

  // Load on the engine-loop thread and wait for it.
  absl::StatusOr<std::unique_ptr<BackendLoraAdapter>> loaded;
  absl::Notification done;
  run_on_engine_([&] {
    loaded = BackendLoraAdapter::Load(adapter, backend_);
    done.Notify();
  });
  done.WaitForNotification();

  absl::MutexLock lock(&mu_);
  --num_loading_;
  if (!loaded.ok()) return loaded.status();
  // The weights are freed on the engine-loop thread, whoever drops the last reference.
  auto deleter = [run = run_on_engine_, shared = shared_](const BackendLoraAdapter* p) {
    run([p, shared] {
      delete p;
      shared->num_draining.fetch_sub(1);
    });
  };
  std::shared_ptr<const BackendLoraAdapter> weights(loaded->release(), std::move(deleter));
  for (const Entry& e : entries_) {  // a racing Add of the same name won
    if (e.info.name == info.name) {
      shared_->num_draining.fetch_add(1);  // the deleter counts it down
      return absl::AlreadyExistsError(
          absl::StrCat("The lora adapter '", info.name, "' has already been loaded."));
    }
  }
  // Distinct adapters never share an id within a process (a 31-bit hash may collide).
  for (bool clash = true; clash;) {
    clash = false;
    for (const Entry& e : entries_) {
      if (e.info.id == info.id && e.weights->adapter().params != weights->adapter().params) {
        info.id = info.id == 0x7fffffff ? 1 : info.id + 1;
        clash = true;
      }
    }
  }
  entries_.push_back(Entry{.info = info, .weights = std::move(weights)});
  return info;
}

absl::StatusOr<AdapterInfo> AdapterRegistry::AddPeftDir(std::string name, const std::string& dir) {
  SPW_ASSIGN_OR_RETURN(LoraAdapter adapter, engine::lora::LoadPeftAdapter(dir, model_));
  return Add(std::move(name), std::move(adapter), dir);
}

absl::Status AdapterRegistry::Remove(std::string_view name) {
  std::shared_ptr<const BackendLoraAdapter> weights;
  {
    absl::MutexLock lock(&mu_);
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const Entry& e) { return e.info.name == name; });
    if (it == entries_.end()) {
      return absl::NotFoundError(
          absl::StrCat("The lora adapter '", std::string(name), "' cannot be found."));
    }
    weights = std::move(it->weights);
    entries_.erase(it);
    shared_->num_draining.fetch_add(1);
  }
  // Dropped outside the lock: the deleter may run the free inline (loop stopped).
  weights.reset();
  return absl::OkStatus();
}

std::optional<ResolvedAdapter> AdapterRegistry::Find(std::string_view name) const {
  absl::MutexLock lock(&mu_);
  for (const Entry& e : entries_) {
    if (e.info.name == name) {
      return ResolvedAdapter{.info = e.info, .ref = {.id = e.info.id, .weights = e.weights}};
    }
  }
  return std::nullopt;
}

std::vector<AdapterInfo> AdapterRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<AdapterInfo> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) out.push_back(e.info);
  return out;
}

int32_t AdapterRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int32_t>(entries_.size());
}

int32_t AdapterRegistry::num_draining() const { return shared_->num_draining.load(); }

}  // namespace spillway::server::adapters
