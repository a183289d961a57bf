// Kernel lab: prefill and decode attention over the paged KV cache, llama3-8b attention shape (32 q heads, 8 kv
// heads, head_dim 128, bf16, blocks of 16 tokens). Times, in one process: the engine's own kernels (compiled in
// from src/backends/cuda, so the lab measures exactly what anvil runs), FlashInfer's Hopper prefill (paged and
// ragged) and its batch decode (fi_sm90.cu, fi_decode.cu), and the bf16 GEMM ceiling through cuBLASLt. Every
// kernel is first checked against an fp64 CPU reference on the same random inputs (odd sizes; poisoned outputs).
// Never linked into anvil. Build: build.sh; run: run.sh (see notes.md).
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backends/cuda/attention_decode.cuh"
#include "backends/cuda/attention_prefill.cuh"
#include "fi_api.h"

namespace {

constexpr int kHeads = 32, kKvHeads = 8, kHd = 128, kBlock = 16;
const float kScale = 1.0f / std::sqrt(static_cast<float>(kHd));

#define CK(x)                                                                                               \
  do {                                                                                                      \
    cudaError_t e_ = (x);                                                                                   \
    if (e_ != cudaSuccess) {                                                                                \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #x); \
      std::exit(1);                                                                                         \
    }                                                                                                       \
  } while (0)

void must(const std::string& err, const char* what) {
  if (!err.empty()) {
    std::fprintf(stderr, "%s: %s\n", what, err.c_str());
    std::exit(1);
  }
}
void must(const anvil::Status& s, const char* what) {
  if (!s.ok()) must(s.message(), what);
}

// ---- deterministic random values, the same on host and device ------------------------------------------------

__host__ __device__ inline uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}
// Uniform in [-1, 1), rounded to bf16.
__host__ __device__ inline __nv_bfloat16 rand_bf16(uint64_t seed, uint64_t i) {
  const float u = static_cast<float>(mix(seed * 0x9e3779b97f4a7c15ull + i) >> 8) * (1.0f / 8388608.0f) - 1.0f;
  return __float2bfloat16_rn(u);
}
__global__ void fill_kernel(__nv_bfloat16* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    p[i] = rand_bf16(seed, i);
}
void fill(__nv_bfloat16* p, size_t n, uint64_t seed) {
  fill_kernel<<<2048, 256>>>(p, n, seed);
  CK(cudaGetLastError());
}
float host_val(uint64_t seed, uint64_t i) {
  return __bfloat162float(rand_bf16(seed, i));
}

// Ragged K/V for FlashInfer's ragged kernel: [sum of contexts, kv heads, hd] gathered from the paged pool.
__global__ void gather_kernel(const __nv_bfloat16* pool, const int32_t* slots, __nv_bfloat16* dst, int64_t rows) {
  constexpr int kRowElems = kKvHeads * kHd;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * kRowElems / 8;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / (kRowElems / 8), c = i % (kRowElems / 8);
    reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(pool + slots[r] * int64_t{kRowElems})[c];
  }
}

// ---- a batch over the paged cache ------------------------------------------------------------------------------

struct Seq {
  int query_len, context_len;
};

constexpr uint64_t kSeedQ = 11, kSeedK = 22, kSeedV = 33;

// One batch: q, output buffers, and `num_sets` independent block tables over one pool (rotated while timing so
// that small cases read HBM rather than L2).
struct Batch {
  std::vector<Seq> seqs;
  int num_tokens = 0, max_query = 0, max_context = 0, max_blocks = 0, num_sets = 1;
  int64_t num_blocks = 0;
  std::vector<int32_t> query_start, context_lens;
  std::vector<std::vector<int32_t>> tables;  // [set][seq * max_blocks + j]
  __nv_bfloat16 *q = nullptr, *k = nullptr, *v = nullptr, *out = nullptr;
  int32_t *query_start_d = nullptr, *context_lens_d = nullptr;
  std::vector<int32_t*> tables_d;
  // FlashInfer's CSR form of each table set.
  std::vector<int32_t> kv_indptr_pages, kv_indptr_rows, last_page_len;
  std::vector<int32_t*> kv_indices_d;
  int32_t *kv_indptr_pages_d = nullptr, *last_page_len_d = nullptr;
  __nv_bfloat16 *ragged_k = nullptr, *ragged_v = nullptr;  // set 0 only
  int64_t ragged_rows = 0;

  size_t kv_bytes() const {  // K+V bytes one pass reads
    size_t n = 0;
    for (auto& s : seqs) n += static_cast<size_t>(s.context_len) * kKvHeads * kHd * 2 * 2;
    return n;
  }
  double flops() const {  // 4 * visible (query, key) pairs * hd * heads
    double pairs = 0;
    for (auto& s : seqs)
      for (int i = 0; i < s.query_len; ++i) pairs += s.context_len - s.query_len + i + 1;
    return 4.0 * pairs * kHd * kHeads;
  }
};

Batch make_batch(std::vector<Seq> seqs, bool ragged, uint64_t table_seed, size_t min_pool_bytes = 512u << 20) {
  Batch b;
  b.seqs = std::move(seqs);
  b.query_start.push_back(0);
  int64_t blocks_needed = 0;
  for (auto& s : b.seqs) {
    b.num_tokens += s.query_len;
    b.query_start.push_back(b.num_tokens);
    b.context_lens.push_back(s.context_len);
    b.max_query = std::max(b.max_query, s.query_len);
    b.max_context = std::max(b.max_context, s.context_len);
    b.max_blocks = std::max(b.max_blocks, (s.context_len + kBlock - 1) / kBlock);
    blocks_needed += (s.context_len + kBlock - 1) / kBlock;
  }
  const size_t block_bytes = static_cast<size_t>(kBlock) * kKvHeads * kHd * 2;  // per K (or V)
  b.num_sets = static_cast<int>(std::clamp<int64_t>(min_pool_bytes / (blocks_needed * block_bytes), 1, 8));
  b.num_blocks = std::max<int64_t>(blocks_needed * b.num_sets, static_cast<int64_t>(min_pool_bytes / block_bytes));
  std::mt19937_64 rng(table_seed);
  std::vector<int32_t> perm(b.num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  int64_t next = 0;
  b.kv_indptr_pages.push_back(0);
  b.kv_indptr_rows.push_back(0);
  for (auto& s : b.seqs) {
    const int pages = (s.context_len + kBlock - 1) / kBlock;
    b.kv_indptr_pages.push_back(b.kv_indptr_pages.back() + pages);
    b.kv_indptr_rows.push_back(b.kv_indptr_rows.back() + s.context_len);
    b.last_page_len.push_back(s.context_len - (pages - 1) * kBlock);
  }
  for (int set = 0; set < b.num_sets; ++set) {
    std::vector<int32_t> t(static_cast<size_t>(b.seqs.size()) * b.max_blocks, 0);
    std::vector<int32_t> csr;
    for (size_t si = 0; si < b.seqs.size(); ++si) {
      const int pages = (b.seqs[si].context_len + kBlock - 1) / kBlock;
      for (int j = 0; j < pages; ++j) {
        t[si * b.max_blocks + j] = perm[next++];
        csr.push_back(t[si * b.max_blocks + j]);
      }
    }
    b.tables.push_back(t);
    int32_t* d;
    CK(cudaMalloc(&d, t.size() * 4 + 4));
    CK(cudaMemcpy(d, t.data(), t.size() * 4, cudaMemcpyHostToDevice));
    b.tables_d.push_back(d);
    CK(cudaMalloc(&d, csr.size() * 4 + 4));
    CK(cudaMemcpy(d, csr.data(), csr.size() * 4, cudaMemcpyHostToDevice));
    b.kv_indices_d.push_back(d);
  }
  const size_t pool_elems = static_cast<size_t>(b.num_blocks) * kBlock * kKvHeads * kHd;
  CK(cudaMalloc(&b.k, pool_elems * 2));
  CK(cudaMalloc(&b.v, pool_elems * 2));
  fill(b.k, pool_elems, kSeedK);
  fill(b.v, pool_elems, kSeedV);
  const size_t q_elems = static_cast<size_t>(b.num_tokens) * kHeads * kHd;
  CK(cudaMalloc(&b.q, q_elems * 2));
  CK(cudaMalloc(&b.out, q_elems * 2));
  fill(b.q, q_elems, kSeedQ);
  auto upload = [](const std::vector<int32_t>& h) {
    int32_t* d;
    CK(cudaMalloc(&d, h.size() * 4 + 4));
    CK(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    return d;
  };
  b.query_start_d = upload(b.query_start);
  b.context_lens_d = upload(b.context_lens);
  b.kv_indptr_pages_d = upload(b.kv_indptr_pages);
  b.last_page_len_d = upload(b.last_page_len);
  if (ragged) {
    std::vector<int32_t> slots;
    for (size_t si = 0; si < b.seqs.size(); ++si)
      for (int p = 0; p < b.seqs[si].context_len; ++p)
        slots.push_back(b.tables[0][si * b.max_blocks + p / kBlock] * kBlock + p % kBlock);
    b.ragged_rows = static_cast<int64_t>(slots.size());
    int32_t* slots_d = upload(slots);
    CK(cudaMalloc(&b.ragged_k, slots.size() * kKvHeads * kHd * 2));
    CK(cudaMalloc(&b.ragged_v, slots.size() * kKvHeads * kHd * 2));
    gather_kernel<<<1024, 256>>>(b.k, slots_d, b.ragged_k, b.ragged_rows);
    gather_kernel<<<1024, 256>>>(b.v, slots_d, b.ragged_v, b.ragged_rows);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    CK(cudaFree(slots_d));
  }
  CK(cudaDeviceSynchronize());
  return b;
}

void free_batch(Batch& b) {
  for (void* p : {static_cast<void*>(b.q), static_cast<void*>(b.k), static_cast<void*>(b.v), static_cast<void*>(b.out),
                  static_cast<void*>(b.query_start_d), static_cast<void*>(b.context_lens_d),
                  static_cast<void*>(b.kv_indptr_pages_d), static_cast<void*>(b.last_page_len_d),
                  static_cast<void*>(b.ragged_k), static_cast<void*>(b.ragged_v)})
    if (p) CK(cudaFree(p));
  for (auto* p : b.tables_d) CK(cudaFree(p));
  for (auto* p : b.kv_indices_d) CK(cudaFree(p));
  b = Batch{};
}

// ---- CPU reference (fp64) on chosen (token) rows, all heads, table set 0 ----------------------------------------

struct Check {
  double rel_l2 = 0;       // ||out - ref|| / ||ref|| over the checked rows
  int64_t non_finite = 0;  // anywhere in the output (it is poisoned with NaN before the run)
  int rows = 0;
};

Check check(const Batch& b, const std::vector<int>& tokens) {
  const size_t q_elems = static_cast<size_t>(b.num_tokens) * kHeads * kHd;
  std::vector<__nv_bfloat16> out(q_elems);
  CK(cudaMemcpy(out.data(), b.out, q_elems * 2, cudaMemcpyDeviceToHost));
  Check c;
  for (auto& x : out)
    if (!std::isfinite(__bfloat162float(x))) ++c.non_finite;
  std::vector<double> err(tokens.size(), 0), ref(tokens.size(), 0);
  auto work = [&](size_t ti) {
    const int tok = tokens[ti];
    int si = 0;
    while (b.query_start[si + 1] <= tok) ++si;
    const Seq& s = b.seqs[si];
    const int pos = s.context_len - s.query_len + (tok - b.query_start[si]);
    std::vector<double> p(pos + 1), o(kHd);
    for (int h = 0; h < kHeads; ++h) {
      const int kvh = h / (kHeads / kKvHeads);
      double qv[kHd];
      for (int d = 0; d < kHd; ++d) qv[d] = host_val(kSeedQ, (static_cast<uint64_t>(tok) * kHeads + h) * kHd + d);
      double mx = -1e300;
      for (int j = 0; j <= pos; ++j) {
        const uint64_t slot = static_cast<uint64_t>(b.tables[0][si * b.max_blocks + j / kBlock]) * kBlock + j % kBlock;
        const uint64_t base = (slot * kKvHeads + kvh) * kHd;
        double dot = 0;
        for (int d = 0; d < kHd; ++d) dot += qv[d] * host_val(kSeedK, base + d);
        p[j] = dot * kScale;
        mx = std::max(mx, p[j]);
      }
      double sum = 0;
      for (int j = 0; j <= pos; ++j) sum += (p[j] = std::exp(p[j] - mx));
      std::fill(o.begin(), o.end(), 0.0);
      for (int j = 0; j <= pos; ++j) {
        const uint64_t slot = static_cast<uint64_t>(b.tables[0][si * b.max_blocks + j / kBlock]) * kBlock + j % kBlock;
        const uint64_t base = (slot * kKvHeads + kvh) * kHd;
        for (int d = 0; d < kHd; ++d) o[d] += p[j] * host_val(kSeedV, base + d);
      }
      for (int d = 0; d < kHd; ++d) {
        const double r = o[d] / sum;
        const double g = __bfloat162float(out[(static_cast<size_t>(tok) * kHeads + h) * kHd + d]);
        err[ti] += (g - r) * (g - r);
        ref[ti] += r * r;
      }
    }
  };
  const unsigned nt = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < nt; ++t)
    pool.emplace_back([&, t] {
      for (size_t i = t; i < tokens.size(); i += nt) work(i);
    });
  for (auto& th : pool) th.join();
  double e = 0, r = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    e += err[i];
    r += ref[i];
  }
  c.rel_l2 = std::sqrt(e / r);
  c.rows = static_cast<int>(tokens.size());
  return c;
}

// Rows to check: every row of a small batch, else the first and last rows of each sequence plus random ones.
std::vector<int> rows_to_check(const Batch& b, int max_rows, uint64_t seed) {
  std::vector<int> rows;
  if (b.num_tokens <= max_rows) {
    rows.resize(b.num_tokens);
    std::iota(rows.begin(), rows.end(), 0);
    return rows;
  }
  for (size_t si = 0; si < b.seqs.size() && static_cast<int>(rows.size()) < max_rows / 2; ++si) {
    rows.push_back(b.query_start[si]);
    rows.push_back(b.query_start[si + 1] - 1);
  }
  std::mt19937 rng(static_cast<uint32_t>(seed));
  while (static_cast<int>(rows.size()) < max_rows) rows.push_back(static_cast<int>(rng() % b.num_tokens));
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

// ---- timing ----------------------------------------------------------------------------------------------------

cudaStream_t g_stream = nullptr;  // every launch of the lab goes here (a graph is captured from it)

// Median over 7 graph replays of the mean time of one launch. launch(i) issues the kernel on g_stream for table
// set i % num_sets; a graph of `iters` launches (about 20 ms of work) is captured and replayed, so host-side
// dispatch cost (ours and FlashInfer's) stays out of the figure, as it does in the engine's graphs.
double time_us(const std::function<void(int)>& launch) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) launch(i);
  CK(cudaEventRecord(e0, g_stream));
  launch(0);
  CK(cudaEventRecord(e1, g_stream));
  CK(cudaEventSynchronize(e1));
  float one_ms = 0;
  CK(cudaEventElapsedTime(&one_ms, e0, e1));
  const int iters = std::clamp(static_cast<int>(20.0 / std::max(one_ms, 1e-3f)), 2, 200);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < iters; ++i) launch(i);
  CK(cudaStreamEndCapture(g_stream, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  CK(cudaGraphLaunch(exec, g_stream));
  std::vector<double> samples;
  for (int s = 0; s < 7; ++s) {
    CK(cudaEventRecord(e0, g_stream));
    CK(cudaGraphLaunch(exec, g_stream));
    CK(cudaEventRecord(e1, g_stream));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    samples.push_back(1000.0 * ms / iters);
  }
  CK(cudaGetLastError());
  CK(cudaGraphExecDestroy(exec));
  CK(cudaGraphDestroy(graph));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  std::sort(samples.begin(), samples.end());
  return samples[3];
}

// ---- the kernels ---------------------------------------------------------------------------------------------

struct Ctx {
  int num_sms = 0;
  lab::fi::Workspace ws;
  float* scratch = nullptr;
  size_t scratch_bytes = 0;
};

anvil::AttentionMetadata meta_of(const Batch& b, int set) {
  anvil::AttentionMetadata m;
  m.num_seqs = static_cast<int32_t>(b.seqs.size());
  m.max_blocks_per_seq = b.max_blocks;
  m.block_size = kBlock;
  m.max_query_len = b.max_query;
  m.max_context_len = b.max_context;
  m.query_start = anvil::Tensor::make(b.query_start_d, anvil::DType::kI32, {m.num_seqs + 1}, anvil::Device::kCuda);
  m.context_lens = anvil::Tensor::make(b.context_lens_d, anvil::DType::kI32, {m.num_seqs}, anvil::Device::kCuda);
  m.block_tables =
      anvil::Tensor::make(b.tables_d[set], anvil::DType::kI32, {m.num_seqs, b.max_blocks}, anvil::Device::kCuda);
  return m;
}
anvil::KvCacheView cache_of(const Batch& b) {
  return {anvil::Tensor::make(b.k, anvil::DType::kBF16, {b.num_blocks, kBlock, kKvHeads, kHd}, anvil::Device::kCuda),
          anvil::Tensor::make(b.v, anvil::DType::kBF16, {b.num_blocks, kBlock, kKvHeads, kHd}, anvil::Device::kCuda)};
}

void ours_prefill(Ctx& c, const Batch& b, int set) {
  const auto q = anvil::Tensor::make(b.q, anvil::DType::kBF16, {b.num_tokens, kHeads, kHd}, anvil::Device::kCuda);
  const auto out = anvil::Tensor::make(b.out, anvil::DType::kBF16, {b.num_tokens, kHeads * kHd}, anvil::Device::kCuda);
  const auto meta = meta_of(b, set % b.num_sets);
  const auto cache = cache_of(b);
  const size_t need = anvil::cuda::prefill_attention_scratch_bytes(q, cache, meta, c.num_sms);
  if (need > c.scratch_bytes) must("scratch too small: " + std::to_string(need), "ours_prefill");
  must(anvil::cuda::prefill_attention(q, cache, meta, kScale, c.num_sms, c.scratch, c.scratch_bytes, out, g_stream),
       "ours_prefill");
}

void ours_decode(Ctx& c, const Batch& b, int set) {
  const int n = static_cast<int>(b.seqs.size());
  const auto q = anvil::Tensor::make(b.q, anvil::DType::kBF16, {n, kHeads, kHd}, anvil::Device::kCuda);
  const auto out = anvil::Tensor::make(b.out, anvil::DType::kBF16, {n, kHeads * kHd}, anvil::Device::kCuda);
  const auto meta = meta_of(b, set % b.num_sets);
  const int splits = anvil::cuda::decode_attention_splits(anvil::DType::kBF16, kHd, kHeads / kKvHeads, n, kKvHeads,
                                                          b.max_context, c.num_sms);
  const size_t acc = static_cast<size_t>(splits) * n * kHeads * kHd;
  if ((acc + static_cast<size_t>(splits) * n * kHeads * 2) * 4 > c.scratch_bytes) must("scratch too small", "decode");
  must(anvil::cuda::decode_attention(q, cache_of(b), meta, kScale, splits, c.scratch, c.scratch + acc, out, g_stream),
       "ours_decode");
}

lab::fi::PrefillBatch fi_prefill_batch(const Batch& b, bool ragged, int set) {
  lab::fi::PrefillBatch p;
  p.num_seqs = static_cast<int>(b.seqs.size());
  p.num_tokens = b.num_tokens;
  p.num_heads = kHeads;
  p.num_kv_heads = kKvHeads;
  p.block_size = kBlock;
  p.qo_indptr_h = b.query_start.data();
  p.kv_len_h = b.context_lens.data();
  p.kv_indptr_h = ragged ? b.kv_indptr_rows.data() : b.kv_indptr_pages.data();
  p.kv_indices_d = ragged ? nullptr : b.kv_indices_d[set % b.num_sets];
  p.q = b.q;
  p.k = ragged ? b.ragged_k : b.k;
  p.v = ragged ? b.ragged_v : b.v;
  p.o = b.out;
  p.scale = kScale;
  p.kv_rows = b.ragged_rows;
  return p;
}

lab::fi::DecodeBatch fi_decode_batch(const Batch& b, int set) {
  lab::fi::DecodeBatch d;
  d.num_seqs = static_cast<int>(b.seqs.size());
  d.num_heads = kHeads;
  d.num_kv_heads = kKvHeads;
  d.block_size = kBlock;
  d.kv_indptr_h = b.kv_indptr_pages.data();
  d.kv_indptr_d = b.kv_indptr_pages_d;
  d.kv_indices_d = b.kv_indices_d[set % b.num_sets];
  d.last_page_len_d = b.last_page_len_d;
  d.q = b.q;
  d.k = b.k;
  d.v = b.v;
  d.o = b.out;
  d.scale = kScale;
  return d;
}

void poison(const Batch& b) {
  CK(cudaMemsetAsync(b.out, 0xff, static_cast<size_t>(b.num_tokens) * kHeads * kHd * 2, g_stream));
}

// Runs `run` once on poisoned output and checks it; returns the check.
Check validate(const Batch& b, const std::function<void()>& run, int max_rows, const char* name, const char* what) {
  poison(b);
  run();
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  Check c = check(b, rows_to_check(b, max_rows, 7));
  const bool ok = c.non_finite == 0 && c.rel_l2 < 2e-2;
  std::printf("  check %-10s %-28s rows %5d  rel_l2 %.2e  non-finite %lld  %s\n", name, what, c.rows, c.rel_l2,
              static_cast<long long>(c.non_finite), ok ? "ok" : "FAIL");
  if (!ok) std::exit(2);
  return c;
}

// ---- ceilings ----------------------------------------------------------------------------------------------------

double gemm_tflops() {
  const int n = 8192;
  __nv_bfloat16 *a, *b, *c;
  CK(cudaMalloc(&a, size_t{2} * n * n));
  CK(cudaMalloc(&b, size_t{2} * n * n));
  CK(cudaMalloc(&c, size_t{2} * n * n));
  fill(a, size_t{n} * n, 1);
  fill(b, size_t{n} * n, 2);
  CK(cudaDeviceSynchronize());
  cublasLtHandle_t lt;
  if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) must("cublasLtCreate failed", "gemm");
  cublasLtMatmulDesc_t op;
  cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, n, n, n);
  cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, n, n, n);
  cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, n, n, n);
  size_t ws_bytes = 64u << 20;
  void* ws;
  CK(cudaMalloc(&ws, ws_bytes));
  cublasLtMatmulPreference_t pref;
  cublasLtMatmulPreferenceCreate(&pref);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes));
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &heur, &found);
  if (found == 0) must("no cuBLASLt algorithm", "gemm");
  const float alpha = 1.0f, beta = 0.0f;
  const double us = time_us([&](int) {
    if (cublasLtMatmul(lt, op, &alpha, a, la, b, lb, &beta, c, lc, c, lc, &heur.algo, ws, ws_bytes, g_stream) !=
        CUBLAS_STATUS_SUCCESS)
      must("cublasLtMatmul failed", "gemm");
  });
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(op);
  cublasLtDestroy(lt);
  for (void* p : {static_cast<void*>(a), static_cast<void*>(b), static_cast<void*>(c), ws}) CK(cudaFree(p));
  return 2.0 * n * n * n / (us * 1e-6) / 1e12;
}

double copy_gbs() {
  const size_t bytes = size_t{4} << 30;
  void *a, *b;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  fill(static_cast<__nv_bfloat16*>(a), bytes / 2, 3);
  CK(cudaDeviceSynchronize());
  const double us = time_us([&](int) { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g_stream)); });
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * bytes / (us * 1e-6) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";  // validation only (no timing)
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  Ctx c;
  c.num_sms = prop.multiProcessorCount;
  std::printf("GPU %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  must(anvil::cuda::configure_prefill_attention(), "configure_prefill_attention");
  must(anvil::cuda::configure_decode_attention(), "configure_decode_attention");
  c.ws.float_bytes = size_t{256} << 20;
  c.ws.int_bytes = size_t{64} << 20;
  CK(cudaMalloc(&c.ws.float_buf, c.ws.float_bytes));
  CK(cudaMalloc(&c.ws.int_buf, c.ws.int_bytes));
  CK(cudaMallocHost(&c.ws.int_host, c.ws.int_bytes));
  c.scratch_bytes = size_t{512} << 20;
  CK(cudaMalloc(&c.scratch, c.scratch_bytes));

  // 1. Validation on odd sizes: mixed prefill batch (fresh prompts, chunks over cached prefixes, a single token),
  //    and a decode batch of 7 different contexts.
  std::printf("validation (fp64 CPU reference, outputs poisoned with NaN first)\n");
  {
    Batch b = make_batch({{1, 1}, {77, 77}, {300, 1000}, {129, 2049}, {19, 19}, {513, 513}}, true, 5, 64u << 20);
    validate(
        b, [&] { ours_prefill(c, b, 0); }, 1 << 30, "ours", "prefill mixed (6 seqs)");
    auto pp = fi_prefill_batch(b, false, 0);
    must(lab::fi::sm90_paged_plan(c.ws, pp, g_stream), "sm90_paged_plan");
    validate(
        b, [&] { must(lab::fi::sm90_paged_run(c.ws, pp, g_stream), "sm90_paged_run"); }, 1 << 30, "fi-sm90-pg",
        "prefill mixed (6 seqs)");
    auto pr = fi_prefill_batch(b, true, 0);
    must(lab::fi::sm90_ragged_plan(c.ws, pr, g_stream), "sm90_ragged_plan");
    validate(
        b, [&] { must(lab::fi::sm90_ragged_run(c.ws, pr, g_stream), "sm90_ragged_run"); }, 1 << 30, "fi-sm90-rg",
        "prefill mixed (6 seqs)");
    free_batch(b);
  }
  {
    Batch b = make_batch({{1, 1}, {1, 17}, {1, 128}, {1, 1000}, {1, 2049}, {1, 3001}, {1, 111}}, false, 6, 64u << 20);
    validate(
        b, [&] { ours_decode(c, b, 0); }, 1 << 30, "ours", "decode 7 contexts");
    auto d = fi_decode_batch(b, 0);
    must(lab::fi::decode_plan(c.ws, d, g_stream), "decode_plan");
    validate(
        b, [&] { must(lab::fi::decode_run(c.ws, d, g_stream), "decode_run"); }, 1 << 30, "fi-decode",
        "decode 7 contexts");
    free_batch(b);
  }
  if (quick) return 0;

  // 2. Ceilings measured in this process.
  const double tflops_ceiling = gemm_tflops();
  const double copy_ceiling = copy_gbs();
  std::printf("ceilings: cuBLASLt bf16 GEMM 8192^3 %.0f TFLOP/s; device copy (read+write) %.0f GB/s\n", tflops_ceiling,
              copy_ceiling);

  // 3. Prefill: causal 2k/8k/32k single prompts; 512 new tokens over cached prefixes of 2k and 8k.
  struct PrefillCase {
    const char* name;
    std::vector<Seq> seqs;
  };
  const std::vector<PrefillCase> prefill_cases = {
      {"causal 2048", {{2048, 2048}}},        {"causal 8192", {{8192, 8192}}},
      {"causal 32768", {{32768, 32768}}},     {"chunk 512 over 2048", {{512, 2560}}},
      {"chunk 512 over 8192", {{512, 8704}}},
  };
  std::vector<std::string> table;
  for (const auto& pc : prefill_cases) {
    Batch b = make_batch(pc.seqs, true, 100, 64u << 20);
    std::printf("%s\n", pc.name);
    validate(
        b, [&] { ours_prefill(c, b, 0); }, 48, "ours", pc.name);
    auto pp = fi_prefill_batch(b, false, 0);
    must(lab::fi::sm90_paged_plan(c.ws, pp, g_stream), "sm90_paged_plan");
    validate(
        b, [&] { must(lab::fi::sm90_paged_run(c.ws, pp, g_stream), "run"); }, 48, "fi-sm90-pg", pc.name);
    auto pr = fi_prefill_batch(b, true, 0);
    must(lab::fi::sm90_ragged_plan(c.ws, pr, g_stream), "sm90_ragged_plan");
    validate(
        b, [&] { must(lab::fi::sm90_ragged_run(c.ws, pr, g_stream), "run"); }, 48, "fi-sm90-rg", pc.name);
    const double t_ours = time_us([&](int) { ours_prefill(c, b, 0); });
    const double t_pg = time_us([&](int) { must(lab::fi::sm90_paged_run(c.ws, pp, g_stream), "run"); });
    const double t_rg = time_us([&](int) { must(lab::fi::sm90_ragged_run(c.ws, pr, g_stream), "run"); });
    const double f = b.flops();
    auto tf = [&](double us) { return f / (us * 1e-6) / 1e12; };
    char line[512];
    std::snprintf(line, sizeof line,
                  "| %s | %.1f | %.1f (%.0f, %.0f%%) | %.1f (%.0f, %.0f%%) | %.1f (%.0f, %.0f%%) | %.2fx | %.2fx |",
                  pc.name, f / 1e9, t_ours, tf(t_ours), 100 * tf(t_ours) / tflops_ceiling, t_pg, tf(t_pg),
                  100 * tf(t_pg) / tflops_ceiling, t_rg, tf(t_rg), 100 * tf(t_rg) / tflops_ceiling, t_ours / t_pg,
                  t_ours / t_rg);
    table.push_back(line);
    std::printf("%s\n", line);
    free_batch(b);
  }

  // 4. Decode: batch x context, KV bytes read per second.
  std::vector<std::string> dtable;
  for (int batch : {1, 64, 256}) {
    for (int ctx : {128, 2048, 8192}) {
      Batch b = make_batch(std::vector<Seq>(batch, Seq{1, ctx}), false, 200 + batch + ctx);
      char what[64];
      std::snprintf(what, sizeof what, "decode b%d x %d", batch, ctx);
      std::printf("%s (%d table sets)\n", what, b.num_sets);
      validate(
          b, [&] { ours_decode(c, b, 0); }, 16, "ours", what);
      std::vector<lab::fi::DecodeBatch> ds;
      for (int s = 0; s < b.num_sets; ++s) {
        ds.push_back(fi_decode_batch(b, s));
        // One plan serves every table set: the plan depends only on the page counts.
        if (s == 0)
          must(lab::fi::decode_plan(c.ws, ds[0], g_stream), "decode_plan");
        else
          std::copy(std::begin(ds[0].plan), std::end(ds[0].plan), ds[s].plan);
      }
      validate(
          b, [&] { must(lab::fi::decode_run(c.ws, ds[0], g_stream), "decode_run"); }, 16, "fi-decode", what);
      const double t_ours = time_us([&](int i) { ours_decode(c, b, i); });
      const double t_fi = time_us([&](int i) { must(lab::fi::decode_run(c.ws, ds[i % b.num_sets], g_stream), "run"); });
      const double gb = b.kv_bytes() / 1e9;
      char line[256];
      std::snprintf(line, sizeof line, "| %d | %d | %.1f | %.1f (%.0f GB/s) | %.1f (%.0f GB/s) | %.2fx |", batch, ctx,
                    gb * 1e3, t_ours, gb / (t_ours * 1e-6), t_fi, gb / (t_fi * 1e-6), t_fi / t_ours);
      dtable.push_back(line);
      std::printf("%s\n", line);
      free_batch(b);
    }
  }

  std::printf("\n## Prefill (bf16, 32/8 heads, hd 128, blocks of 16): us (TFLOP/s, %% of the GEMM ceiling)\n");
  std::printf("ceiling: cuBLASLt bf16 8192^3 = %.0f TFLOP/s in this run\n\n", tflops_ceiling);
  std::printf(
      "| case | GFLOP | ours (FA2-style, paged) | FlashInfer sm90 paged | FlashInfer sm90 ragged | "
      "ours / fi paged | ours / fi ragged |\n|---|---:|---:|---:|---:|---:|---:|\n");
  for (auto& l : table) std::printf("%s\n", l.c_str());
  std::printf("\n## Decode: us (K+V bytes read per second); copy ceiling %.0f GB/s (read+write)\n\n", copy_ceiling);
  std::printf(
      "| batch | context | K+V MB | ours | FlashInfer decode | fi / ours time |\n|---:|---:|---:|---:|---:|---:|\n");
  for (auto& l : dtable) std::printf("%s\n", l.c_str());
  return 0;
}
