// IncrementalDetokenizer and StopChecker: the streaming side of decode. The detokenizer applies the same
// leading-space and U+FFFD rules as Tokenizer::decode, so the concatenated stream equals decode(all ids).
#include "tokenizer/detokenizer.h"

#include <algorithm>
#include <utility>

#include "tokenizer/utf8.h"

namespace anvil {

std::string IncrementalDetokenizer::push(int32_t token_id) {
  std::string piece = tokenizer_.token_bytes(token_id);
  if (piece.empty()) return {};
  if (at_start_) {
    at_start_ = false;
    if (tokenizer_.strips_leading_space() && piece.front() == ' ') piece.erase(0, 1);
  }
  pending_ += piece;
  std::string out;
  const size_t consumed = append_valid_utf8(pending_, Utf8Tail::kHold, out);
  pending_.erase(0, consumed);
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out;
  append_valid_utf8(pending_, Utf8Tail::kReplace, out);
  pending_.clear();
  return out;
}

StopChecker::StopChecker(std::vector<std::string> stop_strings) {
  for (std::string& stop : stop_strings) {
    if (!stop.empty()) stops_.push_back(std::move(stop));
  }
}

std::string StopChecker::feed(const std::string& text) {
  if (stopped_) return {};
  held_ += text;
  // NOTE: everything emitted earlier was checked not to begin any stop string, so a match can only start
  // inside held_, which is at most (longest stop - 1) bytes plus the new text.
  size_t best_pos = std::string::npos;
  const std::string* best_stop = nullptr;
  for (const std::string& stop : stops_) {
    const size_t pos = held_.find(stop);
    if (pos < best_pos) {
      best_pos = pos;
      best_stop = &stop;
    }
  }
  if (best_stop != nullptr) {
    stopped_ = true;
    matched_ = *best_stop;
    std::string out = held_.substr(0, best_pos);
    held_.clear();
    return out;
  }
  // Hold back the longest suffix of held_ that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    for (size_t k = std::min(stop.size() - 1, held_.size()); k > keep; --k) {
      if (held_.compare(held_.size() - k, k, stop, 0, k) == 0) {
        keep = k;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopChecker::flush() {
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

}  // namespace anvil
