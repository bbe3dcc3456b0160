#include "engine/lora/peft_io.h"

#include <sys/stat.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/cpu/quant_rows.h"
#include "engine/lora/atomic_file.h"
#include "engine/weights/safetensors_reader.h"

namespace spillway::engine::lora {
namespace {

namespace json = boost::json;

bool IsPermuted(const ModelConfig& model, LoraModule m) {
  return model.rope_style == RopeStyle::kNormal && (m == LoraModule::kQ || m == LoraModule::kK);
}

// Copies B ([out, r]) between Hugging Face row order and the model's.
void PermuteRows(const float* src, float* dst, int64_t out, int64_t rank, int64_t head_dim,
                 bool hf_to_model) {
  for (int64_t row = 0; row < out; ++row) {
    const int64_t hf = HfRowOfGgufRow(row, head_dim);
    const float* from = src + (hf_to_model ? hf : row) * rank;
    float* to = dst + (hf_to_model ? row : hf) * rank;
    std::memcpy(to, from, rank * sizeof(float));
  }
}

absl::StatusOr<LoraConfig> ParseConfig(const std::string& path, const std::string& text) {
  json::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  const json::object& o = v.as_object();
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  LoraConfig c;
  if (const json::value* t = o.if_contains("peft_type");
      t != nullptr && !(t->is_string() && t->as_string() == "LORA")) {
    return bad("peft_type is not \"LORA\"");
  }
  const json::value* r = o.if_contains("r");
  if (r == nullptr || !r->is_int64() || r->as_int64() < 1 || r->as_int64() > 4096) {
    return bad("\"r\" must be an integer in [1, 4096]");
  }
  c.rank = static_cast<int32_t>(r->as_int64());
  c.alpha = static_cast<float>(c.rank);  // peft's default lora_alpha is 8 with r 8
  if (const json::value* a = o.if_contains("lora_alpha"); a != nullptr && !a->is_null()) {
    if (!a->is_number()) return bad("\"lora_alpha\" must be a number");
    c.alpha = static_cast<float>(a->to_number<double>());
  }
  if (const json::value* d = o.if_contains("lora_dropout"); d != nullptr && d->is_number()) {
    c.dropout = static_cast<float>(d->to_number<double>());
  }
  for (const char* flag : {"use_rslora", "use_dora", "fan_in_fan_out"}) {
    if (const json::value* f = o.if_contains(flag); f != nullptr && f->is_bool() && f->as_bool()) {
      return absl::UnimplementedError(absl::StrCat(path, ": ", flag, " is not supported"));
    }
  }
  for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
    if (const json::value* f = o.if_contains(pattern);
        f != nullptr && f->is_object() && !f->as_object().empty()) {
      return absl::UnimplementedError(absl::StrCat(path, ": ", pattern, " is not supported"));
    }
  }
  if (const json::value* f = o.if_contains("lora_bias");
      f != nullptr && f->is_bool() && f->as_bool()) {
    return absl::UnimplementedError(absl::StrCat(path, ": lora_bias is not supported"));
  }
  if (const json::value* b = o.if_contains("bias");
      b != nullptr && !(b->is_string() && b->as_string() == "none")) {
    return absl::UnimplementedError(absl::StrCat(path, ": only bias \"none\" is supported"));
  }
  const json::value* t = o.if_contains("target_modules");
  if (t == nullptr || !t->is_array()) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": target_modules must be a list of module names"));
  }
  c.targets.clear();
  for (const json::value& e : t->as_array()) {
    if (!e.is_string()) return bad("target_modules holds a non-string");
    SPW_ASSIGN_OR_RETURN(LoraModule m, ParseLoraModule(std::string_view(e.as_string())));
    if (!c.Targets(m)) c.targets.push_back(m);
  }
  if (const json::value* l = o.if_contains("layers_to_transform"); l != nullptr && !l->is_null()) {
    if (l->is_int64()) {
      c.layers.push_back(static_cast<int32_t>(l->as_int64()));
    } else if (l->is_array()) {
      for (const json::value& e : l->as_array()) {
        if (!e.is_int64()) return bad("layers_to_transform holds a non-integer");
        c.layers.push_back(static_cast<int32_t>(e.as_int64()));
      }
    } else {
      return bad("layers_to_transform must be an integer or a list");
    }
  }
  if (const json::value* b = o.if_contains("base_model_name_or_path"); b && b->is_string()) {
    c.base_model = std::string(b->as_string());
  }
  return c;
}

std::string ConfigJson(const LoraConfig& c) {
  json::array targets;
  for (LoraModule m : c.targets) targets.emplace_back(LoraModuleName(m));
  json::object o;
  o["peft_type"] = "LORA";
  o["task_type"] = "CAUSAL_LM";
  o["base_model_name_or_path"] = c.base_model;
  o["r"] = c.rank;
  o["lora_alpha"] = c.alpha;
  o["lora_dropout"] = c.dropout;
  o["target_modules"] = std::move(targets);
  o["bias"] = "none";
  o["fan_in_fan_out"] = false;
  o["use_rslora"] = false;
  o["use_dora"] = false;
  o["inference_mode"] = true;
  if (c.layers.empty()) {
    o["layers_to_transform"] = nullptr;
  } else {
    json::array layers;
    for (int32_t l : c.layers) layers.emplace_back(l);
    o["layers_to_transform"] = std::move(layers);
  }
  return json::serialize(o);
}

absl::Status MakeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t HfRowOfGgufRow(int64_t r, int64_t head_dim) {
  const int64_t head = r / head_dim;
  const int64_t within = r % head_dim;  // 2 * i + j in the model's (interleaved) order
  return head * head_dim + (within % 2) * (head_dim / 2) + within / 2;
}

std::string PeftTensorName(int64_t layer, LoraModule m, bool is_b) {
  const bool attn =
      m == LoraModule::kQ || m == LoraModule::kK || m == LoraModule::kV || m == LoraModule::kO;
  return absl::StrFormat("base_model.model.model.layers.%d.%s.%s.lora_%s.weight", layer,
                         attn ? "self_attn" : "mlp", LoraModuleName(m), is_b ? "B" : "A");
}

absl::StatusOr<LoraAdapter> LoadPeftAdapter(const std::string& dir, const ModelConfig& model) {
  const std::string config_path = dir + "/adapter_config.json";
  SPW_ASSIGN_OR_RETURN(std::string config_text, ReadWholeFile(config_path));
  SPW_ASSIGN_OR_RETURN(LoraConfig config, ParseConfig(config_path, config_text));
  SPW_ASSIGN_OR_RETURN(LoraAdapter adapter, NewLoraAdapter(model, config, /*seed=*/0));
  const std::string weights_path = dir + "/adapter_model.safetensors";
  SPW_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(weights_path));
  std::vector<float> buf;
  const std::vector<LoraMatrix> matrices = adapter.layout.Matrices();
  for (const LoraMatrix& x : matrices) {
    const std::string name = PeftTensorName(x.layer, x.module, x.is_b);
    const SafetensorsTensor* t = file.Find(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(weights_path, " lacks ", name));
    }
    if (t->shape != std::vector<int64_t>{x.rows, x.cols}) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s has shape [%s], expected [%d, %d]", weights_path, name,
                          absl::StrJoin(t->shape, ", "), x.rows, x.cols));
    }
    buf.resize(x.rows * x.cols);
    cpu::DequantizeRowInto(t->type, t->data, buf.data(), x.rows * x.cols);
    float* dst = adapter.params.data() + x.offset;
    if (x.is_b && IsPermuted(model, x.module)) {
      PermuteRows(buf.data(), dst, x.rows, x.cols, model.head_dim, /*hf_to_model=*/true);
    } else {
      std::memcpy(dst, buf.data(), buf.size() * sizeof(float));
    }
  }
  if (matrices.size() != file.tensors().size()) {
    for (const SafetensorsTensor& t : file.tensors()) {
      if (std::none_of(matrices.begin(), matrices.end(), [&](const LoraMatrix& x) {
            return t.name == PeftTensorName(x.layer, x.module, x.is_b);
          })) {
        return absl::InvalidArgumentError(absl::StrCat(
            weights_path, ": tensor ", t.name, " is not a LoRA matrix of the configured targets"));
      }
    }
  }
  return adapter;
}

absl::Status SavePeftAdapter(const LoraAdapter& adapter, const ModelConfig& model,
                             const std::string& dir) {
  SPW_RETURN_IF_ERROR(MakeDir(dir));
  // Safetensors: [u64 header length][JSON header, space-padded to 8 bytes][data].
  json::object header;
  header["__metadata__"] = json::object{{"format", "pt"}};
  std::string data;
  std::vector<float> buf;
  for (const LoraMatrix& x : adapter.layout.Matrices()) {
    const float* src = adapter.params.data() + x.offset;
    buf.assign(src, src + x.rows * x.cols);
    if (x.is_b && IsPermuted(model, x.module)) {
      PermuteRows(src, buf.data(), x.rows, x.cols, model.head_dim, /*hf_to_model=*/false);
    }
    const size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(buf.data()), buf.size() * sizeof(float));
    header[PeftTensorName(x.layer, x.module, x.is_b)] =
        json::object{{"dtype", "F32"},
                     {"shape", json::array{x.rows, x.cols}},
                     {"data_offsets", json::array{begin, data.size()}}};
  }
  std::string head = json::serialize(header);
  head.append((8 - head.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  const uint64_t n = head.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  file += head;
  file += data;
  SPW_RETURN_IF_ERROR(WriteFileAtomically(dir + "/adapter_model.safetensors", file));
  return WriteFileAtomically(dir + "/adapter_config.json", ConfigJson(adapter.config));
}

}  // namespace spillway::engine::lora
