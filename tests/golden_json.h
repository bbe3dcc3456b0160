// Reading the JSON goldens under tests/golden/ from C++ tests: the file, and arrays of ids or
// numbers. Header-only; the tests that include it link Boost.JSON through the engine.
#pragma once

#include <boost/json.hpp>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer_spec.h"
#include "tests/test_paths.h"

namespace spillway::testing {

// The parsed JSON of `relative` (a path inside the source tree, e.g. "tests/golden/x.json").
inline boost::json::value ReadJsonFile(const std::string& relative) {
  std::ifstream in(SourcePath(relative));
  std::stringstream ss;
  ss << in.rdbuf();
  return boost::json::parse(ss.str());
}

inline std::vector<engine::TokenId> TokenIds(const boost::json::value& v) {
  std::vector<engine::TokenId> out;
  for (const auto& x : v.as_array()) out.push_back(static_cast<engine::TokenId>(x.as_int64()));
  return out;
}

inline std::vector<double> Doubles(const boost::json::value& v) {
  std::vector<double> out;
  for (const auto& x : v.as_array()) out.push_back(x.to_number<double>());
  return out;
}

}  // namespace spillway::testing
