// Tokenizer: the interface every vocabulary format implements (llama2.c tokenizer.bin today;
// tokenizer.json and GGUF vocabularies later). Text in, token ids out, and the raw bytes of each token back.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "anvil/status.h"

namespace anvil {

struct EncodeOptions {
  bool add_bos = true;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual Expected<std::vector<int32_t>> encode(std::string_view text, const EncodeOptions& options) const = 0;
  // The raw bytes token `id` stands for (a byte-fallback token gives its byte; a word-start marker a space).
  // Special tokens (BOS/EOS) give an empty string.
  virtual std::string token_bytes(int32_t id) const = 0;
  // True for SentencePiece-style vocabularies whose decoder drops the leading space of the first piece.
  virtual bool strips_leading_space() const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;

  // Decodes a whole sequence (the leading-space rule applied once, to the first non-empty piece; each invalid
  // UTF-8 maximal subpart becomes U+FFFD, exactly as IncrementalDetokenizer streams it).
  std::string decode(std::span<const int32_t> ids) const;

  // Decodes with special tokens written out as their text (Hugging Face's decode with
  // skip_special_tokens=False). Formats whose special tokens have no text decode as decode() does.
  virtual std::string decode_with_special_tokens(std::span<const int32_t> ids) const { return decode(ids); }
  // The id of a token given its vocabulary text or an added token's content ("<|im_end|>"), if any.
  virtual std::optional<int32_t> token_to_id(std::string_view token) const { return std::nullopt; }
  // The vocabulary text of `id` ("<|im_start|>", "Ġhello", "<0x0A>"), e.g. to give a chat template its
  // bos_token; nullopt for an id outside the vocabulary or a format that keeps no token text.
  virtual std::optional<std::string> id_to_token(int32_t id) const { return std::nullopt; }
};

// Loads a llama2.c tokenizer.bin: int32 max_token_length, then vocab_size records of
// (float32 score, int32 length, bytes). vocab_size comes from the model. Errors name the file and byte offset.
Expected<std::unique_ptr<Tokenizer>> load_llama2c_tokenizer(const std::string& path, int32_t vocab_size);

// True when `path` names a Hugging Face tokenizer: a *.json file or a directory.
bool is_hf_tokenizer_path(const std::string& path);
// Loads a Hugging Face tokenizer.json: the file, or a directory holding one. A tokenizer_config.json beside it
// sets BOS/EOS (bos_token, eos_token). Errors name the file and the field at fault (tokenizer/hf_tokenizer.h).
Expected<std::unique_ptr<Tokenizer>> load_hf_tokenizer(const std::string& path);

}  // namespace anvil
