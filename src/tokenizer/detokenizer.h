// IncrementalDetokenizer: turns a stream of token ids into a stream of text that never splits a UTF-8
// character, and StopChecker: finds stop strings in that stream, holding back text that may start one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace anvil {

class IncrementalDetokenizer {
 public:
  // `continues_text`: the stream continues text already there (a prompt), so a SentencePiece vocabulary's
  // leading space on the first piece is kept ("Once" -> " upon a time", as vLLM streams it); otherwise the
  // stream equals Tokenizer::decode of its ids, which drops that space.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool continues_text = false)
      : tokenizer_(tokenizer), at_start_(!continues_text) {}
  // Appends a token; returns the newly completed text (possibly empty while a character is incomplete;
  // bytes that can never form a character come out as U+FFFD).
  std::string push(int32_t token_id);
  // Returns whatever is held back: an incomplete UTF-8 sequence at the end of the stream, as one U+FFFD.
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
  bool at_start_;
};

class StopChecker {
 public:
  explicit StopChecker(std::vector<std::string> stop_strings);
  // Feeds new text. Returns the text safe to emit now. Once a stop string is found, `stopped()` is true,
  // the returned text ends just before the stop string, and later calls return nothing.
  std::string feed(const std::string& text);
  // Emits what is still held back (call at end of generation when no stop string matched).
  std::string flush();
  bool stopped() const { return stopped_; }
  // The stop string that matched, if any.
  const std::optional<std::string>& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
  std::optional<std::string> matched_;
};

}  // namespace anvil
