#include "engine/tokenizer/internal/spm_bpe.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/internal/unicode.h"

namespace spillway::engine::internal {

int ParseByteToken(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (char c : text.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') {
      value |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      value |= c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return value;
}

absl::StatusOr<SpmBpe> SpmBpe::Create(const TokenizerSpec& spec) {
  if (spec.scores.size() != spec.tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SentencePiece vocabulary has ", spec.tokens.size(), " tokens but ",
                     spec.scores.size(), " scores; every token needs a score"));
  }
  SpmBpe spm;
  spm.scores_ = spec.scores;
  spm.unk_id_ = spec.unk_id;
  spm.byte_tokens_.assign(256, -1);
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    const TokenType type = spec.token_types.empty() ? TokenType::kNormal : spec.token_types[i];
    const auto id = static_cast<TokenId>(i);
    if (type == TokenType::kByte) {
      const int b = ParseByteToken(spec.tokens[i]);
      if (b < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "token ", i, " '", spec.tokens[i], "' has type byte but is not of the form <0xNN>"));
      }
      if (spm.byte_tokens_[b] < 0) spm.byte_tokens_[b] = id;
    } else if (type == TokenType::kNormal || type == TokenType::kUserDefined) {
      spm.pieces_.emplace(spec.tokens[i], id);
    }
  }
  return spm;
}

TokenId SpmBpe::Find(std::string_view piece) const {
  auto it = pieces_.find(piece);
  return it == pieces_.end() ? -1 : it->second;
}

void SpmBpe::EmitSymbol(std::string_view piece, std::vector<TokenId>* out) const {
  if (const TokenId id = Find(piece); id >= 0) {
    out->push_back(id);
    return;
  }
  // Only single characters can be unknown: merging only ever produces tokens.
  for (unsigned char b : piece) {
    const TokenId id = byte_tokens_[b];
    if (id >= 0) {
      out->push_back(id);
    } else if (unk_id_ >= 0) {
      out->push_back(unk_id_);
    }
  }
}

void SpmBpe::EncodeText(std::string_view text, std::vector<TokenId>* out) const {
  struct Symbol {
    size_t begin;
    size_t len;  // 0 once merged into its left neighbour
    int prev;
    int next;
  };
  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < text.size();) {
    const int len = DecodeUtf8(text, pos).len;
    const int idx = static_cast<int>(symbols.size());
    symbols.push_back({pos, static_cast<size_t>(len), idx - 1, idx + 1});
    pos += len;
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    float score;
    int left;
    int right;
    size_t len;  // merged length, to detect stale candidates
    bool operator<(const Candidate& o) const {
      return score != o.score ? score < o.score : left > o.left;  // best score, then leftmost
    }
  };
  std::priority_queue<Candidate> queue;
  auto push = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const size_t len = symbols[left].len + symbols[right].len;
    const TokenId id = Find(text.substr(symbols[left].begin, len));
    if (id < 0) return;
    queue.push({scores_[id], left, right, len});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push(i, i + 1);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    if (left.len == 0 || right.len == 0 || left.len + right.len != c.len || left.next != c.right) {
      continue;
    }
    left.len = c.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    push(left.prev, c.left);
    push(c.left, left.next);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) {
    EmitSymbol(text.substr(symbols[i].begin, symbols[i].len), out);
  }
}

}  // namespace spillway::engine::internal
