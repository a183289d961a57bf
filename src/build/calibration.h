// Calibration for the activation-aware schemes (int4-awq, smoothquant): the calibration text read and checked,
// tokenized with the checkpoint's tokenizer, and run through the unquantized model on the CPU backend while a
// recording wrapper of the backend gathers, for every linear weight, statistics of the activations it meets:
// per input channel mean |x| and max |x|, and a sample of rows for the AWQ loss.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "models/registry.h"

namespace anvil {

// What one linear weight's input looked like over the calibration tokens.
struct InputStats {
  int64_t cols = 0;
  int64_t num_rows = 0;         // tokens seen
  std::vector<float> mean_abs;  // [cols]
  std::vector<float> max_abs;   // [cols]
  std::vector<float> sample;    // [num_sample, cols]: the first rows seen (for the AWQ loss)
  int64_t num_sample = 0;
};

// Reads `path` as calibration text. Errors: a missing file, an empty one, or one that is not text (a NUL byte or
// invalid UTF-8, naming the byte offset).
Expected<std::string> read_calibration_text(const std::string& path);

// The text's first `max_tokens` token ids (BOS first) with the checkpoint's tokenizer (`tokenizer_path`, the one
// found beside it). Errors: no tokenizer, a text that gives fewer than 2 tokens.
Expected<std::vector<int32_t>> tokenize_calibration(const std::string& text, const std::string& tokenizer_path,
                                                    int64_t vocab_size, int64_t max_tokens);

// Runs `ids` through ckpt's model (unquantized weights) and returns the input statistics of every weight its family
// marks WeightRole::kLinear, by name. Weights the model fuses at load share their first part's input (q/k/v,
// gate/up). Keeps up to `max_sample_rows` rows of each input.
Expected<std::map<std::string, InputStats>> collect_input_stats(const Checkpoint& ckpt, const std::vector<int32_t>& ids,
                                                                int64_t max_sample_rows);

}  // namespace anvil
