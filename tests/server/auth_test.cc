#include "server/http/auth.h"

#include <gtest/gtest.h>

#include <string>

namespace spillway::server::http {
namespace {

TEST(ConstantTimeEquals, ComparesEveryByteAndLength) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("sk-abc", "sk-abc"));
  EXPECT_FALSE(ConstantTimeEquals("sk-abc", "sk-abd"));
  EXPECT_FALSE(ConstantTimeEquals("sk-abc", "sk-ab"));
  EXPECT_FALSE(ConstantTimeEquals("sk-ab", "sk-abc"));
  EXPECT_FALSE(ConstantTimeEquals("", "x"));
  // A prefix padded with what the loop reads past the end (zero) still differs by length.
  EXPECT_FALSE(ConstantTimeEquals(std::string("ab\0", 3), "ab"));
  EXPECT_FALSE(ConstantTimeEquals("xbc", "abc"));
}

TEST(BearerToken, ParsesTheBearerScheme) {
  EXPECT_EQ(BearerToken("Bearer sk-1"), "sk-1");
  EXPECT_EQ(BearerToken("bearer   sk-1  "), "sk-1");
  EXPECT_EQ(BearerToken("Basic abc"), "");
  EXPECT_EQ(BearerToken("Bearer"), "");
  EXPECT_EQ(BearerToken(""), "");
}

TEST(RequestId, AcceptsOnlySaneIds) {
  EXPECT_TRUE(IsValidRequestId("abc-DEF_0.9"));
  EXPECT_TRUE(IsValidRequestId(std::string(64, 'a')));
  EXPECT_FALSE(IsValidRequestId(std::string(65, 'a')));
  EXPECT_FALSE(IsValidRequestId(""));
  EXPECT_FALSE(IsValidRequestId("a b"));
  EXPECT_FALSE(IsValidRequestId("a\r\nX-Evil: 1"));
  EXPECT_FALSE(IsValidRequestId("id/1"));
  const std::string id = NewRequestId();
  EXPECT_EQ(id.size(), 32u);
  EXPECT_TRUE(IsValidRequestId(id));
  EXPECT_NE(id, NewRequestId());
}

TEST(AccessPolicy, ScopesAndKeys) {
  const AccessPolicy open({});
  EXPECT_TRUE(open.Allows(AccessScope::kInference, ""));
  EXPECT_TRUE(open.Allows(AccessScope::kAdmin, ""));

  const AccessPolicy p({.api_key = "k1", .admin_api_key = "adm", .protect_metrics = false});
  EXPECT_EQ(p.ScopeOf("/health"), AccessScope::kOpen);
  EXPECT_EQ(p.ScopeOf("/ready"), AccessScope::kOpen);
  EXPECT_EQ(p.ScopeOf("/metrics"), AccessScope::kOpen);
  EXPECT_EQ(p.ScopeOf("/v1/completions"), AccessScope::kInference);
  EXPECT_EQ(p.ScopeOf("/tokenize"), AccessScope::kInference);
  EXPECT_EQ(p.ScopeOf("/detokenize"), AccessScope::kInference);
  EXPECT_EQ(p.ScopeOf("/admin/lora"), AccessScope::kAdmin);
  EXPECT_TRUE(p.Allows(AccessScope::kInference, "Bearer k1"));
  EXPECT_FALSE(p.Allows(AccessScope::kInference, "Bearer k2"));
  EXPECT_FALSE(p.Allows(AccessScope::kInference, ""));
  EXPECT_FALSE(p.Allows(AccessScope::kInference, "k1"));
  EXPECT_TRUE(p.Allows(AccessScope::kAdmin, "Bearer adm"));
  EXPECT_FALSE(p.Allows(AccessScope::kAdmin, "Bearer k1"));

  const AccessPolicy guarded({.api_key = "k1", .admin_api_key = "", .protect_metrics = true});
  EXPECT_EQ(guarded.ScopeOf("/metrics"), AccessScope::kInference);
  EXPECT_TRUE(guarded.Allows(AccessScope::kAdmin, "Bearer k1"));  // admin falls back to api key
}

TEST(FindHeader, IsCaseInsensitive) {
  HttpRequest r;
  r.headers = {{"Authorization", "Bearer x"}, {"X-Request-Id", "abc"}};
  EXPECT_EQ(FindHeader(r, "authorization"), "Bearer x");
  EXPECT_EQ(FindHeader(r, "x-request-id"), "abc");
  EXPECT_EQ(FindHeader(r, "missing"), "");
  const AccessPolicy p({.api_key = "x"});
  r.path = "/v1/models";
  EXPECT_TRUE(p.Allows(r));
}

}  // namespace
}  // namespace spillway::server::http
