#include "engine/weights/tokenizer_json.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <limits>
#include <optional>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/string_views.h"

namespace spillway::engine {
namespace {

namespace json = boost::json;

// NOTE(hf): the largest real vocabularies are ~260K tokens; the cap keeps a corrupt id from
// making us allocate gigabytes.
constexpr int64_t kMaxTokenId = 16 << 20;

// The regexes of the Split pre-tokenizers we recognise, as tokenizer.json holds them after
// JSON unescaping. They differ only in how digits group.
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Added tokens that end a turn in the chat formats we know (llama.cpp uses the same list).
constexpr std::string_view kEndOfTurnTokens[] = {
    "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
};

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581 "▁"

absl::StatusOr<json::value> ParseJson(std::string_view text, std::string_view what) {
  try {
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec)
      return absl::InvalidArgumentError(
          absl::StrCat(AbslSv(what), ": invalid JSON: ", ec.message()));
    return v;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(AbslSv(what), ": cannot parse JSON: ", e.what()));
  }
}

std::string Abbrev(const json::value& v) {
  std::string s = json::serialize(v);
  if (s.size() > 200) s = s.substr(0, 200) + "...";
  return s;
}

const json::object* ObjectField(const json::object& obj, std::string_view key) {
  const json::value* v = obj.if_contains(key);
  return v == nullptr ? nullptr : v->if_object();
}

std::string_view StringField(const json::object& obj, std::string_view key) {
  const json::value* v = obj.if_contains(key);
  return (v != nullptr && v->is_string()) ? std::string_view(v->get_string()) : std::string_view();
}

std::optional<bool> BoolField(const json::object& obj, std::string_view key) {
  const json::value* v = obj.if_contains(key);
  if (v == nullptr || !v->is_bool()) return std::nullopt;
  return v->get_bool();
}

std::optional<int64_t> IdOf(const json::value& v) {
  if (v.is_int64() && v.get_int64() >= 0 && v.get_int64() <= kMaxTokenId) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(kMaxTokenId)) {
    return static_cast<int64_t>(v.get_uint64());
  }
  return std::nullopt;
}

// What the pre-tokenizer (and normalizer) say about the kind of tokenizer.
struct PreTokenizerInfo {
  bool byte_level = false;  // a ByteLevel step: GPT-2 style byte-to-unicode tokens
  bool metaspace = false;   // Metaspace pre-tokenizer or Prepend/Replace "▁" normalizer
  bool add_space_prefix = false;
  std::string pre;  // GGUF pre name for byte-level tokenizers
};

absl::Status UnsupportedPre(const json::value& v) {
  return absl::UnimplementedError(
      absl::StrCat("tokenizer.json: pre_tokenizer ", Abbrev(v),
                   " is not supported (spillway knows ByteLevel, Digits + ByteLevel, the Llama 3 "
                   "and Qwen2 Split regexes, and Metaspace)"));
}

absl::StatusOr<PreTokenizerInfo> ClassifyPreTokenizer(const json::object& root) {
  PreTokenizerInfo info;
  // Normalizer: Llama 2 style {"Prepend": "▁"} + {"Replace": " " -> "▁"}.
  if (const json::object* norm = ObjectField(root, "normalizer"); norm != nullptr) {
    std::vector<const json::object*> steps;
    if (StringField(*norm, "type") == "Sequence") {
      if (const json::value* list = norm->if_contains("normalizers"); list && list->is_array()) {
        for (const json::value& s : list->get_array()) {
          if (s.is_object()) steps.push_back(&s.get_object());
        }
      }
    } else {
      steps.push_back(norm);
    }
    for (const json::object* s : steps) {
      const std::string_view type = StringField(*s, "type");
      if (type == "Prepend" && StringField(*s, "prepend") == kMetaspace) {
        info.metaspace = true;
        info.add_space_prefix = true;
      } else if (type == "Replace" && StringField(*s, "content") == kMetaspace) {
        info.metaspace = true;
      }
    }
  }

  const json::value* pre_v = root.if_contains("pre_tokenizer");
  if (pre_v == nullptr || pre_v->is_null()) return info;
  if (!pre_v->is_object()) return UnsupportedPre(*pre_v);
  std::vector<const json::object*> steps;
  const json::object& pre = pre_v->get_object();
  if (StringField(pre, "type") == "Sequence") {
    const json::value* list = pre.if_contains("pretokenizers");
    if (list == nullptr || !list->is_array()) return UnsupportedPre(*pre_v);
    for (const json::value& s : list->get_array()) {
      if (!s.is_object()) return UnsupportedPre(*pre_v);
      steps.push_back(&s.get_object());
    }
  } else {
    steps.push_back(&pre);
  }

  auto type_of = [&](size_t i) { return StringField(*steps[i], "type"); };
  if (steps.size() == 1 && type_of(0) == "Metaspace") {
    info.metaspace = true;
    const std::string_view scheme = StringField(*steps[0], "prepend_scheme");
    const std::optional<bool> add_prefix = BoolField(*steps[0], "add_prefix_space");
    info.add_space_prefix = scheme.empty() ? add_prefix.value_or(true) : scheme != "never";
    return info;
  }
  // Every byte-level form ends in ByteLevel without a prefix space.
  if (steps.empty() || type_of(steps.size() - 1) != "ByteLevel" ||
      BoolField(*steps.back(), "add_prefix_space").value_or(false)) {
    return UnsupportedPre(*pre_v);
  }
  info.byte_level = true;
  const bool use_regex = BoolField(*steps.back(), "use_regex").value_or(true);
  if (steps.size() == 1 && use_regex) {
    info.pre = "gpt2";
  } else if (steps.size() == 2 && type_of(0) == "Digits" &&
             BoolField(*steps[0], "individual_digits").value_or(false) && use_regex) {
    info.pre = "smollm";
  } else if (steps.size() == 2 && type_of(0) == "Split" && !use_regex) {
    const json::object* pattern = ObjectField(*steps[0], "pattern");
    const std::string_view regex = pattern ? StringField(*pattern, "Regex") : std::string_view();
    if (regex == kLlama3Regex) {
      info.pre = "llama-bpe";
    } else if (regex == kQwen2Regex) {
      info.pre = "qwen2";
    } else {
      return UnsupportedPre(*pre_v);
    }
  } else {
    return UnsupportedPre(*pre_v);
  }
  return info;
}

// The special-token strings of tokenizer_config.json: "x" or {"content": "x", ...}.
absl::StatusOr<std::optional<std::string>> SpecialTokenText(const json::object& config,
                                                            std::string_view key) {
  const json::value* v = config.if_contains(key);
  if (v == nullptr || v->is_null()) return std::optional<std::string>();
  if (v->is_string()) return std::optional<std::string>(std::string(v->get_string()));
  if (v->is_object()) {
    if (const json::value* c = v->get_object().if_contains("content"); c && c->is_string()) {
      return std::optional<std::string>(std::string(c->get_string()));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: ", AbslSv(key), " is ",
                                                 Abbrev(*v), ", not a string or {content}"));
}

// The first and last items of a TemplateProcessing "single" template, if they are special
// tokens: {"SpecialToken": {"id": "<s>", ...}}.
struct TemplateEnds {
  std::optional<std::string> first_special;
  std::optional<std::string> last_special;
};

std::optional<TemplateEnds> FindTemplate(const json::value& v) {
  if (!v.is_object()) return std::nullopt;
  const json::object& obj = v.get_object();
  const std::string_view type = StringField(obj, "type");
  if (type == "Sequence") {
    if (const json::value* list = obj.if_contains("processors"); list && list->is_array()) {
      for (const json::value& p : list->get_array()) {
        if (std::optional<TemplateEnds> t = FindTemplate(p)) return t;
      }
    }
    return std::nullopt;
  }
  if (type != "TemplateProcessing") return std::nullopt;
  const json::value* single = obj.if_contains("single");
  if (single == nullptr || !single->is_array()) return std::nullopt;
  auto special_of = [](const json::value& item) -> std::optional<std::string> {
    const json::object* o = item.if_object();
    const json::object* s = o ? ObjectField(*o, "SpecialToken") : nullptr;
    if (s == nullptr) return std::nullopt;
    return std::string(StringField(*s, "id"));
  };
  TemplateEnds ends;
  const json::array& items = single->get_array();
  if (!items.empty()) {
    ends.first_special = special_of(items.front());
    ends.last_special = special_of(items.back());
  }
  return ends;
}

class SpecBuilder {
 public:
  [[nodiscard]] absl::Status ReadVocab(const json::object& model) {
    const json::object* vocab = ObjectField(model, "vocab");
    if (vocab == nullptr) {
      return absl::InvalidArgumentError("tokenizer.json: model.vocab is missing or not an object");
    }
    for (const auto& [text, id_v] : *vocab) {
      const std::optional<int64_t> id = IdOf(id_v);
      if (!id.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: vocab entry \"",
                                                       AbslSv(text), "\" has id ", Abbrev(id_v),
                                                       ", not an id in [0, ", kMaxTokenId, "]"));
      }
      SPW_RETURN_IF_ERROR(Place(*id, text, TokenType::kNormal, "vocab"));
    }
    return absl::OkStatus();
  }

  [[nodiscard]] absl::Status ReadAddedTokens(const json::object& root) {
    const json::value* added = root.if_contains("added_tokens");
    if (added == nullptr || added->is_null()) return absl::OkStatus();
    if (!added->is_array()) {
      return absl::InvalidArgumentError("tokenizer.json: added_tokens is not an array");
    }
    for (const json::value& item : added->get_array()) {
      const json::object* obj = item.if_object();
      const json::value* id_v = obj ? obj->if_contains("id") : nullptr;
      const json::value* content = obj ? obj->if_contains("content") : nullptr;
      const std::optional<int64_t> id = id_v ? IdOf(*id_v) : std::nullopt;
      if (!id.has_value() || content == nullptr || !content->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: added token ", Abbrev(item),
                                                       " needs an id and a content"));
      }
      const bool special = BoolField(*obj, "special").value_or(false);
      SPW_RETURN_IF_ERROR(Place(*id, content->get_string(),
                                special ? TokenType::kControl : TokenType::kUserDefined,
                                "added_tokens"));
      added_ids_.push_back(static_cast<TokenId>(*id));
    }
    return absl::OkStatus();
  }

  [[nodiscard]] absl::Status ReadMerges(const json::object& model) {
    const json::value* merges = model.if_contains("merges");
    if (merges == nullptr || merges->is_null()) return absl::OkStatus();
    if (!merges->is_array()) {
      return absl::InvalidArgumentError("tokenizer.json: model.merges is not an array");
    }
    spec_.merges.reserve(merges->get_array().size());
    for (const json::value& m : merges->get_array()) {
      std::string left, right;
      if (m.is_string()) {
        const std::string_view s = m.get_string();
        const size_t space = s.find(' ');
        if (space == std::string_view::npos || s.find(' ', space + 1) != std::string_view::npos) {
          return absl::InvalidArgumentError(
              absl::StrCat("tokenizer.json: merge ", Abbrev(m), " is not \"left right\""));
        }
        left = std::string(s.substr(0, space));
        right = std::string(s.substr(space + 1));
      } else if (m.is_array() && m.get_array().size() == 2 && m.get_array()[0].is_string() &&
                 m.get_array()[1].is_string()) {
        left = std::string(m.get_array()[0].get_string());
        right = std::string(m.get_array()[1].get_string());
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer.json: merge ", Abbrev(m), " is not \"a b\" or [a, b]"));
      }
      for (const std::string* part : {&left, &right}) {
        if (!ids_.contains(*part)) {
          return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge ", Abbrev(m),
                                                         " names \"", *part,
                                                         "\", which is not in vocab"));
        }
      }
      if (!ids_.contains(left + right)) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge ", Abbrev(m),
                                                       " makes \"", left, right,
                                                       "\", which is not in vocab"));
      }
      spec_.merges.push_back(absl::StrCat(left, " ", right));
    }
    return absl::OkStatus();
  }

  // Turns the placed tokens into dense id-ordered arrays; gaps become "[PAD<id>]", kUnused.
  void Densify() {
    spec_.tokens.resize(placed_.size());
    spec_.token_types.resize(placed_.size());
    for (size_t id = 0; id < placed_.size(); ++id) {
      if (placed_[id].has_value()) {
        spec_.tokens[id] = placed_[id]->first;
        spec_.token_types[id] = placed_[id]->second;
      } else {
        spec_.tokens[id] = absl::StrFormat("[PAD%d]", id);
        spec_.token_types[id] = TokenType::kUnused;
      }
    }
  }

  // SentencePiece-style scores from merge rank: rank r gives its product -r; pieces no merge
  // makes keep 0 if they are single symbols (never merge candidates) or get far below every
  // merge otherwise.
  void ScoresFromMerges() {
    spec_.scores.assign(spec_.tokens.size(), 0.0f);
    std::vector<bool> made(spec_.tokens.size(), false);
    for (size_t r = 0; r < spec_.merges.size(); ++r) {
      const std::string& m = spec_.merges[r];
      const size_t space = m.find(' ');
      const TokenId id = ids_.at(m.substr(0, space) + m.substr(space + 1));
      if (!made[id]) {
        made[id] = true;
        spec_.scores[id] = -static_cast<float>(r);
      }
    }
    const float unreachable = -static_cast<float>(spec_.merges.size()) - 1e6f;
    for (size_t id = 0; id < spec_.tokens.size(); ++id) {
      if (made[id] || spec_.token_types[id] != TokenType::kNormal) continue;
      if (Utf8Length(spec_.tokens[id]) > 1) spec_.scores[id] = unreachable;
    }
  }

  // Marks <0xHH> pieces as bytes (SentencePiece byte fallback).
  void MarkByteTokens() {
    for (size_t id = 0; id < spec_.tokens.size(); ++id) {
      const std::string& t = spec_.tokens[id];
      if (spec_.token_types[id] == TokenType::kNormal && t.size() == 6 && t.starts_with("<0x") &&
          t.back() == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4]))) {
        spec_.token_types[id] = TokenType::kByte;
      }
    }
  }

  absl::StatusOr<TokenId> IdOfText(std::string_view text, std::string_view what) const {
    auto it = ids_.find(std::string(text));
    if (it == ids_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(AbslSv(what), " \"", AbslSv(text), "\" is not a token of tokenizer.json"));
    }
    return it->second;
  }
  std::optional<TokenId> FindId(std::string_view text) const {
    auto it = ids_.find(std::string(text));
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }

  const std::vector<TokenId>& added_ids() const { return added_ids_; }
  TokenizerSpec& spec() { return spec_; }

 private:
  static size_t Utf8Length(std::string_view s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
  }

  [[nodiscard]] absl::Status Place(int64_t id, std::string_view text, TokenType type,
                                   std::string_view where) {
    if (id >= std::ssize(placed_)) placed_.resize(id + 1);
    auto& slot = placed_[id];
    if (slot.has_value() && slot->first != text) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: id ", id, " is given to both \"", slot->first, "\" and \"",
                       AbslSv(text), "\" (", AbslSv(where), ")"));
    }
    slot = std::make_pair(std::string(text), type);
    // Added tokens override a vocab entry of the same text; the id stays the latest one.
    ids_[std::string(text)] = static_cast<TokenId>(id);
    return absl::OkStatus();
  }

  TokenizerSpec spec_;
  std::vector<std::optional<std::pair<std::string, TokenType>>> placed_;
  std::unordered_map<std::string, TokenId> ids_;
  std::vector<TokenId> added_ids_;
};

// "gpt2" (byte-level) or "llama" (Metaspace + byte fallback), with what each kind needs.
[[nodiscard]] absl::Status ChooseKind(const PreTokenizerInfo& pre, bool byte_fallback,
                                      SpecBuilder& b) {
  TokenizerSpec& spec = b.spec();
  if (pre.byte_level && !pre.metaspace) {
    spec.model = "gpt2";
    spec.pre = pre.pre;
  } else if (pre.metaspace && !pre.byte_level && byte_fallback) {
    spec.model = "llama";
    spec.pre = "default";
    spec.add_space_prefix = pre.add_space_prefix;
    b.MarkByteTokens();
    b.ScoresFromMerges();
  } else {
    return absl::UnimplementedError(absl::StrCat(
        "tokenizer.json: a BPE tokenizer ", byte_fallback ? "with" : "without", " byte_fallback, ",
        pre.metaspace ? "with" : "without", " Metaspace (\"▁\") and ",
        pre.byte_level ? "with" : "without",
        " ByteLevel is not supported (spillway runs byte-level BPE and Llama-2-style BPE)"));
  }
  return absl::OkStatus();
}

// bos/eos/unk/pad ids from tokenizer_config.json and model.unk_token.
[[nodiscard]] absl::Status ResolveSpecialIds(const json::object& model, const json::object& config,
                                             SpecBuilder& b) {
  TokenizerSpec& spec = b.spec();
  if (const std::string_view unk = StringField(model, "unk_token"); !unk.empty()) {
    SPW_ASSIGN_OR_RETURN(spec.unk_id, b.IdOfText(unk, "tokenizer.json model.unk_token"));
  }
  struct Named {
    std::string_view key;
    TokenId* id;
  };
  for (const Named& n : {Named{"bos_token", &spec.bos_id}, Named{"eos_token", &spec.eos_id},
                         Named{"unk_token", &spec.unk_id}, Named{"pad_token", &spec.pad_id}}) {
    SPW_ASSIGN_OR_RETURN(std::optional<std::string> text, SpecialTokenText(config, n.key));
    if (text.has_value()) {
      SPW_ASSIGN_OR_RETURN(
          *n.id, b.IdOfText(*text, absl::StrCat("tokenizer_config.json ", AbslSv(n.key))));
    }
  }
  if (spec.model == "llama") {
    // LlamaTokenizer(Fast)'s constructor defaults, for configs that leave them out.
    if (spec.bos_id < 0) spec.bos_id = b.FindId("<s>").value_or(-1);
    if (spec.eos_id < 0) spec.eos_id = b.FindId("</s>").value_or(-1);
    if (spec.unk_id < 0) spec.unk_id = b.FindId("<unk>").value_or(-1);
  }
  if (spec.unk_id >= 0 && spec.token_types[spec.unk_id] == TokenType::kNormal) {
    spec.token_types[spec.unk_id] = TokenType::kUnknown;
  }
  return absl::OkStatus();
}

[[nodiscard]] absl::Status ResolveAddBosEos(const json::object& root, const json::object& config,
                                            SpecBuilder& b) {
  TokenizerSpec& spec = b.spec();
  // add_bos / add_eos: explicit flags, else the post-processor template, else the default of
  // the Transformers tokenizer class for this kind.
  std::optional<TemplateEnds> ends;
  if (const json::value* post = root.if_contains("post_processor"); post != nullptr) {
    ends = FindTemplate(*post);
  }
  auto template_adds = [&](const std::optional<std::string> TemplateEnds::*end, TokenId* id) {
    if (!ends.has_value() || !((*ends).*end).has_value()) return false;
    const std::optional<TokenId> found = b.FindId(*((*ends).*end));
    if (!found.has_value()) return false;
    if (*id < 0) *id = *found;
    return *id == *found;
  };
  const std::optional<bool> add_bos = BoolField(config, "add_bos_token");
  const std::optional<bool> add_eos = BoolField(config, "add_eos_token");
  spec.add_bos = add_bos.has_value()
                     ? *add_bos
                     : (ends.has_value() ? template_adds(&TemplateEnds::first_special, &spec.bos_id)
                                         : spec.model == "llama" && spec.bos_id >= 0);
  spec.add_eos =
      add_eos.has_value() ? *add_eos : template_adds(&TemplateEnds::last_special, &spec.eos_id);
  if (spec.add_bos && spec.bos_id < 0) {
    return absl::InvalidArgumentError(
        "tokenizer_config.json: add_bos_token is true but there is no bos_token");
  }
  if (spec.add_eos && spec.eos_id < 0) {
    return absl::InvalidArgumentError(
        "tokenizer_config.json: add_eos_token is true but there is no eos_token");
  }
  return absl::OkStatus();
}

// Added tokens that end a turn by name (kEndOfTurnTokens), other than eos.
void CollectEndOfTurnIds(SpecBuilder& b) {
  TokenizerSpec& spec = b.spec();
  for (TokenId id : b.added_ids()) {
    const std::string& text = spec.tokens[id];
    if (id != spec.eos_id &&
        std::find(std::begin(kEndOfTurnTokens), std::end(kEndOfTurnTokens), text) !=
            std::end(kEndOfTurnTokens) &&
        std::find(spec.eot_ids.begin(), spec.eot_ids.end(), id) == spec.eot_ids.end()) {
      spec.eot_ids.push_back(id);
    }
  }
}

}  // namespace

absl::StatusOr<TokenizerSpec> ParseTokenizerJson(std::string_view tokenizer_json,
                                                 std::string_view tokenizer_config_json) {
  SPW_ASSIGN_OR_RETURN(json::value root_v, ParseJson(tokenizer_json, "tokenizer.json"));
  SPW_ASSIGN_OR_RETURN(json::value config_v,
                       ParseJson(tokenizer_config_json, "tokenizer_config.json"));
  if (!root_v.is_object()) return absl::InvalidArgumentError("tokenizer.json: not a JSON object");
  if (!config_v.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json: not a JSON object");
  }
  const json::object& root = root_v.get_object();
  const json::object& config = config_v.get_object();
  const json::object* model = ObjectField(root, "model");
  if (model == nullptr) {
    return absl::InvalidArgumentError("tokenizer.json: \"model\" is missing or not an object");
  }
  const std::string_view model_type = StringField(*model, "type");
  if (model_type != "BPE" && !(model_type.empty() && model->contains("merges"))) {
    return absl::UnimplementedError(absl::StrCat(
        "tokenizer.json: model type \"", AbslSv(model_type), "\" is not supported (only BPE)"));
  }

  SPW_ASSIGN_OR_RETURN(PreTokenizerInfo pre, ClassifyPreTokenizer(root));
  const bool byte_fallback = BoolField(*model, "byte_fallback").value_or(false);

  SpecBuilder b;
  SPW_RETURN_IF_ERROR(b.ReadVocab(*model));
  SPW_RETURN_IF_ERROR(b.ReadAddedTokens(root));
  SPW_RETURN_IF_ERROR(b.ReadMerges(*model));
  b.Densify();
  SPW_RETURN_IF_ERROR(ChooseKind(pre, byte_fallback, b));
  SPW_RETURN_IF_ERROR(ResolveSpecialIds(*model, config, b));
  SPW_RETURN_IF_ERROR(ResolveAddBosEos(root, config, b));
  CollectEndOfTurnIds(b);
  return std::move(b.spec());
}

absl::StatusOr<std::string> ChatTemplateFromTokenizerConfig(
    std::string_view tokenizer_config_json) {
  SPW_ASSIGN_OR_RETURN(json::value config_v,
                       ParseJson(tokenizer_config_json, "tokenizer_config.json"));
  if (!config_v.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json: not a JSON object");
  }
  const json::value* t = config_v.get_object().if_contains("chat_template");
  if (t == nullptr || t->is_null()) return std::string();
  if (t->is_string()) return std::string(t->get_string());
  if (t->is_array()) {
    for (const json::value& item : t->get_array()) {
      const json::object* obj = item.if_object();
      if (obj == nullptr || !obj->contains("name") || !obj->contains("template")) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer_config.json: chat_template entry ", Abbrev(item),
                         " is not {\"name\", \"template\"}"));
      }
      if (StringField(*obj, "name") == "default") return std::string(StringField(*obj, "template"));
    }
    return std::string();
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: chat_template is ",
                                                 Abbrev(*t), ", not a string or a list"));
}

}  // namespace spillway::engine
