// Calibration text, tokens and activation statistics (build/calibration.h).
#include "build/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "backends/backend.h"
#include "runtime/model_runner.h"
#include "tokenizer/tokenizer.h"

namespace anvil {

namespace {

// Offset of the first byte that breaks UTF-8 (or is NUL), or -1.
int64_t first_non_text_byte(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) return static_cast<int64_t>(i);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return static_cast<int64_t>(i);
    for (int k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return static_cast<int64_t>(i);
    }
    i += len;
  }
  return -1;
}

uint64_t hash_bytes(const void* data, size_t n) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h ^ n;
}

// The bytes of a weight's first row, hashed: how a fused device weight is traced back to its first part.
uint64_t first_row_hash(const Tensor& w) {
  const size_t row_bytes = w.nbytes() / static_cast<size_t>(std::max<int64_t>(w.shape[0], 1));
  return hash_bytes(w.data, row_bytes);
}

// A Backend that forwards every op to `inner` and records the input of every linear by its weight's first row.
class RecordingBackend final : public Backend {
 public:
  RecordingBackend(Backend& inner, int64_t max_sample_rows) : inner_(inner), max_sample_(max_sample_rows) {}

  std::unordered_map<uint64_t, InputStats>& stats() { return stats_; }

  Device device() const override { return inner_.device(); }
  std::string name() const override { return "calibration(" + inner_.name() + ")"; }
  DType activation_dtype() const override { return inner_.activation_dtype(); }
  Expected<Buffer> allocate(size_t nbytes) override { return inner_.allocate(nbytes); }
  Status copy_to_device(const void* src, const Tensor& dst) override { return inner_.copy_to_device(src, dst); }
  Status copy_to_host(const Tensor& src, void* dst) override { return inner_.copy_to_host(src, dst); }
  Expected<Tensor> upload_weight(const Tensor& host, std::vector<Buffer>* storage) override {
    return inner_.upload_weight(host, storage);
  }
  Status synchronize() override { return inner_.synchronize(); }
  Status embedding(const Tensor& ids, const Tensor& table, const Tensor& out) override {
    return inner_.embedding(ids, table, out);
  }
  Status rms_norm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) override {
    return inner_.rms_norm(x, w, eps, out);
  }
  Status add_rms_norm(const Tensor& x, const Tensor& r, const Tensor& w, float eps, const Tensor& out) override {
    return inner_.add_rms_norm(x, r, w, eps, out);
  }
  Status layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& out) override {
    return inner_.layer_norm(x, w, b, eps, out);
  }
  Status add_layer_norm(const Tensor& x, const Tensor& r, const Tensor& w, const Tensor& b, float eps,
                        const Tensor& out) override {
    return inner_.add_layer_norm(x, r, w, b, eps, out);
  }
  Status gelu(const Tensor& x, GeluApproximation a, const Tensor& out) override { return inner_.gelu(x, a, out); }
  Status linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) override {
    record(x, weight);
    return inner_.linear(x, weight, bias, out);
  }
  Status rope_and_cache_write(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                              const Tensor& slots, const Tensor& inv_freq, RopePairing pairing,
                              const KvCacheView& cache, const Tensor& q_out) override {
    return inner_.rope_and_cache_write(q, k, v, positions, slots, inv_freq, pairing, cache, q_out);
  }
  Status paged_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                         const Tensor& out) override {
    return inner_.paged_attention(q, cache, meta, scale, out);
  }
  Status silu_mul(const Tensor& g, const Tensor& u, const Tensor& out) override { return inner_.silu_mul(g, u, out); }
  Status swiglu(const Tensor& gu, const Tensor& out) override { return inner_.swiglu(gu, out); }
  Status gather_rows(const Tensor& x, const Tensor& idx, const Tensor& out) override {
    return inner_.gather_rows(x, idx, out);
  }
  Status copy_kv_blocks(std::span<const KvCacheView> src, std::span<const KvCacheView> dst,
                        std::span<const KvBlockCopy> copies) override {
    return inner_.copy_kv_blocks(src, dst, copies);
  }
  Status greedy_sample(const Tensor& logits, const Tensor& ids, const Tensor& logprobs) override {
    return inner_.greedy_sample(logits, ids, logprobs);
  }
  // The other families' ops (forwarded unrecorded: their experts' inputs are not calibrated).
  Status relu(const Tensor& x, const Tensor& out) override { return inner_.relu(x, out); }
  Status add(const Tensor& x, const Tensor& y, const Tensor& out) override { return inner_.add(x, y, out); }
  Status paged_attention_alibi(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                               const Tensor& slopes, const Tensor& out) override {
    return inner_.paged_attention_alibi(q, cache, meta, scale, slopes, out);
  }
  Status scale(const Tensor& x, float factor, const Tensor& out) override { return inner_.scale(x, factor, out); }
  Status softcap(const Tensor& x, float cap, const Tensor& out) override { return inner_.softcap(x, cap, out); }
  Status geglu(const Tensor& gu, GeluApproximation a, const Tensor& out) override { return inner_.geglu(gu, a, out); }
  Status moe_route(const Tensor& logits, int top_k, bool renormalize, const Tensor& ids,
                   const Tensor& weights) override {
    return inner_.moe_route(logits, top_k, renormalize, ids, weights);
  }
  Status moe_experts(const Tensor& x, const Tensor& gate_up, const Tensor& down, const Tensor& ids,
                     const Tensor& weights, const MoeBuffers& buffers, const Tensor& out) override {
    return inner_.moe_experts(x, gate_up, down, ids, weights, buffers, out);
  }

 private:
  // x: fp32 [num_tokens, cols] (the CPU's activations).
  void record(const Tensor& x, const Tensor& weight) {
    auto it = keys_.find(weight.data);
    if (it == keys_.end()) it = keys_.emplace(weight.data, first_row_hash(weight)).first;
    InputStats& s = stats_[it->second];
    const int64_t rows = x.size(0);
    const int64_t cols = x.size(1);
    if (s.cols == 0) {
      s.cols = cols;
      s.mean_abs.assign(cols, 0.0f);
      s.max_abs.assign(cols, 0.0f);
    }
    const float* xp = x.ptr<const float>();
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t c = 0; c < cols; ++c) {
        const float a = std::fabs(xp[t * cols + c]);
        s.mean_abs[c] += a;  // a sum until collect_input_stats divides
        s.max_abs[c] = std::max(s.max_abs[c], a);
      }
      if (s.num_sample < max_sample_) {
        s.sample.insert(s.sample.end(), xp + t * cols, xp + (t + 1) * cols);
        ++s.num_sample;
      }
    }
    s.num_rows += rows;
  }

  Backend& inner_;
  int64_t max_sample_;
  std::unordered_map<const void*, uint64_t> keys_;
  std::unordered_map<uint64_t, InputStats> stats_;
};

}  // namespace

Expected<std::string> read_calibration_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("calibration file " + path + " cannot be opened");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    return invalid_argument("calibration file " + path + " is empty; give a text file of a few thousand tokens");
  }
  const int64_t bad = first_non_text_byte(text);
  if (bad >= 0) {
    return invalid_argument("calibration file " + path + " is not text: byte " + std::to_string(bad) + " (0x" + [&] {
      char b[3];
      std::snprintf(b, sizeof(b), "%02x", static_cast<unsigned char>(text[bad]));
      return std::string(b);
    }() + ") is not UTF-8");
  }
  return text;
}

Expected<std::vector<int32_t>> tokenize_calibration(const std::string& text, const std::string& tokenizer_path,
                                                    int64_t vocab_size, int64_t max_tokens) {
  if (tokenizer_path.empty()) {
    return not_found("calibration needs the checkpoint's tokenizer, and none was found beside it");
  }
  std::unique_ptr<Tokenizer> tok;
  if (is_hf_tokenizer_path(tokenizer_path)) {
    ANVIL_ASSIGN_OR_RETURN(tok, load_hf_tokenizer(tokenizer_path));
  } else {
    ANVIL_ASSIGN_OR_RETURN(tok, load_llama2c_tokenizer(tokenizer_path, static_cast<int32_t>(vocab_size)));
  }
  ANVIL_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->encode(text, EncodeOptions{.add_bos = true}));
  if (ids.size() < 2) return invalid_argument("calibration text gives fewer than 2 tokens");
  if (static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(static_cast<size_t>(max_tokens));
  return ids;
}

Expected<std::map<std::string, InputStats>> collect_input_stats(const Checkpoint& ckpt, const std::vector<int32_t>& ids,
                                                                int64_t max_sample_rows) {
  std::unique_ptr<Backend> cpu = make_cpu_backend({});
  RecordingBackend rec(*cpu, max_sample_rows);
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, create_model(ckpt, rec));
  constexpr int32_t kBlock = 16;
  const int64_t window = std::min<int64_t>(static_cast<int64_t>(ids.size()), ckpt.config.max_position_embeddings);
  const int32_t num_blocks = static_cast<int32_t>((window + kBlock - 1) / kBlock) + 1;
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                         ModelRunner::create(rec, *model, KvCacheConfig{.num_blocks = num_blocks, .block_size = kBlock},
                                             RunnerConfig{.max_model_len = static_cast<int32_t>(window)}));
  std::vector<int32_t> blocks(static_cast<size_t>(num_blocks - 1));
  for (size_t b = 0; b < blocks.size(); ++b) blocks[b] = static_cast<int32_t>(b);
  // Windows of the model's context, each from an empty cache.
  for (size_t begin = 0; begin < ids.size(); begin += static_cast<size_t>(window)) {
    const size_t n = std::min(ids.size() - begin, static_cast<size_t>(window));
    SequenceStep step{.token_ids = std::span<const int32_t>(ids.data() + begin, n),
                      .num_computed = 0,
                      .block_ids = blocks,
                      .wants_all_logits = false,
                      .wants_logits = true};
    ANVIL_RETURN_IF_ERROR(runner->step(std::span<const SequenceStep>(&step, 1)).status());
  }
  std::map<std::string, InputStats> out;
  const InputStats* previous = nullptr;
  for (const WeightSpec& spec : model_weight_specs(ckpt.config)) {
    if (spec.role != WeightRole::kLinear) continue;
    const Tensor* w = ckpt.weights.find(spec.name);
    if (w == nullptr) return internal_error("calibration: no tensor " + spec.name);
    auto it = rec.stats().find(first_row_hash(*w));
    const InputStats* s = it != rec.stats().end() ? &it->second : nullptr;
    // A part after the first of a fused weight (k/v after q, up after gate) reads its first part's input.
    if (s == nullptr && previous != nullptr && previous->cols == w->shape[1]) s = previous;
    if (s == nullptr || s->num_rows == 0) {
      return internal_error("calibration: the model never ran a linear on " + spec.name);
    }
    out[spec.name] = *s;
    previous = s;
  }
  for (auto& [name, s] : out) {
    if (s.num_rows > 0 && s.mean_abs.size() == static_cast<size_t>(s.cols)) {
      // mean_abs held sums; shared entries were copied, so each copy is divided once.
      for (float& v : s.mean_abs) v /= static_cast<float>(s.num_rows);
    }
  }
  return out;
}

}  // namespace anvil
