// The admin API's building blocks for uploads (issue #7): multipart/form-data as httpx sends
// it, fine-tuning JSONL validation naming the line, the chat -> tokens + loss mask conversion,
// the FileStore (ids only, digest checked, survives a reopen), and the router's prefix routes.
// (The SHA-256 vectors are in tests/common/sha256_test.cc.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "engine/chat/chat_template.h"
#include "server/admin/admin_api.h"
#include "server/admin/dataset.h"
#include "server/admin/file_store.h"
#include "server/admin/multipart.h"
#include "server/http/auth.h"
#include "server/http/router.h"
#include "server/openai/openai_api.h"
#include "tests/fakes/byte_tokenizer.h"
#include "tests/test_paths.h"

namespace spillway::server::admin {
namespace {

namespace fs = std::filesystem;

TEST(MultipartTest, ParsesAnHttpxUpload) {
  const std::string body =
      "--abc123\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
      "--abc123\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../x.jsonl\"\r\n"
      "Content-Type: application/octet-stream\r\n\r\nline1\r\n--notit\nline2\r\n"
      "--abc123--\r\n";
  absl::StatusOr<std::vector<FormPart>> parts =
      ParseMultipartFormData("multipart/form-data; boundary=abc123", body);
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].name, "purpose");
  EXPECT_EQ((*parts)[0].data, "fine-tune");
  EXPECT_EQ((*parts)[1].name, "file");
  EXPECT_EQ((*parts)[1].filename, "../x.jsonl");
  EXPECT_EQ((*parts)[1].data, "line1\r\n--notit\nline2");
}

TEST(MultipartTest, RefusesMalformedBodies) {
  EXPECT_FALSE(ParseMultipartFormData("application/json", "{}").ok());
  EXPECT_FALSE(ParseMultipartFormData("multipart/form-data", "x").ok());
  EXPECT_FALSE(ParseMultipartFormData("multipart/form-data; boundary=b",
                                      "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n"
                                      "no closing boundary")
                   .ok());
}

TEST(DatasetTest, ValidatesLineByLine) {
  const std::string good =
      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},)"
      R"({"role":"assistant","content":"a"}]})"
      "\n\n"
      R"({"prompt":"p","completion":"c"})"
      "\n";
  absl::StatusOr<std::vector<DatasetExample>> ex = ParseFineTuneJsonl(good);
  ASSERT_TRUE(ex.ok()) << ex.status();
  ASSERT_EQ(ex->size(), 2u);
  EXPECT_TRUE((*ex)[0].chat);
  EXPECT_EQ((*ex)[0].messages.size(), 3u);
  EXPECT_FALSE((*ex)[1].chat);

  auto error = [](const std::string& text) {
    absl::StatusOr<std::vector<DatasetExample>> r = ParseFineTuneJsonl(text);
    return r.ok() ? std::string("ok") : std::string(r.status().message());
  };
  const std::string line1 = R"({"prompt":"p","completion":"c"})";
  EXPECT_EQ(error(line1 + "\n" + line1 + "\n{not json\n"), "line 3: not valid JSON");
  EXPECT_EQ(error(line1 + "\n[1]\n"), "line 2: expected a JSON object");
  EXPECT_EQ(error(R"({"messages":[{"role":"user","content":"u"}]})"),
            "line 1: no assistant message to learn from");
  EXPECT_EQ(error(R"({"messages":[{"role":"tool","content":"u"}]})"),
            "line 1: messages[0].role must be system, user or assistant");
  EXPECT_EQ(error(R"({"messages":[{"role":"assistant","content":5}]})"),
            "line 1: messages[0].content must be a string");
  EXPECT_EQ(error(line1 + "\n" + R"({"prompt":1,"completion":"c"})"),
            "line 2: 'prompt' must be a string");
  EXPECT_EQ(error(R"({"text":"x"})"), "line 1: expected 'messages' or 'prompt' and 'completion'");
  EXPECT_EQ(error("\n\n"), "the file has no example");
}

TEST(DatasetTest, ChatLossCoversAssistantSpansOnly) {
  absl::StatusOr<engine::ChatTemplate> t = engine::ChatTemplate::Parse(
      "{% for m in messages %}<{{ m.role }}>{{ m.content }}|{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}");
  ASSERT_TRUE(t.ok()) << t.status();
  std::unique_ptr<engine::Tokenizer> tok = spillway::testing::MakeByteTokenizer();
  absl::StatusOr<std::vector<DatasetExample>> ex = ParseFineTuneJsonl(
      R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"},)"
      R"({"role":"user","content":"q"},{"role":"assistant","content":"ok"}]})"
      "\n"
      R"({"prompt":"ab","completion":"cd"})");
  ASSERT_TRUE(ex.ok()) << ex.status();
  TokenizeContext ctx{.tokenizer = tok.get(), .chat_template = &*t, .eos_id = 257};
  absl::StatusOr<std::vector<engine::train::TrainingExample>> out =
      TokenizeExamples(*ex, ctx, 1000);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  auto text_and_mask = [](const engine::train::TrainingExample& e) {
    std::string text, mask;
    for (size_t i = 0; i < e.tokens.size(); ++i) {
      text += e.tokens[i] < 256 ? static_cast<char>(e.tokens[i]) : '$';
      mask += e.loss_mask[i] ? '1' : '0';
    }
    return std::make_pair(text, mask);
  };
  auto [chat, chat_mask] = text_and_mask((*out)[0]);
  EXPECT_EQ(chat, "<user>hi|<assistant>yo|<user>q|<assistant>ok|");
  EXPECT_EQ(chat_mask, "000000000000000000001110000000000000000000111");
  auto [pc, pc_mask] = text_and_mask((*out)[1]);
  EXPECT_EQ(pc.substr(pc.size() - 5), "abcd$");
  EXPECT_EQ(pc_mask.substr(pc_mask.size() - 5), "00111");
  // Too long, and no template for chat lines.
  EXPECT_FALSE(TokenizeExamples(*ex, ctx, 10).ok());
  ctx.chat_template = nullptr;
  EXPECT_FALSE(TokenizeExamples(*ex, ctx, 1000).ok());
}

class FileStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = spillway::testing::BinaryPath("admin_files_test_tmp");
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FileStoreTest, StoresByIdChecksTheDigestAndReopens) {
  absl::StatusOr<std::unique_ptr<FileStore>> store = FileStore::Open(dir_, 1000);
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string data = R"({"prompt":"p","completion":"c"})";
  absl::StatusOr<FileInfo> f = (*store)->Put("../../etc/passwd", "fine-tune", data);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(FileStore::IsValidId(f->id)) << f->id;
  EXPECT_EQ(f->filename, "passwd");  // display only; the bytes live under the id
  EXPECT_TRUE(fs::exists(fs::path(dir_) / (f->id + ".data")));
  EXPECT_EQ((*store)->Content(f->id).value(), data);

  // Reopened: the same file.
  store = FileStore::Open(dir_, 1000);
  ASSERT_TRUE(store.ok());
  ASSERT_EQ((*store)->List().size(), 1u);
  EXPECT_EQ((*store)->Get(f->id)->sha256, f->sha256);

  // Changed on disk: refused before use.
  std::ofstream(fs::path(dir_) / (f->id + ".data"), std::ios::trunc) << "{\"prompt\":\"x\"}";
  EXPECT_EQ((*store)->Content(f->id).status().code(), absl::StatusCode::kDataLoss);

  EXPECT_TRUE((*store)->Delete(f->id).ok());
  EXPECT_EQ((*store)->Get(f->id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->Delete("../x").code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(FileStore::IsValidId("file-../../../../etc/passwd"));
}

TEST_F(FileStoreTest, RefusesBadUploads) {
  std::unique_ptr<FileStore> store = FileStore::Open(dir_, 40).value();
  EXPECT_EQ(store->Put("a", "assistants", "{}").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Put("a", "fine-tune", "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Put("a", "fine-tune", std::string(41, ' ')).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status bad = store->Put("a", "fine-tune", "{\"prompt\":\"p\"}").status();
  EXPECT_NE(bad.message().find("line 1"), std::string_view::npos) << bad;
  EXPECT_TRUE(store->List().empty());
}

TEST(RouterPrefixTest, ExactRoutesFirstThenPrefixes) {
  http::Router router(openai::OpenAiApi::ErrorPages());
  std::string hit;
  router.Add("GET", "/v1/files", [&](const http::HttpRequest&, http::Exchange) { hit = "list"; });
  router.AddPrefix("GET", "/v1/files/", [&](const http::HttpRequest&, http::Exchange) {});
  router.AddPrefix("DELETE", "/v1/files/", [&](const http::HttpRequest&, http::Exchange) {});
  EXPECT_EQ(router.RouteErrorForTesting("GET", "/v1/files").status, 0);
  EXPECT_EQ(router.RouteErrorForTesting("GET", "/v1/files/file-1/content").status, 0);
  EXPECT_EQ(router.RouteErrorForTesting("DELETE", "/v1/files/x").status, 0);
  EXPECT_EQ(router.RouteErrorForTesting("POST", "/v1/files/x").status, 405);
  EXPECT_EQ(router.RouteErrorForTesting("GET", "/v1/filesx").status, 404);
}

TEST(AdminApiTest, FilesAndFineTuningAreAdminScope) {
  const http::AccessPolicy p({.api_key = "user", .admin_api_key = "adm"});
  for (const char* path : {"/v1/files", "/v1/files/file-1/content", "/v1/fine_tuning/jobs",
                           "/v1/fine_tuning/jobs/ftjob-1/cancel"}) {
    EXPECT_EQ(p.ScopeOf(path), http::AccessScope::kAdmin) << path;
  }
  EXPECT_TRUE(p.Allows(http::AccessScope::kAdmin, "Bearer adm"));
  EXPECT_FALSE(p.Allows(http::AccessScope::kAdmin, "Bearer user"));
  EXPECT_EQ(p.ScopeOf("/v1/filesystem"), http::AccessScope::kInference);
}

TEST(AdminApiTest, QueryParam) {
  EXPECT_EQ(AdminApi::QueryParam("/v1/fine_tuning/jobs?after=ftjob-1&limit=3", "limit"), "3");
  EXPECT_EQ(AdminApi::QueryParam("/v1/fine_tuning/jobs?after=ftjob-1&limit=3", "after"), "ftjob-1");
  EXPECT_EQ(AdminApi::QueryParam("/v1/fine_tuning/jobs", "after"), "");
}

}  // namespace
}  // namespace spillway::server::admin
