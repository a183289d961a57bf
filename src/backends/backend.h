// Backend: the narrow op interface a model is written against. One implementation per device family
// (cpu/ is the readable fp32-accumulating reference; cuda/ is the fast one). Every tensor argument lives on
// the backend's device; shapes are given per parameter. Ops never allocate: callers pass outputs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "backends/sampler.h"
#include "core/tensor.h"
#include "dist/communicator.h"

namespace anvil {

// How rotary embedding pairs the dimensions of a head.
enum class RopePairing {
  kRotateHalf,     // HF: (x[i], x[i + head_dim/2])
  kAdjacentPairs,  // llama2.c / Meta: (x[2i], x[2i+1])
};

// Which GELU: the exact one (erf), or the tanh approximation (GPT-2's gelu_new, gelu_pytorch_tanh).
enum class GeluApproximation { kNone, kTanh };

// Plain-data description of which cached keys/values each sequence's queries attend to. Built once per
// step by the ModelRunner; every attention layer reads the same one.
struct AttentionMetadata {
  int32_t num_seqs = 0;
  int32_t max_blocks_per_seq = 0;
  int32_t block_size = 0;
  int32_t max_query_len = 0;    // longest query run of any sequence this step
  int32_t max_context_len = 0;  // longest context_len of any sequence this step
  Tensor query_start;   // int32 [num_seqs + 1]: sequence s owns query rows [query_start[s], query_start[s+1])
  Tensor context_lens;  // int32 [num_seqs]: tokens in the cache for s after this step's writes
  Tensor block_tables;  // int32 [num_seqs, max_blocks_per_seq]: cache block ids of s, in order
  // Host copies of query_start [num_seqs + 1] and context_lens [num_seqs] where the caller has them (the runner's
  // eager steps do; graph replays do not), valid for the call; empty otherwise. Only kernels that plan on the host
  // read them (FlashInfer's prefill); every op must still work without them.
  std::span<const int32_t> host_query_start;
  std::span<const int32_t> host_context_lens;
  // Per-layer attention settings: the runner leaves the defaults; a model sets them on its own copy of the step's
  // metadata for each layer (Mistral, Gemma-2/3 and StarCoder2 mix windowed and full layers).
  // A query at position p sees keys (p - sliding_window, p] (sliding_window keys, its own included) when
  // sliding_window > 0, as Hugging Face's sliding-window mask; -1: every key up to p.
  int32_t sliding_window = -1;
  // > 0: each scaled score s becomes logit_softcap * tanh(s / logit_softcap) before the softmax (Gemma-2);
  // 0: no capping.
  float logit_softcap = 0.0f;
};

// One block copy of copy_kv_blocks: block `src` of the source cache to block `dst` of the destination cache.
struct KvBlockCopy {
  int32_t src = 0;
  int32_t dst = 0;
};

// One layer's paged KV cache. Slot `b * block_size + i` is position i of block b. The cache dtype is the
// backend's activation dtype, or kFP8E4M3 / kInt8 (EngineConfig::kv_cache_dtype): then every (slot, kv head) row
// of k and v has an fp32 scale, x = code * scale (core/kv_quant.h), written with the token by
// rope_and_cache_write and read by the attention ops and copy_kv_blocks.
struct KvCacheView {
  Tensor k;        // [num_blocks, block_size, num_kv_heads, head_dim]
  Tensor v;        // [num_blocks, block_size, num_kv_heads, head_dim]
  Tensor k_scale;  // fp32 [num_blocks, block_size, num_kv_heads] for a quantized cache; undefined otherwise
  Tensor v_scale;  // fp32 [num_blocks, block_size, num_kv_heads] for a quantized cache; undefined otherwise
};

// OK when `cache` is a well-formed view: k and v contiguous, one dtype and shape, with num_kv_heads and head_dim
// (-1: not checked), and fp32 scales exactly when the dtype is quantized. `op` names the caller in the message.
Status check_kv_cache(const KvCacheView& cache, int64_t num_kv_heads, int64_t head_dim, const char* op);

// A recorded sequence of ops over fixed buffers (a CUDA graph); replay() re-runs it on the current buffer contents.
class CapturedGraph {
 public:
  virtual ~CapturedGraph() = default;
  virtual Status replay() = 0;
};

// One draw of Backend::sample: the logits row it reads and the request state it samples under, as plain data. The
// spans must stay valid for the call.
struct SamplingRow {
  int64_t logits_row = 0;                 // several draws may read one row (n samples of one prompt)
  SamplingOptions options;
  std::span<const int32_t> prompt_ids;    // for the repetition penalty
  std::span<const int32_t> output_ids;    // for every penalty; the draw's step is output_ids.size()
  uint64_t seed = 0;
};

// The RMSNorm in front of a projection, as the fused norm_linear ops take it: residual += x when x is defined
// (add_rms_norm), then normed = rms_norm(residual) * weight (rms_norm of residual when x is undefined). x,
// residual, normed: [num_tokens, hidden_size]; weight: [hidden_size]. normed is always written (the next ops and
// debug hooks may read it).
struct ResidualNorm {
  Tensor x;         // undefined: no residual add
  Tensor residual;  // updated in place when x is defined
  Tensor weight;
  float eps = 0.0f;
  Tensor normed;
};

// Working memory of Backend::moe_experts for one step, allocated by the model (ops never allocate). num_rows =
// num_tokens * top_k: one row per (token, pick).
struct MoeBuffers {
  Tensor sorted_rows;     // int32 [num_rows]: pick rows (token * top_k + j) grouped by expert, ascending within one
  Tensor expert_offsets;  // int32 [num_experts + 1]: expert e owns sorted_rows[offsets[e], offsets[e + 1])
  Tensor pick_positions;  // int32 [num_rows]: where pick row r sits in sorted_rows
  Tensor gate_up;         // [num_rows, 2 * intermediate_size] (activation dtype)
  Tensor act;             // [num_rows, intermediate_size]
  Tensor expert_out;      // [num_rows, hidden_size]: each pick's expert output, unweighted, in sorted order
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  // Dtype of activations and the KV cache on this backend (fp32 on the CPU).
  virtual DType activation_dtype() const = 0;

  // ---- memory ----
  virtual Expected<Buffer> allocate(size_t nbytes) = 0;
  virtual Status copy_to_device(const void* host_src, const Tensor& dst) = 0;
  virtual Status copy_to_host(const Tensor& src, void* host_dst) = 0;
  // Makes a host weight usable by this backend's ops. May return `host` itself (the CPU keeps mmap'd views);
  // otherwise the returned view lives in a Buffer appended to `storage`.
  virtual Expected<Tensor> upload_weight(const Tensor& host, std::vector<Buffer>* storage) = 0;
  // Waits for queued work (a no-op on the CPU).
  virtual Status synchronize() = 0;

  // ---- ops ----
  // out[t] = table[ids[t]]. ids: int32 [num_tokens]; table: [vocab_size, hidden_size]; out: [num_tokens, hidden_size].
  virtual Status embedding(const Tensor& ids, const Tensor& table, const Tensor& out) = 0;
  // out = rms_norm(x) * weight. x, out: [num_tokens, hidden_size]; weight: [hidden_size].
  virtual Status rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) = 0;
  // residual += x; out = rms_norm(residual) * weight. All [num_tokens, hidden_size] except weight [hidden_size].
  virtual Status add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, float eps,
                              const Tensor& out) = 0;
  // out = (x - mean(x)) / sqrt(var(x) + eps) * weight (+ bias), mean and (biased) variance over each row.
  // x, out: [num_tokens, hidden_size]; weight, bias: [hidden_size], bias may be undefined.
  virtual Status layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                            const Tensor& out) = 0;
  // residual += x; out = layer_norm(residual) * weight (+ bias). Shapes as layer_norm; residual like x.
  virtual Status add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                                float eps, const Tensor& out) = 0;
  // out = gelu(x) element-wise: x * Phi(x) (kNone) or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (kTanh).
  // x, out: [num_tokens, n]; out may alias x.
  virtual Status gelu(const Tensor& x, GeluApproximation approximation, const Tensor& out) = 0;
  // out = x @ weight^T (+ bias). x: [num_tokens, in]; weight: [out_features, in]; bias: [out_features] or
  // undefined; out: [num_tokens, out_features].
  virtual Status linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) = 0;
  // Applies rotary embedding at `positions`: rotated q goes to q_out, rotated k replaces k in place, and k and v
  // are written into the cache at `slot_mapping`. q: [num_tokens, num_heads, head_dim]; k, v: [num_tokens,
  // num_kv_heads, head_dim]; q, k and v may be row-strided views of one fused projection (strides[0] >= the
  // row's elements; heads and head_dim contiguous); q_out: contiguous [num_tokens, num_heads, head_dim] (may be
  // q itself when q is contiguous); positions, slot_mapping: int32 [num_tokens]; inv_freq: fp32
  // [rotary_dim / 2], rotary_dim <= head_dim and even. Partial rotary (GPT-NeoX rotary_pct, GPT-J rotary_dim):
  // only the first rotary_dim dims of each head rotate, paired within them ((i, i + rotary_dim/2) or (2i, 2i+1));
  // the dims past rotary_dim are copied unchanged.
  virtual Status rope_and_cache_write(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                                      const Tensor& slot_mapping, const Tensor& inv_freq, RopePairing pairing,
                                      const KvCacheView& cache, const Tensor& q_out) = 0;
  // Causal attention of each sequence's new queries over its cached keys/values (prefill, chunked prefill
  // and decode alike). q: [num_tokens, num_heads, head_dim]; out: [num_tokens, num_heads * head_dim].
  virtual Status paged_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta,
                                 float scale, const Tensor& out) = 0;
  // out = silu(gate) * up. gate, up, out: [num_tokens, intermediate_size].
  virtual Status silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) = 0;
  // out = silu(gate_up[:, :n]) * gate_up[:, n:]. gate_up: [num_tokens, 2n]; out: [num_tokens, n].
  virtual Status swiglu(const Tensor& gate_up, const Tensor& out) = 0;
  // out = swiglu(x @ gate_up_weight^T), the fused MLP input projection. gate_up_weight: [2n, in] (the gate rows,
  // then the up rows); scratch: [num_tokens, 2n], used where the projection is materialized; out: [num_tokens, n].
  virtual Status linear_swiglu(const Tensor& x, const Tensor& gate_up_weight, const Tensor& scratch,
                               const Tensor& out) {
    ANVIL_RETURN_IF_ERROR(linear(x, gate_up_weight, Tensor(), scratch));
    return swiglu(scratch, out);
  }
  // The norm alone: add_rms_norm, or rms_norm when norm.x is undefined.
  Status residual_norm(const ResidualNorm& norm) {
    if (norm.x.defined()) return add_rms_norm(norm.x, norm.residual, norm.weight, norm.eps, norm.normed);
    return rms_norm(norm.residual, norm.weight, norm.eps, norm.normed);
  }
  // residual_norm(norm), then out = norm.normed @ weight^T (+ bias): one op so that a backend can fuse the norm
  // into the projection (CUDA does for decode-sized token counts). weight: [out_features, hidden_size]; bias:
  // [out_features] or undefined; out: [num_tokens, out_features].
  virtual Status norm_linear(const ResidualNorm& norm, const Tensor& weight, const Tensor& bias, const Tensor& out) {
    ANVIL_RETURN_IF_ERROR(residual_norm(norm));
    return linear(norm.normed, weight, bias, out);
  }
  // residual_norm(norm), then out = swiglu(norm.normed @ gate_up_weight^T) as linear_swiglu does.
  virtual Status norm_linear_swiglu(const ResidualNorm& norm, const Tensor& gate_up_weight, const Tensor& scratch,
                                    const Tensor& out) {
    ANVIL_RETURN_IF_ERROR(residual_norm(norm));
    return linear_swiglu(norm.normed, gate_up_weight, scratch, out);
  }
  // out[i] = x[indices[i]]. x: [num_tokens, hidden_size]; indices: int32 [n]; out: [n, hidden_size].
  virtual Status gather_rows(const Tensor& x, const Tensor& indices, const Tensor& out) = 0;

  // ---- ops of the LayerNorm families (GPT-NeoX, GPT-J, OPT, BLOOM, Falcon, StarCoder2) ----
  // out = max(x, 0) element-wise (OPT's MLP). x, out: [num_tokens, n]; out may alias x.
  virtual Status relu(const Tensor& x, const Tensor& out) = 0;
  // out = x + y element-wise (the residual of a parallel attention + MLP block). x, y, out: [num_tokens, n];
  // out may alias x or y.
  virtual Status add(const Tensor& x, const Tensor& y, const Tensor& out) = 0;
  // paged_attention with an ALiBi bias: the score of query position i (absolute) against key position j is
  // scale * q.k + alibi_slopes[head] * (j - i). alibi_slopes: fp32 [num_heads]. (HF BLOOM adds slope * j; the
  // two differ by a constant per query row, which softmax cancels.)
  virtual Status paged_attention_alibi(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta,
                                       float scale, const Tensor& alibi_slopes, const Tensor& out) = 0;
  // ---- element-wise ops of the Gemma family (any float activation dtype; out may alias x) ----
  // out = x * factor, rounded once to the dtype. x, out: [rows, n].
  virtual Status scale(const Tensor& x, float factor, const Tensor& out) = 0;
  // out = cap * tanh(x / cap), computed in fp32 (Gemma-2's final logit soft-capping). x, out: [rows, n]; cap > 0.
  virtual Status softcap(const Tensor& x, float cap, const Tensor& out) = 0;
  // GeGLU: out = gelu(gate_up[:, :n]) * gate_up[:, n:], the gelu rounded to the dtype before the multiply (as
  // Hugging Face's 16-bit path). gate_up: [num_tokens, 2n]; out: [num_tokens, n].
  virtual Status geglu(const Tensor& gate_up, GeluApproximation approximation, const Tensor& out) = 0;

  // ---- mixture of experts (Mixtral) ----
  // Top-k routing as Hugging Face's: p = softmax(router_logits[t]) in fp32 over all experts, the top_k largest p
  // in descending order, divided by their sum when `renormalize`. Picks are ranked by logit (the order of p),
  // the lower expert id first on equal logits, so that every backend picks the same experts.
  // router_logits: [num_tokens, num_experts] (any float dtype); expert_ids: int32 [num_tokens, top_k];
  // expert_weights: fp32 [num_tokens, top_k].
  virtual Status moe_route(const Tensor& router_logits, int top_k, bool renormalize, const Tensor& expert_ids,
                           const Tensor& expert_weights) = 0;
  // out[t] = sum_j expert_weights[t, j] * down_e(silu(gate_e(x[t])) * up_e(x[t])), e = expert_ids[t, j], the sum
  // in j order. x, out: [num_tokens, hidden_size]; gate_up_weights: [num_experts, 2 * intermediate_size,
  // hidden_size] (each expert's gate rows, then its up rows); down_weights: [num_experts, hidden_size,
  // intermediate_size]; buffers sized for num_tokens * top_k rows (MoeBuffers).
  virtual Status moe_experts(const Tensor& x, const Tensor& gate_up_weights, const Tensor& down_weights,
                             const Tensor& expert_ids, const Tensor& expert_weights, const MoeBuffers& buffers,
                             const Tensor& out) = 0;
  // ---- collectives (tensor parallelism: dist/) ----
  // x := the sum of x over this backend's tensor-parallel group, in place: the one hook the row-parallel
  // projections of a sharded model need. A no-op when no group is set (TP 1), so model code has no `if (tp)`.
  // x: contiguous [num_tokens, n] activations. The group's communicator runs on this backend's device and queue.
  Status all_reduce(const Tensor& x) { return tp_group_ == nullptr ? Status() : tp_group_->all_reduce_sum(x); }
  // Sets (or, with null, clears) the group all_reduce sums over; not owned, must outlive its use.
  void set_tensor_parallel_group(Communicator* group) { tp_group_ = group; }
  Communicator* tensor_parallel_group() const { return tp_group_; }

  // ---- KV blocks (copy-on-write of a forked sequence's partial block; swap to and from host memory) ----
  // For every layer l and every pair c: block c.dst of dst[l] (K and V) := block c.src of src[l].
  // src[l].k/.v: [num_src_blocks, block_size, num_kv_heads, head_dim]; dst[l].k/.v: [num_dst_blocks, block_size,
  // num_kv_heads, head_dim], same dtype (and the scales of a quantized cache, k_scale/v_scale: [num_*_blocks,
  // block_size, num_kv_heads], go with their blocks); src.size() == dst.size() == num_layers. Each side is this backend's
  // device cache or host memory from allocate_kv_host (Tensor::device tells which); src and dst may be the same
  // views (copy-on-write). Ids are checked against the block counts. Queued in order with the other ops.
  virtual Status copy_kv_blocks(std::span<const KvCacheView> src, std::span<const KvCacheView> dst,
                                std::span<const KvBlockCopy> copies) {
    return unsupported(name() + " backend: copy_kv_blocks is not implemented");
  }
  // ---- sampling ----
  // Greedy picks on the device: token_ids[s] = argmax_v logits[s, v] (lowest id on ties) and logprobs[s] =
  // log_softmax(logits[s])[token_ids[s]]. logits: fp32 [num_seqs, vocab_size]; token_ids: int32 [num_seqs];
  // logprobs: fp32 [num_seqs]. Lets a greedy step download a few bytes instead of every logit.
  virtual Status greedy_sample(const Tensor& logits, const Tensor& token_ids, const Tensor& logprobs) = 0;
  // Full sampling of many draws at once: results[i] = Sampler().sample(logits[rows[i].logits_row], rows[i].options,
  // rows[i].prompt_ids, rows[i].output_ids, rows[i].seed) (backends/sampler.h defines it exactly; a device may
  // differ only at floating-point near-ties of the draw). logits: fp32 [num_logits_rows, vocab_size] on this
  // backend's device; results.size() == rows.size(), filled on the host. Uploads what it needs and synchronizes
  // once. The default downloads the logits and runs the CPU Sampler.
  virtual Status sample(const Tensor& logits, std::span<const SamplingRow> rows, std::span<SampleResult> results);

  // ---- graphs: record a sequence of ops once, replay it with one launch ----
  // True when capture() works (CUDA); the CPU backend runs ops eagerly and returns false.
  virtual bool supports_graphs() const { return false; }
  // Changes whenever internal scratch memory that ops use is reallocated (graphs captured before are stale).
  virtual uint64_t scratch_epoch() const { return 0; }
  // Records every op `record` enqueues (it must not allocate or synchronize) into a graph.
  virtual Expected<std::unique_ptr<CapturedGraph>> capture(const std::function<Status()>& record) {
    return unsupported(name() + " backend: graph capture is not supported");
  }

  // ---- device-time accounting (benchmarks: how busy the device is, how much host time each step adds) ----
  // Marks the start and the end of one step's device work in the queue.
  virtual void mark_step_begin() {}
  virtual void mark_step_end() {}
  // Device seconds between the begin and end marks of the steps that have completed since the last call (0
  // where the backend does not measure: the CPU, whose ops run on the calling thread).
  virtual double take_step_device_seconds() { return 0.0; }

  // Host memory for swapped-out KV blocks (pinned where the device can copy from it asynchronously).
  virtual Expected<Buffer> allocate_kv_host(size_t nbytes) {
    try {
      return Buffer::host(nbytes);
    } catch (const std::bad_alloc&) {
      return resource_exhausted("cannot allocate " + std::to_string(nbytes) + " bytes of host memory for KV swap");
    }
  }

 private:
  Communicator* tp_group_ = nullptr;
};

// How the CPU quantized linear quantizes its activations (EngineConfig::quant_activations).
enum class QuantActivations : uint8_t {
  kPrecise,  // two 8-bit passes per block, ~15 bits
  kLlama,    // one 8-bit pass: llama.cpp's activation blocks and numbers
};

struct CpuBackendOptions {
  int num_threads = 0;  // 0 = OpenMP default
  QuantActivations quant_activations = QuantActivations::kPrecise;
};

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options);

}  // namespace anvil
