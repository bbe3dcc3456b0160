// Helpers for the tokenizer tests: read the JSON goldens of tests/golden/tokenizer/ (made by
// make_goldens.py there) and turn them into TokenizerSpecs and id lists.
#pragma once

#include <boost/json.hpp>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.h"
#include "engine/tokenizer/tokenizer_spec.h"
#include "tests/test_paths.h"

namespace spillway::engine::testing {

inline boost::json::value ReadGoldenJson(const std::string& name) {
  const std::string path = spillway::testing::SourcePath("tests/golden/tokenizer/" + name);
  std::ifstream in(path, std::ios::binary);
  SPW_CHECK(in.good()) << "cannot open " << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  boost::json::error_code ec;
  boost::json::value value = boost::json::parse(buffer.str(), ec);
  SPW_CHECK(!ec) << "cannot parse " << path << ": " << ec.message();
  return value;
}

inline std::vector<TokenId> IdsFromJson(const boost::json::value& value) {
  std::vector<TokenId> ids;
  for (const auto& v : value.as_array()) ids.push_back(static_cast<TokenId>(v.as_int64()));
  return ids;
}

inline std::string StringFromJson(const boost::json::value& value) {
  return std::string(value.as_string());
}

// SmolLM2's spec from smollm2_vocab.json; merges are rebuilt from the token they make.
inline TokenizerSpec Smollm2Spec() {
  const boost::json::value json = ReadGoldenJson("smollm2_vocab.json");
  const auto& o = json.as_object();
  TokenizerSpec spec;
  spec.model = StringFromJson(o.at("model"));
  spec.pre = StringFromJson(o.at("pre"));
  for (const auto& t : o.at("tokens").as_array()) spec.tokens.push_back(StringFromJson(t));
  spec.token_types.assign(spec.tokens.size(), TokenType::kNormal);
  for (const auto& pair : o.at("non_normal_types").as_array()) {
    const auto& p = pair.as_array();
    spec.token_types[p[0].as_int64()] = static_cast<TokenType>(p[1].as_int64());
  }
  const int64_t offset = o.at("merge_result_offset").as_int64();
  const auto& left_bytes = o.at("merge_left_bytes").as_array();
  const auto& literal = o.at("literal_merges").as_object();
  for (size_t rank = 0; rank < left_bytes.size(); ++rank) {
    const int64_t left = left_bytes[rank].as_int64();
    if (left < 0) {
      spec.merges.push_back(StringFromJson(literal.at(std::to_string(rank))));
      continue;
    }
    const std::string& merged = spec.tokens[offset + rank];
    spec.merges.push_back(merged.substr(0, left) + " " + merged.substr(left));
  }
  spec.bos_id = static_cast<TokenId>(o.at("bos_id").as_int64());
  spec.eos_id = static_cast<TokenId>(o.at("eos_id").as_int64());
  spec.unk_id = static_cast<TokenId>(o.at("unk_id").as_int64());
  spec.pad_id = static_cast<TokenId>(o.at("pad_id").as_int64());
  spec.add_bos = o.at("add_bos").as_bool();
  spec.add_eos = o.at("add_eos").as_bool();
  return spec;
}

}  // namespace spillway::engine::testing
