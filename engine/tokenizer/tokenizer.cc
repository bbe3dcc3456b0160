#include "engine/tokenizer/tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "engine/tokenizer/internal/byte_level_bpe.h"
#include "engine/tokenizer/internal/pre_tokenizer.h"
#include "engine/tokenizer/internal/spm_bpe.h"
#include "engine/tokenizer/internal/unicode.h"

namespace spillway::engine {
namespace {

absl::Status CheckSpecialId(const char* name, TokenId id, size_t num_tokens) {
  if (id < -1 || id >= static_cast<TokenId>(num_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " id ", id, " is out of range; the vocabulary has ", num_tokens, " tokens"));
  }
  return absl::OkStatus();
}

// `text` with every "▁" replaced by a space, or every space by "▁" (`to_spm`).
std::string ReplaceSpaces(std::string_view text, bool to_spm) {
  const std::string_view from = to_spm ? std::string_view(" ") : internal::kSpmSpace;
  const std::string_view to = to_spm ? internal::kSpmSpace : std::string_view(" ");
  std::string out;
  out.reserve(text.size() + text.size() / 2);
  size_t pos = 0;
  for (size_t hit; (hit = text.find(from, pos)) != std::string_view::npos;
       pos = hit + from.size()) {
    out.append(text.substr(pos, hit - pos));
    out.append(to);
  }
  out.append(text.substr(pos));
  return out;
}

}  // namespace

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const TokenizerSpec& spec) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  SPW_RETURN_IF_ERROR(tokenizer->Init(spec));
  return tokenizer;
}

absl::Status Tokenizer::Init(const TokenizerSpec& spec) {
  if (spec.model != "gpt2" && spec.model != "llama") {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported tokenizer model '", spec.model, "'; supported: gpt2, llama"));
  }
  is_spm_ = spec.model == "llama";
  const size_t n = spec.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer vocabulary is empty");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary of ", n, " tokens is too large"));
  }
  if (!spec.token_types.empty() && spec.token_types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary has ", n, " tokens but ",
                                                   spec.token_types.size(), " token types"));
  }
  if (!spec.scores.empty() && spec.scores.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocabulary has ", n, " tokens but ", spec.scores.size(), " scores"));
  }
  SPW_RETURN_IF_ERROR(CheckSpecialId("BOS", spec.bos_id, n));
  SPW_RETURN_IF_ERROR(CheckSpecialId("EOS", spec.eos_id, n));
  SPW_RETURN_IF_ERROR(CheckSpecialId("unknown-token", spec.unk_id, n));
  SPW_RETURN_IF_ERROR(CheckSpecialId("padding", spec.pad_id, n));
  for (TokenId id : spec.eot_ids) {
    SPW_RETURN_IF_ERROR(CheckSpecialId("end-of-turn", id, n));
    if (id < 0) return absl::InvalidArgumentError("end-of-turn id -1 is not a token");
  }
  if (spec.add_bos && spec.bos_id < 0) {
    return absl::InvalidArgumentError("add_bos is set but the vocabulary has no BOS id");
  }
  if (spec.add_eos && spec.eos_id < 0) {
    return absl::InvalidArgumentError("add_eos is set but the vocabulary has no EOS id");
  }
  for (size_t i = 0; i < spec.token_types.size(); ++i) {
    const auto t = static_cast<int32_t>(spec.token_types[i]);
    if (t < 0 || t > static_cast<int32_t>(TokenType::kByte)) {
      return absl::InvalidArgumentError(absl::StrCat("token ", i, " has unknown type ", t));
    }
  }

  if (is_spm_) {
    SPW_ASSIGN_OR_RETURN(internal::SpmBpe spm, internal::SpmBpe::Create(spec));
    spm_ = std::make_unique<internal::SpmBpe>(std::move(spm));
  } else {
    SPW_ASSIGN_OR_RETURN(pre_, internal::PreTokenizerFromName(spec.pre));
    SPW_ASSIGN_OR_RETURN(internal::ByteLevelBpe bpe,
                         internal::ByteLevelBpe::Create(spec, internal::IgnoresMerges(pre_)));
    bpe_ = std::make_unique<internal::ByteLevelBpe>(std::move(bpe));
  }

  tokens_ = spec.tokens;
  types_ =
      spec.token_types.empty() ? std::vector<TokenType>(n, TokenType::kNormal) : spec.token_types;
  bos_id_ = spec.bos_id;
  eos_id_ = spec.eos_id;
  eot_ids_ = spec.eot_ids;
  add_bos_ = spec.add_bos;
  add_eos_ = spec.add_eos;
  add_space_prefix_ = is_spm_ && spec.add_space_prefix;
  strips_leading_space_ = add_space_prefix_;

  piece_to_id_.reserve(n);
  token_bytes_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const auto id = static_cast<TokenId>(i);
    piece_to_id_.emplace(tokens_[i], id);  // the first of duplicates wins
    const std::string& text = tokens_[i];
    switch (types_[i]) {
      case TokenType::kControl:
      case TokenType::kUnknown:
        token_bytes_[i] = text;
        break;
      case TokenType::kUserDefined:
        token_bytes_[i] = is_spm_ ? ReplaceSpaces(text, /*to_spm=*/false) : text;
        break;
      case TokenType::kByte:
        if (is_spm_) {
          token_bytes_[i] = std::string(1, static_cast<char>(internal::ParseByteToken(text)));
        } else {
          token_bytes_[i] = internal::ByteLevelToBytes(text);
        }
        break;
      default:
        token_bytes_[i] =
            is_spm_ ? ReplaceSpaces(text, /*to_spm=*/false) : internal::ByteLevelToBytes(text);
        break;
    }
    const bool control = types_[i] == TokenType::kControl;
    if ((control || types_[i] == TokenType::kUserDefined) && !text.empty()) {
      specials_.push_back({tokens_[i], id, control});
      special_first_byte_[static_cast<uint8_t>(text[0])] = true;
    }
  }
  std::stable_sort(
      specials_.begin(), specials_.end(),
      [](const SpecialToken& a, const SpecialToken& b) { return a.text.size() > b.text.size(); });
  return absl::OkStatus();
}

void Tokenizer::CheckId(TokenId id) const {
  SPW_CHECK(id >= 0 && id < vocab_size())
      << "token id " << id << " is out of range [0, " << vocab_size() << ")";
}

std::vector<TokenId> Tokenizer::Encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && add_bos_) out.push_back(bos_id_);
  bool first_fragment = true;
  bool after_special = false;
  size_t fragment_begin = 0;
  auto flush_text = [&](size_t end) {
    if (end > fragment_begin) {
      EncodeText(text.substr(fragment_begin, end - fragment_begin), first_fragment, after_special,
                 &out);
      first_fragment = false;
      after_special = false;
    }
  };
  for (size_t pos = 0; pos < text.size();) {
    if (!special_first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    const SpecialToken* match = nullptr;
    for (const SpecialToken& s : specials_) {  // longest first
      if ((!s.control || parse_special) && text.substr(pos, s.text.size()) == s.text) {
        match = &s;
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    flush_text(pos);
    out.push_back(match->id);
    first_fragment = false;
    after_special = true;
    pos += match->text.size();
    fragment_begin = pos;
  }
  flush_text(text.size());
  if (add_special && add_eos_) out.push_back(eos_id_);
  return out;
}

void Tokenizer::EncodeText(std::string_view text, bool first_fragment, bool after_special,
                           std::vector<TokenId>* out) const {
  if (is_spm_) {
    std::string escaped;
    escaped.reserve(text.size() + 8);
    if (add_space_prefix_ && (first_fragment || after_special)) escaped.append(internal::kSpmSpace);
    escaped.append(ReplaceSpaces(text, /*to_spm=*/true));
    spm_->EncodeText(escaped, out);
    return;
  }
  std::vector<std::string_view> pieces;
  internal::PreTokenize(pre_, text, &pieces);
  for (std::string_view piece : pieces) bpe_->EncodePiece(piece, out);
}

void Tokenizer::AppendDecodedBytes(TokenId id, bool skip_special, std::string* bytes) const {
  CheckId(id);
  if (skip_special && IsSkippedWhenSpecial(id)) return;
  bytes->append(token_bytes_[id]);
}

std::string Tokenizer::Decode(std::span<const TokenId> ids, bool skip_special) const {
  std::string bytes;
  for (TokenId id : ids) AppendDecodedBytes(id, skip_special, &bytes);
  std::string_view view = bytes;
  if (strips_leading_space_ && !view.empty() && view[0] == ' ') view.remove_prefix(1);
  std::string out;
  out.reserve(view.size());
  internal::AppendValidUtf8(view, /*final=*/true, &out);
  return out;
}

std::string_view Tokenizer::TokenPiece(TokenId id) const {
  CheckId(id);
  return tokens_[id];
}

std::string Tokenizer::TokenBytes(TokenId id) const {
  CheckId(id);
  return token_bytes_[id];
}

std::optional<TokenId> Tokenizer::FindToken(std::string_view piece) const {
  auto it = piece_to_id_.find(piece);
  if (it == piece_to_id_.end()) return std::nullopt;
  return it->second;
}

TokenType Tokenizer::token_type(TokenId id) const {
  CheckId(id);
  return types_[id];
}

bool Tokenizer::IsEndOfGeneration(TokenId id) const {
  if (id < 0) return false;
  return id == eos_id_ || std::find(eot_ids_.begin(), eot_ids_.end(), id) != eot_ids_.end();
}

bool Tokenizer::IsSkippedWhenSpecial(TokenId id) const {
  CheckId(id);
  return types_[id] == TokenType::kControl || types_[id] == TokenType::kUnknown;
}

}  // namespace spillway::engine
