// VocabSpec: a tokenizer as GGUF metadata stores it (tokenizer.ggml.*), in a plain struct the GGUF reader fills
// in, and make_tokenizer_from_vocab, which builds the Hugging Face pipeline the model's tokenizer.json has:
//   "llama": SentencePiece-style BPE with byte fallback; merges from the file, or made from the scores as
//            transformers' GGUF converter makes them; Prepend("▁")+Replace normalizer, <s> template.
//   "gpt2":  byte-level BPE with the file's merges and the split regex named by tokenizer.ggml.pre.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "tokenizer/tokenizer.h"

namespace anvil {

// GGUF token types (tokenizer.ggml.token_type, llama.cpp's numbering).
enum class VocabTokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // special tokens: matched in text, skipped by decode_hf(skip_special_tokens)
  kUserDefined = 4,  // added tokens: matched in text, never split
  kUnused = 5,
  kByte = 6,
};

struct VocabSpec {
  std::string model;                 // tokenizer.ggml.model: "llama" or "gpt2"
  std::string pre;                   // tokenizer.ggml.pre ("gpt2" only): see make_tokenizer_from_vocab
  std::vector<std::string> tokens;   // id -> token text
  std::vector<float> scores;         // empty or one per token ("llama" without merges needs them)
  std::vector<int32_t> token_types;  // empty or one per token (VocabTokenType values)
  std::vector<std::string> merges;   // "left right" by rank; may be empty for "llama"
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
  std::optional<int32_t> unk_id;
  std::optional<bool> add_bos;           // default: true for "llama", false for "gpt2"
  std::optional<bool> add_eos;           // default: false
  std::optional<bool> add_space_prefix;  // "llama": prepend "▁" to the text (default true)
  std::string source;                    // names the file in errors
};

struct GgufTokenizerData;

// The VocabSpec of a GGUF file's tokenizer metadata (formats/gguf.h read_gguf_tokenizer); `source` names the file.
VocabSpec vocab_spec_from_gguf(const GgufTokenizerData& data, const std::string& source);

// Builds the tokenizer. "gpt2" pre names: "" / "default" / "gpt2" / "gpt-2" (GPT-2's regex), "smollm" /
// "starcoder" (single digits, then GPT-2's regex), "llama-bpe" / "llama3" (Llama-3's regex, ignore_merges),
// "qwen2" (NFC, Qwen2's regex). Errors name `source`: an unknown model or pre name, counts that differ from
// the token count, ids outside the vocabulary, merges naming unknown tokens, tokens that are not UTF-8.
Expected<std::unique_ptr<Tokenizer>> make_tokenizer_from_vocab(const VocabSpec& spec);

}  // namespace anvil
