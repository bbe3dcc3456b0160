#include "engine/tokenizer/internal/byte_level_bpe.h"

#include <array>
#include <queue>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/internal/unicode.h"

namespace spillway::engine::internal {
namespace {

struct ByteMaps {
  std::array<char32_t, 256> byte_to_cp;
  std::unordered_map<char32_t, uint8_t> cp_to_byte;
};

const ByteMaps& Maps() {
  static const ByteMaps maps = [] {
    ByteMaps m;
    // Printable bytes stand for themselves; the others map to 256, 257, ... in byte order.
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      m.byte_to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
      m.cp_to_byte[m.byte_to_cp[b]] = static_cast<uint8_t>(b);
    }
    return m;
  }();
  return maps;
}

}  // namespace

char32_t ByteToCodepoint(uint8_t b) { return Maps().byte_to_cp[b]; }

int CodepointToByte(char32_t cp) {
  const auto& m = Maps().cp_to_byte;
  auto it = m.find(cp);
  return it == m.end() ? -1 : it->second;
}

std::string ByteLevelToBytes(std::string_view token_text) {
  std::string out;
  out.reserve(token_text.size());
  for (size_t pos = 0; pos < token_text.size();) {
    const Utf8Char c = DecodeUtf8(token_text, pos);
    const int b = CodepointToByte(c.cp);
    if (b >= 0 && !(c.cp == kReplacementChar && c.len == 1)) {
      out.push_back(static_cast<char>(b));
    } else {
      out.append(token_text.substr(pos, c.len));
    }
    pos += c.len;
  }
  return out;
}

absl::StatusOr<ByteLevelBpe> ByteLevelBpe::Create(const TokenizerSpec& spec, bool ignore_merges) {
  ByteLevelBpe bpe;
  std::unordered_map<std::string_view, TokenId> ids;
  ids.reserve(spec.tokens.size());
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    ids.emplace(spec.tokens[i], static_cast<TokenId>(i));  // the first of duplicates wins
  }
  bpe.byte_tokens_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    std::string text;
    AppendUtf8(ByteToCodepoint(static_cast<uint8_t>(b)), &text);
    if (auto it = ids.find(text); it != ids.end()) bpe.byte_tokens_[b] = it->second;
  }
  bpe.merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const std::string& merge = spec.merges[rank];
    const size_t space = merge.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == merge.size() ||
        merge.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge #", rank, " '", merge, "' is not two tokens separated by one space"));
    }
    const std::string_view left(merge.data(), space);
    const std::string_view right(merge.data() + space + 1, merge.size() - space - 1);
    const std::string merged = std::string(left) + std::string(right);
    auto l = ids.find(left);
    auto r = ids.find(right);
    auto m = ids.find(merged);
    if (l == ids.end() || r == ids.end() || m == ids.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "merge #", rank, " '", merge, "' refers to unknown token '",
          std::string(l == ids.end() ? left : (r == ids.end() ? right : std::string_view(merged))),
          "'"));
    }
    // A repeated pair keeps its best (first) rank, as HF does.
    bpe.merges_.emplace(PairKey(l->second, r->second),
                        Merge{static_cast<int32_t>(rank), m->second});
  }
  if (ignore_merges) {
    for (size_t i = 0; i < spec.tokens.size(); ++i) {
      const bool normal = spec.token_types.empty() || spec.token_types[i] == TokenType::kNormal;
      if (normal) bpe.whole_.emplace(ByteLevelToBytes(spec.tokens[i]), static_cast<TokenId>(i));
    }
  }
  return bpe;
}

void ByteLevelBpe::EncodePiece(std::string_view piece, std::vector<TokenId>* out) const {
  if (!whole_.empty()) {
    if (auto it = whole_.find(piece); it != whole_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  // Symbols form a doubly linked list over `tokens`; a merge writes the result into the left
  // symbol and unlinks the right one.
  struct Symbol {
    TokenId token;
    int prev;
    int next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  for (unsigned char b : piece) {
    const TokenId t = byte_tokens_[b];
    if (t < 0) continue;
    const int idx = static_cast<int>(symbols.size());
    symbols.push_back({t, idx - 1, idx + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  if (symbols.size() == 1) {
    out->push_back(symbols[0].token);
    return;
  }

  struct Candidate {
    int32_t rank;
    int left;
    TokenId left_token;
    TokenId right_token;
    TokenId result;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;  // best rank, then leftmost
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push = [&](int left) {
    if (left < 0) return;
    const int right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(symbols[left].token, symbols[right].token));
    if (it == merges_.end()) return;
    queue.push(
        {it->second.rank, left, symbols[left].token, symbols[right].token, it->second.result});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    // Stale if either side changed since the candidate was queued.
    if (left.token != c.left_token || left.next < 0 || symbols[left.next].token != c.right_token) {
      continue;
    }
    const int right = left.next;
    left.token = c.result;
    left.next = symbols[right].next;
    if (left.next >= 0) symbols[left.next].prev = c.left;
    symbols[right].token = -1;  // unlinked
    push(left.prev);
    push(c.left);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].token);
}

}  // namespace spillway::engine::internal
