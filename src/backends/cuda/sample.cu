// Full sampling on the GPU: penalties, temperature, top-k, top-p, min-p and the seeded exponential-race draw,
// plus the chosen token's raw logprob and the top-N raw logprobs, for many draws in one launch (one CTA per
// draw). It reproduces backends/sampler.h's definition: cuts are found by radix selection over the logits' float
// bits (no sort), top-p masses are the same integers the CPU sums, and each float step is rounded alike.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

// NOTE: one CTA of 512 threads per draw. Measured end to end (upload, kernel, download, host logprobs) on an
// H200 with a 151936-token vocabulary: 1 draw 0.33 ms at temperature 1, 1.1 ms with top-p 0.9; 512 draws 1.2 ms
// and 3.9 ms (greedy through this op: 0.08 / 0.34 ms). Small batches leave most SMs idle: splitting a row over
// several CTAs is the next step if sampling shows up in a profile.
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kRadixBits = 8;
constexpr int kBuckets = 1 << kRadixBits;
constexpr uint32_t kNoBucket = kBuckets;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int32_t kSeenFlag = 1 << 30;  // penalty counts: bit 30 = seen in prompt or output, low bits = output count

// One draw's plan, built on the host from its SamplingOptions and sampling::make_draw_plan.
struct RowPlan {
  int64_t logits_row;
  int64_t prompt_offset, prompt_len;  // into the uploaded ids (rows with penalties only)
  int64_t output_offset, output_len;
  int64_t penalty_slot;  // row of the work/count scratch, or -1 when no penalty applies
  int64_t top_offset;    // first of this draw's num_top entries in the top-logprob outputs
  double temperature, top_p, log_min_p;
  uint64_t race_stream;
  int32_t top_k;    // count kept by top-k (vocab_size when off)
  int32_t num_top;  // raw top logprobs wanted, <= vocab_size
  int32_t mass_bits;
  int32_t is_greedy, has_top_p, has_min_p;
  float repetition, presence, frequency;
};

// What comes back per draw; the host turns it into logprobs with sampling::raw_logprob.
struct RowOut {
  double sum_exp;  // sum_i exp(x_i - raw_max) over the raw logits (x == max counts 1)
  int32_t token_id;
  float chosen_raw;  // raw logit of token_id (NaN -> -inf)
  float raw_max;
  int32_t pad;
};

// A prefix of the order "key descending, id ascending": (k, id) is in it when k > key or (k == key, id <= id).
struct Cut {
  uint32_t key;
  int32_t id;
};
constexpr Cut kAllTokens{0u, INT_MAX};

__device__ __forceinline__ bool in_cut(uint32_t k, int32_t id, Cut c) {
  return k > c.key || (k == c.key && id <= c.id);
}

__device__ __forceinline__ float sanitized(float x) {
  return isnan(x) ? -INFINITY : x;
}

// Order-preserving uint32 of a logit: larger logit, larger key; NaN as -inf and -0 as +0, so equal keys are
// exactly the logits the CPU's float comparisons call equal.
__device__ __forceinline__ uint32_t order_key(float x) {
  x = sanitized(x);
  if (x == 0.0f) x = 0.0f;
  const uint32_t b = __float_as_uint(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_to_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// sampling::race_uniform.
__device__ __forceinline__ double race_uniform(uint64_t stream, int32_t id) {
  const uint64_t bits = mix64(stream + static_cast<uint64_t>(static_cast<uint32_t>(id)) * sampling::kGoldenGamma);
  return __dmul_rn(__dadd_rn(static_cast<double>(bits >> 12), 0.5), 0x1p-52);
}

// sampling::penalized_logit, each step rounded on its own.
__device__ __forceinline__ float penalized(float x, const RowPlan& p, int32_t packed) {
  const int32_t count = packed & (kSeenFlag - 1);
  if (p.repetition != 1.0f) x = x > 0.0f ? __fdiv_rn(x, p.repetition) : __fmul_rn(x, p.repetition);
  if (count > 0 && (p.presence != 0.0f || p.frequency != 0.0f)) {
    x = __fsub_rn(x, __fmaf_rn(p.frequency, static_cast<float>(count), p.presence));
  }
  return sanitized(x);
}

// The scaled log-weight s of the CPU's sample_from: 0 at the max, (x - max) / T otherwise, NaN -> -inf.
__device__ __forceinline__ double scaled_log_weight(float x, float max, double temperature) {
  if (x == max) return 0.0;
  const double s = __ddiv_rn(__dsub_rn(static_cast<double>(x), static_cast<double>(max)), temperature);
  return isnan(s) ? -INFINITY : s;
}

// sampling::mass.
__device__ __forceinline__ uint64_t mass_of(double s, int bits) {
  return static_cast<uint64_t>(__dadd_rn(__dmul_rn(exp(s), ldexp(1.0, bits)), 0.5));
}

struct Shared {
  uint32_t counts[kWarps][kBuckets];  // per-warp radix histograms: no atomics, a fixed summation order
  uint64_t masses[kWarps][kBuckets];
};
constexpr size_t kSharedBytes = sizeof(Shared);

template <typename T, typename Op>
__device__ T block_reduce(T v, Op op) {
  __shared__ T parts[kWarps];
  __shared__ T result;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, o));
  if ((threadIdx.x & 31) == 0) parts[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    T t = parts[0];
    for (int w = 1; w < kWarps; ++w) t = op(t, parts[w]);
    result = t;
  }
  __syncthreads();
  const T r = result;
  __syncthreads();
  return r;
}

__device__ uint32_t block_max_u32(uint32_t v) {
  return block_reduce(v, [](uint32_t a, uint32_t b) { return a > b ? a : b; });
}
__device__ unsigned long long block_max_u64(unsigned long long v) {
  return block_reduce(v, [](unsigned long long a, unsigned long long b) { return a > b ? a : b; });
}
__device__ double block_sum_f64(double v) {
  return block_reduce(v, [](double a, double b) { return a + b; });
}

// The largest race key, ties to the lower id; id -1 when no thread had a candidate.
__device__ int32_t block_race_winner(double key, int32_t id) {
  __shared__ double part_keys[kWarps];
  __shared__ int32_t part_ids[kWarps];
  __shared__ int32_t result;
  auto better = [](double ka, int32_t ia, double kb, int32_t ib) {
    if (ib < 0) return false;
    if (ia < 0) return true;
    return kb > ka || (kb == ka && ib < ia);
  };
  for (int o = 16; o > 0; o >>= 1) {
    const double k2 = __shfl_xor_sync(kFullMask, key, o);
    const int32_t i2 = __shfl_xor_sync(kFullMask, id, o);
    if (better(key, id, k2, i2)) {
      key = k2;
      id = i2;
    }
  }
  if ((threadIdx.x & 31) == 0) {
    part_keys[threadIdx.x >> 5] = key;
    part_ids[threadIdx.x >> 5] = id;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double k = part_keys[0];
    int32_t i = part_ids[0];
    for (int w = 1; w < kWarps; ++w) {
      if (better(k, i, part_keys[w], part_ids[w])) {
        k = part_keys[w];
        i = part_ids[w];
      }
    }
    result = i;
  }
  __syncthreads();
  const int32_t r = result;
  __syncthreads();
  return r;
}

// Reads a row's logits: the raw row (NaN -> -inf on read) or the penalized scratch row.
struct RowView {
  const float* x;
  int32_t vocab;
  __device__ float at(int32_t i) const { return sanitized(x[i]); }
};

// The shortest prefix of `domain` (in the order) that holds `n` tokens (kMass = false), or whose running mass as
// double reaches limit = top_p * double(total mass of the domain) (kMass = true; the whole domain when rounding
// keeps it short), found by radix selection over the keys, 8 bits per pass, then by rank among the tokens tied
// at the boundary key.
// Mass mode: tokens' masses are sampling::mass(scaled_log_weight(x, max, temperature), mass_bits).
// Precondition (count mode): 1 <= n <= tokens in domain. All threads of the block call it.
template <bool kMass>
__device__ Cut select_cut(const RowView row, Cut domain, uint64_t n, double top_p, float max, double temperature,
                          int mass_bits, Shared& sh) {
  __shared__ uint32_t bucket_counts[kBuckets];
  __shared__ uint64_t bucket_masses[kBuckets];
  __shared__ uint32_t chosen_prefix;
  __shared__ uint64_t chosen_above;
  __shared__ uint32_t chosen_eq;
  __shared__ double shared_limit;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  uint32_t prefix = 0;
  uint32_t mask = 0;
  uint64_t above = 0;  // count or mass of domain tokens ranked above the candidate range
  uint32_t eq = 0;
  for (int shift = 32 - kRadixBits; shift >= 0; shift -= kRadixBits) {
    for (int b = threadIdx.x; b < kWarps * kBuckets; b += kThreads) {
      (&sh.counts[0][0])[b] = 0;
      if (kMass) (&sh.masses[0][0])[b] = 0;
    }
    __syncthreads();
    for (int32_t base = 0; base < row.vocab; base += kThreads) {
      const int32_t i = base + static_cast<int32_t>(threadIdx.x);
      uint32_t bucket = kNoBucket;
      float x = 0.0f;
      if (i < row.vocab) {
        x = row.at(i);
        const uint32_t k = order_key(x);
        if ((k & mask) == prefix && in_cut(k, i, domain)) bucket = (k >> shift) & (kBuckets - 1);
      }
      if (__ballot_sync(kFullMask, bucket != kNoBucket) == 0) continue;  // warp-uniform
      const unsigned peers = __match_any_sync(kFullMask, bucket);
      const bool is_leader = lane == __ffs(peers) - 1;
      if (kMass) {
        const uint64_t m = bucket != kNoBucket ? mass_of(scaled_log_weight(x, max, temperature), mass_bits) : 0;
        uint64_t sum = 0;
        for (int src = 0; src < 32; ++src) {
          const uint64_t v = __shfl_sync(kFullMask, static_cast<unsigned long long>(m), src);
          if ((peers >> src) & 1u) sum += v;
        }
        if (is_leader && bucket != kNoBucket) sh.masses[warp][bucket] += sum;
      }
      if (is_leader && bucket != kNoBucket) sh.counts[warp][bucket] += __popc(peers);
      __syncwarp();
    }
    __syncthreads();
    for (int b = threadIdx.x; b < kBuckets; b += kThreads) {
      uint32_t c = 0;
      uint64_t m = 0;
      for (int w = 0; w < kWarps; ++w) {
        c += sh.counts[w][b];
        if (kMass) m += sh.masses[w][b];
      }
      bucket_counts[b] = c;
      bucket_masses[b] = m;
    }
    __syncthreads();
    if (threadIdx.x == 0 && kMass && shift == 32 - kRadixBits) {  // the first pass sees the whole domain
      uint64_t total = 0;
      for (int b = 0; b < kBuckets; ++b) total += bucket_masses[b];
      shared_limit = __dmul_rn(top_p, static_cast<double>(total));
    }
    if (threadIdx.x == 0) {
      const double limit = kMass ? shared_limit : 0.0;
      uint64_t running = above;
      int chosen = -1;
      int last_nonempty = -1;
      for (int b = kBuckets - 1; b >= 0; --b) {
        if (bucket_counts[b] == 0) continue;
        last_nonempty = b;
        const uint64_t with_b = running + (kMass ? bucket_masses[b] : bucket_counts[b]);
        const bool reached = kMass ? static_cast<double>(with_b) >= limit : with_b >= n;
        if (reached) {
          chosen = b;
          break;
        }
        running = with_b;
      }
      if (chosen < 0) {  // mass mode, rounding short of the limit: the last-ranked token ends the prefix
        chosen = last_nonempty;
        running -= kMass ? bucket_masses[chosen] : bucket_counts[chosen];
      }
      chosen_prefix = prefix | (static_cast<uint32_t>(chosen) << shift);
      chosen_above = running;
      chosen_eq = bucket_counts[chosen];
    }
    __syncthreads();
    prefix = chosen_prefix;
    above = chosen_above;
    eq = chosen_eq;
    mask |= static_cast<uint32_t>(kBuckets - 1) << shift;
    __syncthreads();
  }
  // `prefix` is the boundary key; `eq` domain tokens share it. Take the first n_ties of them by id.
  uint64_t n_ties;
  if (kMass) {
    const double limit = shared_limit;
    const uint64_t m = mass_of(scaled_log_weight(key_to_float(prefix), max, temperature), mass_bits);
    uint64_t lo = 1;
    uint64_t hi = eq;
    while (lo < hi) {
      const uint64_t mid = lo + (hi - lo) / 2;
      if (static_cast<double>(above + mid * m) >= limit) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    n_ties = lo;
  } else {
    n_ties = n - above;
  }
  if (n_ties >= eq) return Cut{prefix, INT_MAX};

  // The n_ties-th smallest id among the tied domain tokens: a block-wide running count in id order.
  __shared__ uint32_t warp_totals[kWarps];
  __shared__ int32_t found;
  if (threadIdx.x == 0) found = -1;
  __syncthreads();
  uint64_t running = 0;
  for (int32_t base = 0; base < row.vocab; base += kThreads) {
    const int32_t i = base + static_cast<int32_t>(threadIdx.x);
    const bool tied = i < row.vocab && order_key(row.at(i)) == prefix && in_cut(prefix, i, domain);
    const unsigned ballot = __ballot_sync(kFullMask, tied);
    if (lane == 0) warp_totals[warp] = __popc(ballot);
    __syncthreads();
    uint64_t before = running + __popc(ballot & ((1u << lane) - 1u));
    uint32_t total = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) before += warp_totals[w];
      total += warp_totals[w];
    }
    if (tied && before + 1 == n_ties) found = i;
    running += total;
    __syncthreads();
    if (found >= 0) break;  // uniform: read after the barrier
  }
  return Cut{prefix, found};
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* __restrict__ logits, int32_t vocab, const RowPlan* __restrict__ plans,
                  const int32_t* __restrict__ ids, float* __restrict__ work, int32_t* __restrict__ penalty_counts,
                  RowOut* __restrict__ outs, int32_t* __restrict__ top_ids, float* __restrict__ top_values) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  Shared& sh = *reinterpret_cast<Shared*>(shared_bytes);
  const RowPlan p = plans[blockIdx.x];
  const float* raw_row = logits + p.logits_row * static_cast<int64_t>(vocab);
  const RowView raw{raw_row, vocab};

  // Raw statistics: max and sum of exp for the logprobs.
  uint32_t max_key = 0;
  for (int32_t i = threadIdx.x; i < vocab; i += kThreads) max_key = max(max_key, order_key(raw_row[i]));
  const float raw_max = key_to_float(block_max_u32(max_key));
  double sum = 0.0;
  for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = raw.at(i);
    sum += x == raw_max ? 1.0 : static_cast<double>(expf(x - raw_max));
  }
  sum = block_sum_f64(sum);

  // The raw top-N: the shortest prefix of the raw order holding num_top tokens, written unordered.
  if (p.num_top > 0) {
    const Cut top = select_cut<false>(raw, kAllTokens, static_cast<uint64_t>(p.num_top), 0.0, 0.0f, 1.0, 0, sh);
    __shared__ int32_t num_written;
    if (threadIdx.x == 0) num_written = 0;
    __syncthreads();
    for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float x = raw.at(i);
      if (in_cut(order_key(x), i, top)) {
        const int32_t slot = atomicAdd(&num_written, 1);
        top_ids[p.top_offset + slot] = i;
        top_values[p.top_offset + slot] = x;
      }
    }
    __syncthreads();
  }

  // Penalties: each distinct id of prompt and output once, into this draw's scratch row.
  RowView row = raw;
  if (p.penalty_slot >= 0) {
    float* w = work + p.penalty_slot * static_cast<int64_t>(vocab);
    int32_t* counts = penalty_counts + p.penalty_slot * static_cast<int64_t>(vocab);
    for (int32_t i = threadIdx.x; i < vocab; i += kThreads) w[i] = raw.at(i);
    const int64_t num_ids = p.prompt_len + p.output_len;
    auto id_at = [&](int64_t j) {
      return j < p.prompt_len ? ids[p.prompt_offset + j] : ids[p.output_offset + j - p.prompt_len];
    };
    for (int64_t j = threadIdx.x; j < num_ids; j += kThreads) {
      const int32_t id = id_at(j);
      if (id >= 0 && id < vocab) counts[id] = 0;
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < num_ids; j += kThreads) {
      const int32_t id = id_at(j);
      if (id < 0 || id >= vocab) continue;
      if (j < p.prompt_len) {
        atomicOr(&counts[id], kSeenFlag);
      } else {
        atomicAdd(&counts[id], 1);
      }
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < num_ids; j += kThreads) {
      const int32_t id = id_at(j);
      if (id < 0 || id >= vocab) continue;
      const int32_t packed = atomicExch(&counts[id], 0);  // the first claimant of an id applies its penalty
      if (packed != 0) w[id] = penalized(w[id], p, packed);
    }
    __syncthreads();
    row = RowView{w, vocab};
  }

  // The penalized argmax (lowest id on ties): the greedy pick, and the max the weights are measured from.
  unsigned long long best = 0;
  for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
    const unsigned long long packed =
        (static_cast<unsigned long long>(order_key(row.at(i))) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
    best = max(best, packed);
  }
  best = block_max_u64(best);
  const float max_logit = key_to_float(static_cast<uint32_t>(best >> 32));
  int32_t token = static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(best & 0xffffffffu));

  if (!p.is_greedy && max_logit != -INFINITY) {
    const Cut top_k = p.top_k < vocab ? select_cut<false>(row, kAllTokens, static_cast<uint64_t>(p.top_k), 0.0,
                                                          max_logit, p.temperature, p.mass_bits, sh)
                                      : kAllTokens;
    Cut top_p = kAllTokens;
    if (p.has_top_p && p.top_k > 1) {
      top_p = select_cut<true>(row, top_k, 0, p.top_p, max_logit, p.temperature, p.mass_bits, sh);
    }
    double best_key = 0.0;
    int32_t best_id = -1;
    for (int32_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float x = row.at(i);
      const uint32_t k = order_key(x);
      if (!in_cut(k, i, top_k) || !in_cut(k, i, top_p)) continue;
      const double s = scaled_log_weight(x, max_logit, p.temperature);
      if (p.has_min_p && s < p.log_min_p) continue;
      if (best_id >= 0 && s + sampling::kMaxRaceNoise < best_key) continue;  // cannot win: skip the logs
      const double key = __dsub_rn(s, log(-log(race_uniform(p.race_stream, i))));
      if (best_id < 0 || key > best_key) {  // ids ascend within a thread: ties keep the lower
        best_key = key;
        best_id = i;
      }
    }
    const int32_t winner = block_race_winner(best_key, best_id);
    if (winner >= 0) token = winner;
  }
  if (threadIdx.x == 0) {
    RowOut out;
    out.sum_exp = sum;
    out.token_id = token;
    out.chosen_raw = raw.at(token);
    out.raw_max = raw_max;
    out.pad = 0;
    outs[blockIdx.x] = out;
  }
}

size_t align_up(size_t n) {
  return (n + 255) & ~static_cast<size_t>(255);
}

}  // namespace

struct CudaBackend::SampleWorkspace {
  void* device = nullptr;
  size_t device_bytes = 0;
  void* host_in = nullptr;  // pinned: plans and ids going up
  size_t host_in_bytes = 0;
  void* host_out = nullptr;  // pinned: results coming down
  size_t host_out_bytes = 0;
};

void CudaBackend::SampleWorkspaceDeleter::operator()(SampleWorkspace* workspace) const {
  if (workspace->device) cudaFree(workspace->device);
  if (workspace->host_in) cudaFreeHost(workspace->host_in);
  if (workspace->host_out) cudaFreeHost(workspace->host_out);
  delete workspace;
}

namespace {

// Grows a device (is_host false) or pinned host buffer to at least `nbytes` (never shrinks).
Status reserve(void** ptr, size_t* have, size_t nbytes, bool is_host, cudaStream_t stream) {
  if (nbytes <= *have) return Status();
  ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream), "sample (synchronize)");
  if (*ptr != nullptr) is_host ? cudaFreeHost(*ptr) : cudaFree(*ptr);
  *ptr = nullptr;
  *have = 0;
  nbytes = std::max<size_t>(nbytes + nbytes / 4, 1 << 16);
  if (is_host) {
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMallocHost(ptr, nbytes), "cudaMallocHost (sample)");
  } else {
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(ptr, nbytes), "cudaMalloc (sample)");
  }
  *have = nbytes;
  return Status();
}

bool has_penalty(const SamplingRow& row) {
  const SamplingOptions& p = row.options;
  const bool active = p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  return active && (!row.prompt_ids.empty() || !row.output_ids.empty());
}

}  // namespace

Status CudaBackend::sample(const Tensor& logits, std::span<const SamplingRow> rows, std::span<SampleResult> results) {
  OpTimer timer(this, "sample");
  ANVIL_RETURN_IF_ERROR(check_sample_args(logits, rows, results));
  if (logits.device != Device::kCuda) return invalid_argument("sample: logits must be on the GPU");
  if (rows.empty()) return Status();
  const int64_t vocab = logits.size(1);
  if (vocab == 0 || vocab > INT32_MAX) {  // the Sampler's documented result: no token, no logprobs
    for (SampleResult& r : results) r = SampleResult{};
    return Status();
  }
  if (rows.size() > INT32_MAX) return invalid_argument("sample: too many rows");

  // Host plan: per-draw constants, and the id lists of the draws that penalize.
  const size_t num_rows = rows.size();
  std::vector<RowPlan> plans(num_rows);
  int64_t num_ids = 0;
  int64_t num_penalty_rows = 0;
  int64_t num_top_total = 0;
  for (size_t r = 0; r < num_rows; ++r) {
    const SamplingRow& row = rows[r];
    const SamplingOptions& params = row.options;
    const sampling::DrawPlan draw =
        sampling::make_draw_plan(params, vocab, row.seed, static_cast<uint64_t>(row.output_ids.size()));
    RowPlan& p = plans[r];
    std::memset(&p, 0, sizeof(p));
    p.logits_row = row.logits_row;
    p.penalty_slot = -1;
    if (has_penalty(row)) {
      p.penalty_slot = num_penalty_rows++;
      p.prompt_offset = num_ids;
      p.prompt_len = static_cast<int64_t>(row.prompt_ids.size());
      p.output_offset = num_ids + p.prompt_len;
      p.output_len = static_cast<int64_t>(row.output_ids.size());
      num_ids += p.prompt_len + p.output_len;
    }
    p.num_top = static_cast<int32_t>(std::min<int64_t>(std::max(params.logprobs, 0), vocab));
    p.top_offset = num_top_total;
    num_top_total += p.num_top;
    p.temperature = draw.temperature;
    p.top_p = draw.top_p;
    p.log_min_p = draw.log_min_p;
    p.race_stream = draw.race_stream;
    p.top_k = static_cast<int32_t>(draw.top_k);
    p.mass_bits = draw.mass_bits;
    p.is_greedy = draw.is_greedy ? 1 : 0;
    p.has_top_p = draw.has_top_p ? 1 : 0;
    p.has_min_p = draw.has_min_p ? 1 : 0;
    p.repetition = params.repetition_penalty;
    p.presence = params.presence_penalty;
    p.frequency = params.frequency_penalty;
  }

  // Layouts. Device: plans | ids | outs | top ids | top values | work rows | count rows. Host in: plans | ids.
  // Host out: outs | top ids | top values.
  const size_t plans_bytes = align_up(num_rows * sizeof(RowPlan));
  const size_t ids_bytes = align_up(static_cast<size_t>(num_ids) * sizeof(int32_t));
  const size_t outs_bytes = align_up(num_rows * sizeof(RowOut));
  const size_t top_bytes = align_up(static_cast<size_t>(num_top_total) * sizeof(int32_t));
  const size_t rows_bytes = align_up(static_cast<size_t>(num_penalty_rows) * static_cast<size_t>(vocab) * 4);
  const size_t in_bytes = plans_bytes + ids_bytes;
  const size_t out_bytes = outs_bytes + 2 * top_bytes;

  if (!sample_workspace_) {
    ANVIL_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                    static_cast<int>(kSharedBytes)),
                               "sample (shared memory)");
    sample_workspace_.reset(new SampleWorkspace());
  }
  SampleWorkspace& ws = *sample_workspace_;
  ANVIL_RETURN_IF_ERROR(reserve(&ws.device, &ws.device_bytes, in_bytes + out_bytes + 2 * rows_bytes, false, stream_));
  ANVIL_RETURN_IF_ERROR(reserve(&ws.host_in, &ws.host_in_bytes, in_bytes, true, stream_));
  ANVIL_RETURN_IF_ERROR(reserve(&ws.host_out, &ws.host_out_bytes, out_bytes, true, stream_));

  auto* host_in = static_cast<unsigned char*>(ws.host_in);
  std::memcpy(host_in, plans.data(), num_rows * sizeof(RowPlan));
  auto* host_ids = reinterpret_cast<int32_t*>(host_in + plans_bytes);
  for (size_t r = 0; r < num_rows; ++r) {
    if (plans[r].penalty_slot < 0) continue;
    std::copy(rows[r].prompt_ids.begin(), rows[r].prompt_ids.end(), host_ids + plans[r].prompt_offset);
    std::copy(rows[r].output_ids.begin(), rows[r].output_ids.end(), host_ids + plans[r].output_offset);
  }
  auto* dev = static_cast<unsigned char*>(ws.device);
  auto* dev_plans = reinterpret_cast<RowPlan*>(dev);
  auto* dev_ids = reinterpret_cast<int32_t*>(dev + plans_bytes);
  auto* dev_outs = reinterpret_cast<RowOut*>(dev + in_bytes);
  auto* dev_top_ids = reinterpret_cast<int32_t*>(dev + in_bytes + outs_bytes);
  auto* dev_top_values = reinterpret_cast<float*>(dev + in_bytes + outs_bytes + top_bytes);
  auto* dev_work = reinterpret_cast<float*>(dev + in_bytes + out_bytes);
  auto* dev_counts = reinterpret_cast<int32_t*>(dev + in_bytes + out_bytes + rows_bytes);

  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dev, host_in, in_bytes, cudaMemcpyHostToDevice, stream_),
                             "sample (upload)");
  sample_kernel<<<static_cast<unsigned>(num_rows), kThreads, kSharedBytes, stream_>>>(
      logits.ptr<const float>(), static_cast<int32_t>(vocab), dev_plans, dev_ids, dev_work, dev_counts, dev_outs,
      dev_top_ids, dev_top_values);
  ANVIL_RETURN_IF_ERROR(check_launch("sample"));
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws.host_out, dev_outs, out_bytes, cudaMemcpyDeviceToHost, stream_),
                             "sample (download)");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "sample (synchronize)");

  // Logprobs on the host, exactly as the Sampler forms them from (max, log sum).
  const auto* host_out = static_cast<const unsigned char*>(ws.host_out);
  const auto* outs = reinterpret_cast<const RowOut*>(host_out);
  const auto* top_ids = reinterpret_cast<const int32_t*>(host_out + outs_bytes);
  const auto* top_values = reinterpret_cast<const float*>(host_out + outs_bytes + top_bytes);
  for (size_t r = 0; r < num_rows; ++r) {
    const RowOut& o = outs[r];
    const double log_sum = std::log(o.sum_exp);
    SampleResult& result = results[r];
    result.token_id = o.token_id;
    result.logprob = sampling::raw_logprob(o.chosen_raw, o.raw_max, log_sum);
    const int64_t begin = plans[r].top_offset;
    std::vector<std::pair<float, int32_t>> top;
    top.reserve(static_cast<size_t>(plans[r].num_top));
    for (int64_t i = begin; i < begin + plans[r].num_top; ++i) top.push_back({top_values[i], top_ids[i]});
    std::sort(top.begin(), top.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    result.top_logprobs.clear();
    result.top_logprobs.reserve(top.size());
    for (const auto& [value, id] : top)
      result.top_logprobs.push_back({id, sampling::raw_logprob(value, o.raw_max, log_sum)});
  }
  return Status();
}

}  // namespace anvil::cuda
