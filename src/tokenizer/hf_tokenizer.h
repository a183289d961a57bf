// HfTokenizer: a Hugging Face tokenizer.json pipeline (added tokens -> normalizer -> pre-tokenizer -> BPE
// model -> post-processor; decoder for the way back), matching the PyPI `tokenizers` package id for id.
// Loads from tokenizer.json (a file, or a directory holding one, with tokenizer_config.json for BOS/EOS).
// Text with invalid UTF-8 is encoded as if each invalid maximal subpart were U+FFFD (Python's
// bytes.decode(errors="replace")), since HF only takes str.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/token_decoder.h"
#include "tokenizer/tokenizer.h"

namespace anvil {

// The parts of a tokenizer, as tokenizer.json describes them.
struct HfTokenizerParts {
  std::unique_ptr<Normalizer> normalizer;         // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;    // may be null
  std::unique_ptr<BpeModel> model;                // required
  std::vector<AddedToken> added_tokens;           // in file order; ids are assigned as HF does
  std::unique_ptr<TokenDecoder> decoder;          // may be null
  std::unique_ptr<PostProcessor> post_processor;  // may be null
  // BOS/EOS as named by tokenizer_config.json or GGUF metadata; when unset, the post-processor's template and
  // then common names (<s>, <|begin_of_text|>, ...) decide.
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
};

class HfTokenizer final : public Tokenizer {
 public:
  // Texts longer than this are refused by encode.
  static constexpr size_t kMaxTextBytes = size_t{1} << 30;

  static Expected<std::unique_ptr<HfTokenizer>> create(HfTokenizerParts parts);

  // options.add_bos is HF's add_special_tokens: the post-processor's tokens (BOS, and EOS if configured).
  Expected<std::vector<int32_t>> encode(std::string_view text, const EncodeOptions& options) const override;
  std::string token_bytes(int32_t id) const override;
  bool strips_leading_space() const override;
  int32_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  std::string decode_with_special_tokens(std::span<const int32_t> ids) const override {
    return decode_hf(ids, /*skip_special_tokens=*/false);
  }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::optional<std::string> id_to_token(int32_t id) const override;

  // Hugging Face's Tokenizer.decode(ids, skip_special_tokens): the decoder chain over the token strings,
  // added tokens as their content, unknown ids skipped.
  std::string decode_hf(std::span<const int32_t> ids, bool skip_special_tokens) const;
  // Overrides BOS/EOS (tokenizer_config.json's bos_token/eos_token); an unset one keeps its value.
  void set_special_ids(std::optional<int32_t> bos, std::optional<int32_t> eos);

 private:
  explicit HfTokenizer(HfTokenizerParts parts) : parts_(std::move(parts)) {}

  HfTokenizerParts parts_;
  AddedVocabulary added_;
  std::vector<std::string> token_bytes_;  // [vocab_size] what each id streams as (special tokens: empty)
  int32_t vocab_size_ = 0;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
};

// Parses tokenizer.json text; `source` names it in errors ("tokenizer file X: field: problem"). Unknown
// normalizer, pre-tokenizer, model, decoder or post-processor types are errors naming the type.
Expected<std::unique_ptr<HfTokenizer>> parse_hf_tokenizer_json(std::string_view json_text, const std::string& source);

// load_hf_tokenizer and is_hf_tokenizer_path are declared in tokenizer/tokenizer.h.

}  // namespace anvil
