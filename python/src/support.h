// What the Python module's wrappers share: the exception that carries a Status to the binding boundary (turned
// into ValueError / FileNotFoundError / RuntimeError there), the per-call OpenMP thread setting, and the model's
// chat template (picked and rendered by src/server/chat_prompt.h, as the server and the CLI do).
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "anvil/engine.h"
#include "anvil/status.h"
#include "server/chat_prompt.h"

namespace anvil::python {

// Thrown by the wrappers only, caught by the exception translator in anvil_ext.cpp (exceptions never cross the
// C++ API; this one exists only on the Python side of it).
class StatusError : public std::exception {
 public:
  explicit StatusError(Status status) : status_(std::move(status)) {}
  const Status& status() const { return status_; }
  const char* what() const noexcept override { return status_.message().c_str(); }

 private:
  Status status_;
};

// Throws StatusError when `status` is not ok.
inline void check(const Status& status) {
  if (!status.ok()) throw StatusError(status);
}

template <typename T>
T value_or_throw(Expected<T>&& expected) {
  if (!expected.ok()) throw StatusError(expected.status());
  return std::move(expected).value();
}

// NOTE: OpenMP's thread count (nthreads-var) belongs to the calling thread, and the CPU backend sets it with
// omp_set_num_threads on the thread that creates the engine. Left alone, a second engine made on the same Python
// thread would inherit the first one's count (and the first would then run with the second's). Every wrapper call
// that runs engine code sets the engine's own count on the calling thread and puts the caller's back afterwards.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int num_threads);
  ~ScopedOmpThreads();
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int saved_;
};

// `requested` threads, or (0) the calling thread's current OpenMP default (OMP_NUM_THREADS, else all cores).
int resolve_num_threads(int requested);

// The model's chat template, parsed once; another template may be given per call.
class ChatSupport {
 public:
  // From the engine's template and special-token texts; a model without a template is fine until render().
  static ChatSupport from_engine(const Engine& engine);
  // Renders `messages` (role, content); `template_source` (Jinja text), when given, replaces the model's template.
  // Tokenize the text with BOS when the result says add_bos (the BOS text was cut, as the server does).
  server::ChatPrompt render(const std::vector<std::pair<std::string, std::string>>& messages,
                            bool add_generation_prompt, const std::optional<std::string>& template_source) const;
  bool has_template() const { return prompter_.has_value(); }

 private:
  std::optional<server::ChatPrompter> prompter_;
  std::string bos_token_;
  std::string eos_token_;
  server::BosText bos_text_ = server::BosText::kKeep;
};

// The per-token log-probabilities of `ids` under the model from its logits [ids.size(), vocab_size]:
// entry i (i >= 1) is log p(ids[i] | ids[0..i-1]); there is none for ids[0].
std::vector<double> token_logprobs(const std::vector<float>& logits, const std::vector<int32_t>& ids,
                                   int64_t vocab_size);

// Python ints as token ids: errors name the first one that is not an int32.
std::vector<int32_t> to_token_ids(const std::vector<int64_t>& ids);

}  // namespace anvil::python
