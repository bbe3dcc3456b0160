// A ServedModel for server tests without files: the byte tokenizer of tests/fakes (token id b
// is byte b, 256 = <eos>, 257 = <eot>) and a ChatML template, with a 64-token context.
#pragma once

#include <memory>

#include "engine/chat/chat_template.h"
#include "server/openai/served_model.h"
#include "tests/fakes/byte_tokenizer.h"

namespace spillway::server::openai::testing {

inline constexpr char kChatMlTemplate[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

struct TestModel {
  TestModel() : tokenizer(spillway::testing::MakeByteTokenizer()) {
    auto t = engine::ChatTemplate::Parse(kChatMlTemplate);
    chat_template = std::make_unique<engine::ChatTemplate>(std::move(*t));
    model.name = "test-model";
    model.path = "/models/test.gguf";
    model.tokenizer = tokenizer.get();
    model.chat_template = chat_template.get();
    model.context_tokens = 64;
  }
  std::unique_ptr<engine::Tokenizer> tokenizer;
  std::unique_ptr<engine::ChatTemplate> chat_template;
  ServedModel model;
};

}  // namespace spillway::server::openai::testing
