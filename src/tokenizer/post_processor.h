// Post-processors of a tokenizer.json ("post_processor"): the special tokens encode adds around a single
// sequence when asked to (add_special_tokens). Supported: TemplateProcessing (its "single" template),
// ByteLevel (offsets only: no ids change), BertProcessing and RobertaProcessing ([cls] A [sep]), Sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "anvil/status.h"
#include "tokenizer/json_fields.h"

namespace anvil {

class PostProcessor {
 public:
  // The ids placed before and after the sequence of a single-sequence encode.
  struct Wrap {
    std::vector<int32_t> prefix;
    std::vector<int32_t> suffix;
  };

  explicit PostProcessor(Wrap wrap) : wrap_(std::move(wrap)) {}
  // Adds the special tokens around `ids` (only when add_special_tokens is asked).
  void process(std::vector<int32_t>& ids) const;
  const Wrap& wrap() const { return wrap_; }

 private:
  Wrap wrap_;
};

// Builds the post-processor `j` describes; null JSON gives a null pointer. An unknown "type", or a template
// naming a special token it does not define, is an error naming the field.
Expected<std::unique_ptr<PostProcessor>> parse_post_processor(const nlohmann::json& j, const JsonWhere& where);

}  // namespace anvil
