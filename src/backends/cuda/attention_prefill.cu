// Tensor-core paged attention for prefill, chunked prefill and prefix reuse (FlashAttention-2 style).
//
// Design
// - CTA = 8 warps = 128 query rows; each warp owns 16 rows. A row is a (token, query head) pair: the query
//   heads of one kv-head group are packed into the same CTA (group 4 -> 32 tokens x 4 heads), so a K/V tile
//   is read once per group and a short query run still fills the rows.
// - Key/value tiles of 64 keys are gathered through the block table (any block size; a tile may straddle
//   blocks) with 16-byte cp.async into double-buffered shared memory: tile j+1 loads while tile j computes.
//   Keys past the visible range are zero-filled by cp.async, never left as stale shared memory.
// - S = Q K^T and O += P V run on mma.sync m16n8k16 (fp16/bf16 in, fp32 accumulate). Q fragments live in
//   registers for the whole CTA; K fragments come from ldmatrix, V fragments from ldmatrix.trans. The S
//   accumulator is rescaled, exponentiated and packed to 16-bit in registers and used directly as the A
//   fragment of P V (the C layout of m16n8k16 equals its A layout). O, the row max and the row sum stay in
//   registers; the softmax is fp32 with base-2 exponentials (ex2.approx), the scale folded into log2 units.
// - Shared layout: rows of head_dim 16-bit values, no padding; 16-byte chunk c of row r is stored at chunk
//   c ^ (r & 7), so the 8 rows of every ldmatrix phase hit 8 different bank groups. Q 32 KB + K/V 2 x 2 x
//   16 KB = 96 KB per CTA at head_dim 128 (48 KB at 64): fits sm_80 as well as sm_90; one CTA per SM.
// - Causal: the mask is applied only on tiles that reach past a warp's first query position; tiles past the
//   last query are never loaded. CTAs are issued longest query tile first.
// - Sliding window: a CTA starts at the window of its first query and masks, per row, the keys before its own
//   window on the tiles that reach below it. Soft-capping caps each scaled score (tanh) before the softmax.
//   Key splits are still planned over the whole context (splits before the window exit at once).
// - Split over keys (flash-decoding) when the grid would leave SMs idle (few query tiles over a long cached
//   prefix): each split writes unnormalized O plus (max, sum) per row to fp32 scratch and a second kernel
//   merges them. Measured on an H200 (bf16, llama3-8b shapes): 2048-token prompt 166 us per layer (~207
//   TFLOP/s; the WMMA kernel before: 1,010 us); 16 new tokens after 2,000 cached 16 us (before: 307 us).
#include <algorithm>
#include <climits>
#include <cstdint>

#include "backends/cuda/attention_prefill.cuh"
#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/kv_quant.cuh"

namespace anvil::cuda {
namespace {

// NOTE: 8 warps (128 rows) beat 4 warps (64 rows, two CTAs per SM) by 17% on an H200 (llama3-8b 2048-token
// prompt, 201 -> 172 us): a K/V tile in shared memory serves twice the rows. ~235 registers per thread leave
// room for one CTA per SM.
constexpr int kWarps = 8;
constexpr int kCtasPerSm = 1;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 16 * kWarps;  // query rows (token x head pairs) per CTA
constexpr int kKeys = 64;           // keys per K/V tile
// NOTE: a key split keeps at least two tiles so its cp.async pipeline still overlaps something.
constexpr int kMinSplitKeys = 2 * kKeys;
constexpr float kLog2e = 1.4426950408889634f;

template <int HD>
constexpr size_t smem_bytes() {
  return static_cast<size_t>(kRows + 4 * kKeys) * HD * 2;  // Q, then K and V, two buffers each
}

struct PrefillParams {
  const void* q;                // [num_tokens, num_heads, HD]
  const void* k_cache;          // [num_blocks, block_size, num_kv_heads, HD]
  const void* v_cache;          // [num_blocks, block_size, num_kv_heads, HD]
  const int32_t* query_start;   // [num_seqs + 1]
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* block_tables;  // [num_seqs, max_blocks]
  void* out;                    // [num_tokens, num_heads * HD] (one split)
  float* part_acc;              // [num_splits, num_tokens, num_heads, HD] unnormalized O (several splits)
  float* part_ml;               // [num_splits, num_tokens, num_heads, 2] row max (log2 units), row sum
  int num_seqs, max_blocks, num_heads, num_kv_heads, block_size, num_tokens;
  int heads_per_cta;    // query heads of one kv group packed into a CTA's rows
  int tokens_per_cta;   // kRows / heads_per_cta
  int num_head_slices;  // num_heads / heads_per_cta
  int num_q_tiles, num_splits, split_len;
  float scale_log2;  // softmax scale * log2(e)
  int window;        // AttentionMetadata::sliding_window (-1: none)
  float softcap;     // AttentionMetadata::logit_softcap (0: none)
  float scale;       // softmax scale (for soft-capping)
  const float* k_scale = nullptr;  // [num_blocks, block_size, num_kv_heads] of an fp8/int8 cache (else null)
  const float* v_scale = nullptr;
};

// ---- PTX wrappers ----------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared; when !valid the destination is zero-filled and nothing is read.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a * b for one m16n8k16 tile; a: 4 regs (16x16 row-major), b: 2 regs (16x8 col-major), d: fp32.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as one register of 16-bit values, `lo` in the low half (the element with the lower index).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Element offset of 16-byte chunk `chunk` of row `row` in a swizzled [rows][HD] tile.
template <int HD>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * HD + ((chunk ^ (row & 7)) << 3);
}

// 2^x on the SFU. NOTE: exp2f adds denormal handling around the same instruction; this is 3% faster end to
// end (H200, 2048-token prompt) and a probability below 2^-126 is 0 either way after the 16-bit P.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// ---- the attention kernel --------------------------------------------------------------------------------

// Grid: x = (query tile, longest first) x sequence x head slice, head slice fastest; y = key split.
// C: the cache element, T or KvFp8 / KvInt8 (kv_quant.cuh): codes are dequantized to T as they are staged, with
// synchronous loads instead of cp.async (the double buffering is the same).
template <typename T, int HD, typename C = T>
__global__ void __launch_bounds__(kThreads, kCtasPerSm) prefill_attention_kernel(const PrefillParams a) {
  constexpr int kChunks = HD / 8;  // 16-byte chunks per row
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);  // [kRows][HD], later the output staging tile
  T* k_s = q_s + kRows * HD;                // [2][kKeys][HD]
  T* v_s = k_s + 2 * kKeys * HD;            // [2][kKeys][HD]

  const int slice = blockIdx.x % a.num_head_slices;
  const int rest = blockIdx.x / a.num_head_slices;
  const int seq = rest % a.num_seqs;
  const int tile = a.num_q_tiles - 1 - rest / a.num_seqs;
  const int split = blockIdx.y;

  const int q_begin = a.query_start[seq];
  const int num_query = a.query_start[seq + 1] - q_begin;
  const int t0 = tile * a.tokens_per_cta;
  if (t0 >= num_query) return;
  const int hpc = a.heads_per_cta;
  const int tile_tokens = min(a.tokens_per_cta, num_query - t0);
  const int valid_rows = tile_tokens * hpc;
  const int first_pos = a.context_lens[seq] - num_query + t0;  // absolute position of the tile's first token
  // With a window, start at the tile holding the first query's first visible key. NOTE: rounded down to whole
  // tiles, so that tiles stay aligned with the split ends and a tile never reaches into the next split's keys
  // (those are zero-filled and would count as visible zero scores); the window mask hides the rest.
  const int split_begin = split * a.split_len;
  const int window_begin = a.window > 0 ? max(0, first_pos - a.window + 1) / kKeys * kKeys : 0;
  const int key_begin = max(split_begin, window_begin);
  const int key_end = min(split_begin + a.split_len, first_pos + tile_tokens);  // split_len is a multiple of kKeys
  const int head0 = slice * hpc;
  const int kv_head = head0 / (a.num_heads / a.num_kv_heads);
  // Row r of the CTA is token t0 + r / hpc, head head0 + r % hpc; its element offset in q and out:
  const int64_t base_row = static_cast<int64_t>(q_begin + t0) * a.num_heads + head0;
  auto row_index = [&](int r) { return base_row + static_cast<int64_t>(r / hpc) * a.num_heads + r % hpc; };

  if (key_begin >= key_end) {  // nothing visible in this split (or malformed metadata): empty rows
    if (a.num_splits > 1) {
      for (int r = threadIdx.x; r < valid_rows; r += kThreads) {
        const int64_t prow = static_cast<int64_t>(split) * a.num_tokens * a.num_heads + row_index(r);
        a.part_ml[prow * 2] = -INFINITY;
        a.part_ml[prow * 2 + 1] = 0.0f;
      }
    } else {
      for (int i = threadIdx.x; i < valid_rows * HD; i += kThreads) {
        static_cast<T*>(a.out)[row_index(i / HD) * HD + i % HD] = from_float<T>(0.0f);
      }
    }
    return;
  }

  const T* q = static_cast<const T*>(a.q);
#pragma unroll
  for (int n = 0; n < kRows * kChunks / kThreads; ++n) {
    const int i = threadIdx.x + n * kThreads;
    const int r = i / kChunks, c = i % kChunks;
    const bool ok = r < valid_rows;
    cp_async_16(smem_u32(q_s + swizzle<HD>(r, c)), ok ? q + row_index(r) * HD + c * 8 : q, ok);
  }
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks;
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int64_t slot_stride = static_cast<int64_t>(a.num_kv_heads) * HD;
  // Each thread copies kLoadIters 16-byte chunks of K and of V per tile, all in one chunk column. Cache slots
  // are looked up one tile ahead, so the block-table reads are in flight while the current tile computes.
  constexpr int kLoadIters = kKeys * kChunks / kThreads;
  static_assert(kThreads % kChunks == 0 && kLoadIters * kThreads == kKeys * kChunks, "fixed chunk column per thread");
  const int load_chunk = threadIdx.x % kChunks;
  const int64_t head_off = static_cast<int64_t>(kv_head) * HD + load_chunk * 8;
  int slots[kLoadIters];  // cache slot of each row this thread copies, -1 past key_end
  auto fetch_slots = [&](int kt) {
#pragma unroll
    for (int n = 0; n < kLoadIters; ++n) {
      const int p = kt + (threadIdx.x + n * kThreads) / kChunks;
      slots[n] = p < key_end ? table[p / a.block_size] * a.block_size + p % a.block_size : -1;
    }
  };
  auto load_kv = [&](int buf) {
    T* kd = k_s + buf * kKeys * HD;
    T* vd = v_s + buf * kKeys * HD;
#pragma unroll
    for (int n = 0; n < kLoadIters; ++n) {
      const int j = (threadIdx.x + n * kThreads) / kChunks;
      const bool ok = slots[n] >= 0;
      const int64_t off = ok ? slots[n] * slot_stride + head_off : 0;
      if constexpr (kIsQuantizedKv<C>) {
        const int64_t row = ok ? static_cast<int64_t>(slots[n]) * a.num_kv_heads + kv_head : 0;
        kv_stage_chunk8<T, C>(kd + swizzle<HD>(j, load_chunk), a.k_cache, a.k_scale, off, row, ok);
        kv_stage_chunk8<T, C>(vd + swizzle<HD>(j, load_chunk), a.v_cache, a.v_scale, off, row, ok);
      } else {
        cp_async_16(smem_u32(kd + swizzle<HD>(j, load_chunk)), kc + off, ok);
        cp_async_16(smem_u32(vd + swizzle<HD>(j, load_chunk)), vc + off, ok);
      }
    }
  };
  const int num_tiles = (key_end - key_begin + kKeys - 1) / kKeys;
  fetch_slots(key_begin);
  load_kv(0);
  cp_async_commit();
  if (num_tiles > 1) fetch_slots(key_begin + kKeys);

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  // This thread's two rows in every accumulator fragment: row_a = lane / 4 of the warp's 16, row_b = row_a + 8.
  const int row_a = warp * 16 + (lane >> 2);
  const int row_b = row_a + 8;
  const int pos_a = first_pos + row_a / hpc;
  const int pos_b = first_pos + row_b / hpc;
  const int warp_first_pos = first_pos + (warp * 16) / hpc;
  const int warp_last_pos = first_pos + (warp * 16 + 15) / hpc;
  const float sl2 = a.scale_log2;

  uint32_t qf[HD / 16][4];                 // A fragments of this warp's 16 query rows
  float o[HD / 8][4] = {};                 // O accumulator: 8-column blocks of the C layout
  float m_a = -INFINITY, m_b = -INFINITY;  // running max of raw scores
  float l_a = 0.0f, l_b = 0.0f;            // running sum (this thread's columns only; reduced at the end)

  for (int it = 0; it < num_tiles; ++it) {
    const int kt = key_begin + it * kKeys;
    cp_async_wait_all();
    __syncthreads();  // tile `it` landed for every thread; every warp is done with the buffer refilled next
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        ldmatrix_x4(qf[kk], smem_u32(q_s + swizzle<HD>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4))));
      }
    }
    if (it + 1 < num_tiles) {
      load_kv((it + 1) & 1);
      if (it + 2 < num_tiles) fetch_slots(kt + 2 * kKeys);
    }
    cp_async_commit();
    const T* kb = k_s + (it & 1) * kKeys * HD;
    const T* vb = v_s + (it & 1) * kKeys * HD;

    // S[16 x 64] = Q K^T. One ldmatrix.x4 gives the B fragments of two 8-key blocks for 16 dims.
    float s[kKeys / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
#pragma unroll
      for (int nb2 = 0; nb2 < kKeys / 16; ++nb2) {
        uint32_t b[4];
        ldmatrix_x4(b,
                    smem_u32(kb + swizzle<HD>(nb2 * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1))));
        mma_16816<T>(s[2 * nb2], qf[kk], b[0], b[1]);
        mma_16816<T>(s[2 * nb2 + 1], qf[kk], b[2], b[3]);
      }
    }

    if (a.softcap > 0.0f) {  // s * scale -> softcap * tanh(s * scale / softcap), kept in units of s
      const float in_scale = a.scale / a.softcap, out_scale = a.softcap / a.scale;
#pragma unroll
      for (int nb = 0; nb < kKeys / 8; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nb][e] = tanhf(s[nb][e] * in_scale) * out_scale;
      }
    }
    // Sliding window: keys before a row's window, only on tiles that start before some row's window.
    if (a.window > 0 && kt <= warp_last_pos - a.window) {
#pragma unroll
      for (int nb = 0; nb < kKeys / 8; ++nb) {
        const int key = kt + nb * 8 + (lane & 3) * 2;
        if (key <= pos_a - a.window) s[nb][0] = -INFINITY;
        if (key + 1 <= pos_a - a.window) s[nb][1] = -INFINITY;
        if (key <= pos_b - a.window) s[nb][2] = -INFINITY;
        if (key + 1 <= pos_b - a.window) s[nb][3] = -INFINITY;
      }
    }
    // Causal mask, only where the tile reaches past this warp's first query position.
    if (kt + kKeys - 1 > warp_first_pos) {
#pragma unroll
      for (int nb = 0; nb < kKeys / 8; ++nb) {
        const int key = kt + nb * 8 + (lane & 3) * 2;
        if (key > pos_a) s[nb][0] = -INFINITY;
        if (key + 1 > pos_a) s[nb][1] = -INFINITY;
        if (key > pos_b) s[nb][2] = -INFINITY;
        if (key + 1 > pos_b) s[nb][3] = -INFINITY;
      }
    }

    // Online softmax; a row's 64 columns are spread over the 4 lanes of a quad.
    float mx_a = m_a, mx_b = m_b;
#pragma unroll
    for (int nb = 0; nb < kKeys / 8; ++nb) {
      mx_a = fmaxf(mx_a, fmaxf(s[nb][0], s[nb][1]));
      mx_b = fmaxf(mx_b, fmaxf(s[nb][2], s[nb][3]));
    }
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
    // A row with nothing visible yet keeps max -inf; subtracting 0 then makes every p and the correction 0.
    const float base_a = mx_a == -INFINITY ? 0.0f : mx_a * sl2;
    const float base_b = mx_b == -INFINITY ? 0.0f : mx_b * sl2;
    const float corr_a = fast_exp2(m_a * sl2 - base_a);
    const float corr_b = fast_exp2(m_b * sl2 - base_b);
    m_a = mx_a;
    m_b = mx_b;
    l_a *= corr_a;
    l_b *= corr_b;
#pragma unroll
    for (int db = 0; db < HD / 8; ++db) {
      o[db][0] *= corr_a;
      o[db][1] *= corr_a;
      o[db][2] *= corr_b;
      o[db][3] *= corr_b;
    }
#pragma unroll
    for (int nb = 0; nb < kKeys / 8; ++nb) {
      s[nb][0] = fast_exp2(fmaf(s[nb][0], sl2, -base_a));
      s[nb][1] = fast_exp2(fmaf(s[nb][1], sl2, -base_a));
      s[nb][2] = fast_exp2(fmaf(s[nb][2], sl2, -base_b));
      s[nb][3] = fast_exp2(fmaf(s[nb][3], sl2, -base_b));
      l_a += s[nb][0] + s[nb][1];
      l_b += s[nb][2] + s[nb][3];
    }

    // O += P V: P's C fragments of key blocks 2kk and 2kk+1 are the A fragment of a 16-key step.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int db2 = 0; db2 < HD / 16; ++db2) {
        uint32_t b[4];
        ldmatrix_x4_trans(
            b, smem_u32(vb + swizzle<HD>(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3), db2 * 2 + (lane >> 4))));
        mma_16816<T>(o[2 * db2], pa, b[0], b[1]);
        mma_16816<T>(o[2 * db2 + 1], pa, b[2], b[3]);
      }
    }
  }

  l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
  l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
  l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
  l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);

  if (a.num_splits == 1) {
    // Normalize, stage this warp's 16 rows in its own rows of q_s, then write 16-byte chunks.
    const float inv_a = l_a > 0.0f ? 1.0f / l_a : 0.0f;
    const float inv_b = l_b > 0.0f ? 1.0f / l_b : 0.0f;
    __syncwarp();
#pragma unroll
    for (int db = 0; db < HD / 8; ++db) {
      *reinterpret_cast<uint32_t*>(q_s + swizzle<HD>(row_a, db) + (lane & 3) * 2) =
          pack2<T>(o[db][0] * inv_a, o[db][1] * inv_a);
      *reinterpret_cast<uint32_t*>(q_s + swizzle<HD>(row_b, db) + (lane & 3) * 2) =
          pack2<T>(o[db][2] * inv_b, o[db][3] * inv_b);
    }
    __syncwarp();
    T* out = static_cast<T*>(a.out);
#pragma unroll
    for (int n = 0; n < 16 * kChunks / 32; ++n) {
      const int i = lane + n * 32;
      const int r = warp * 16 + i / kChunks, c = i % kChunks;
      if (r < valid_rows) {
        *reinterpret_cast<uint4*>(out + row_index(r) * HD + c * 8) =
            *reinterpret_cast<const uint4*>(q_s + swizzle<HD>(r, c));
      }
    }
  } else {
    const int64_t split_rows = static_cast<int64_t>(split) * a.num_tokens * a.num_heads;
    if (row_a < valid_rows) {
      const int64_t prow = split_rows + row_index(row_a);
      float* dst = a.part_acc + prow * HD + (lane & 3) * 2;
#pragma unroll
      for (int db = 0; db < HD / 8; ++db) *reinterpret_cast<float2*>(dst + db * 8) = make_float2(o[db][0], o[db][1]);
      if ((lane & 3) == 0) {
        a.part_ml[prow * 2] = m_a * sl2;
        a.part_ml[prow * 2 + 1] = l_a;
      }
    }
    if (row_b < valid_rows) {
      const int64_t prow = split_rows + row_index(row_b);
      float* dst = a.part_acc + prow * HD + (lane & 3) * 2;
#pragma unroll
      for (int db = 0; db < HD / 8; ++db) *reinterpret_cast<float2*>(dst + db * 8) = make_float2(o[db][2], o[db][3]);
      if ((lane & 3) == 0) {
        a.part_ml[prow * 2] = m_b * sl2;
        a.part_ml[prow * 2 + 1] = l_b;
      }
    }
  }
}

// Merges key splits: out = sum_s acc_s * 2^(m_s - M) / sum_s l_s * 2^(m_s - M). One warp per (token, head).
template <typename T, int HD>
__global__ void __launch_bounds__(128)
    merge_splits_kernel(const float* __restrict__ part_acc, const float* __restrict__ part_ml, T* __restrict__ out,
                        int num_splits, int64_t num_rows) {
  constexpr int kPerLane = HD / 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 4 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= num_rows) return;
  float mx = -INFINITY;
  for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, part_ml[(s * num_rows + row) * 2]);
  float acc[kPerLane] = {};
  float denom = 0.0f;
  for (int s = 0; s < num_splits; ++s) {
    const float m = part_ml[(s * num_rows + row) * 2];
    if (m == -INFINITY) continue;  // split saw no key of this row; its acc was never written
    const float w = exp2f(m - mx);
    denom += w * part_ml[(s * num_rows + row) * 2 + 1];
    const float* src = part_acc + (s * num_rows + row) * HD + lane * kPerLane;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[e] += w * src[e];
  }
  const float inv = denom > 0.0f ? 1.0f / denom : 0.0f;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) out[row * HD + lane * kPerLane + e] = from_float<T>(acc[e] * inv);
}

// ---- host side -------------------------------------------------------------------------------------------

struct Plan {
  int heads_per_cta, tokens_per_cta, num_head_slices, num_q_tiles, num_splits, split_len;
};

// num_sms <= 0 disables the key split.
Plan make_plan(int num_heads, int num_kv_heads, const AttentionMetadata& meta, int num_sms) {
  Plan p{};
  const int group = num_heads / num_kv_heads;
  p.heads_per_cta = group <= kRows ? group : 1;
  p.tokens_per_cta = kRows / p.heads_per_cta;
  p.num_head_slices = num_heads / p.heads_per_cta;
  p.num_q_tiles = ceil_div(std::max(meta.max_query_len, 1), p.tokens_per_cta);
  const int64_t ctas = static_cast<int64_t>(std::max(meta.num_seqs, 1)) * p.num_q_tiles * p.num_head_slices;
  const int max_ctx = std::max(meta.max_context_len, 1);
  p.num_splits = 1;
  // NOTE: split only when the grid leaves SMs idle (a short query run over a long prefix: 16 tokens after
  // 2,000 cached, llama3-8b, is 8 CTAs). The split count minimizes a simple cost: waves of CTAs x key tiles per
  // CTA (+1 tile of fixed cost per CTA, +1 for the merge). On an H200 it takes that case from 80 to 16 us.
  const int64_t slots = static_cast<int64_t>(num_sms) * kCtasPerSm;
  if (num_sms > 0 && ctas < slots) {
    const int max_splits = std::min<int64_t>(ceil_div(max_ctx, kMinSplitKeys), 4 * slots);
    int64_t best_cost = ceil_div(max_ctx, kKeys) + 1;  // one wave, no split
    for (int n = 2; n <= max_splits; ++n) {
      const int64_t waves = ceil_div(ctas * n, slots);
      const int64_t cost = waves * (ceil_div(ceil_div(max_ctx, n), kKeys) + 1) + 1;
      if (cost < best_cost) {
        best_cost = cost;
        p.num_splits = n;
      }
    }
  }
  if (p.num_splits > 1) {
    p.split_len = ceil_div(ceil_div(max_ctx, p.num_splits), kKeys) * kKeys;
    p.num_splits = ceil_div(max_ctx, p.split_len);
  }
  if (p.num_splits <= 1) {
    p.num_splits = 1;
    p.split_len = INT_MAX / 2;  // one split covers every key, whatever max_context_len says
  }
  return p;
}

size_t scratch_bytes_for(const Plan& p, int64_t num_tokens, int num_heads, int head_dim) {
  if (p.num_splits <= 1) return 0;
  return static_cast<size_t>(p.num_splits) * num_tokens * num_heads * (head_dim + 2) * sizeof(float);
}

template <typename T, int HD>
Status launch(PrefillParams& args, const Plan& plan, DType cache_dtype, cudaStream_t stream) {
  static_assert(smem_bytes<HD>() <= 160 * 1024, "the prefill tile must fit an sm_80 SM");
  dim3 grid(args.num_seqs * plan.num_q_tiles * plan.num_head_slices, plan.num_splits);
  if (cache_dtype == DType::kFP8E4M3) {
    prefill_attention_kernel<T, HD, KvFp8><<<grid, kThreads, smem_bytes<HD>(), stream>>>(args);
  } else if (cache_dtype == DType::kInt8) {
    prefill_attention_kernel<T, HD, KvInt8><<<grid, kThreads, smem_bytes<HD>(), stream>>>(args);
  } else {
    prefill_attention_kernel<T, HD><<<grid, kThreads, smem_bytes<HD>(), stream>>>(args);
  }
  ANVIL_RETURN_IF_ERROR(check_launch("prefill_attention"));
  if (plan.num_splits == 1) return Status();
  const int64_t num_rows = static_cast<int64_t>(args.num_tokens) * args.num_heads;
  merge_splits_kernel<T, HD><<<ceil_div(num_rows, 4), 128, 0, stream>>>(
      args.part_acc, args.part_ml, static_cast<T*>(args.out), plan.num_splits, num_rows);
  return check_launch("prefill_attention (merge)");
}

Status run(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale, int num_sms,
           float* scratch, size_t scratch_bytes, const Tensor& out, cudaStream_t stream) {
  const int num_tokens = static_cast<int>(q.size(0));
  const int num_heads = static_cast<int>(q.size(1));
  const int head_dim = static_cast<int>(q.size(2));
  const int num_kv_heads = static_cast<int>(cache.k.size(2));
  if (!prefill_attention_supported(q.dtype, head_dim)) {
    return unsupported("prefill_attention: head_dim " + std::to_string(head_dim) + " in " +
                       std::string(dtype_name(q.dtype)));
  }
  if (num_tokens == 0 || meta.num_seqs == 0) return Status();
  const Plan plan = make_plan(num_heads, num_kv_heads, meta, num_sms);
  const size_t need = scratch_bytes_for(plan, num_tokens, num_heads, head_dim);
  if (need > 0 && (scratch == nullptr || scratch_bytes < need)) {
    return invalid_argument("prefill_attention: needs " + std::to_string(need) + " bytes of scratch, got " +
                            std::to_string(scratch == nullptr ? 0 : scratch_bytes));
  }
  float* part_acc = need > 0 ? scratch : nullptr;
  float* part_ml =
      need > 0 ? scratch + static_cast<size_t>(plan.num_splits) * num_tokens * num_heads * head_dim : nullptr;
  PrefillParams args{q.data,
                     cache.k.data,
                     cache.v.data,
                     meta.query_start.ptr<const int32_t>(),
                     meta.context_lens.ptr<const int32_t>(),
                     meta.block_tables.ptr<const int32_t>(),
                     out.data,
                     part_acc,
                     part_ml,
                     meta.num_seqs,
                     meta.max_blocks_per_seq,
                     num_heads,
                     num_kv_heads,
                     meta.block_size,
                     num_tokens,
                     plan.heads_per_cta,
                     plan.tokens_per_cta,
                     plan.num_head_slices,
                     plan.num_q_tiles,
                     plan.num_splits,
                     plan.split_len,
                     scale * kLog2e,
                     meta.sliding_window,
                     meta.logit_softcap,
                     scale,
                     cache.k_scale.defined() ? cache.k_scale.ptr<const float>() : nullptr,
                     cache.v_scale.defined() ? cache.v_scale.ptr<const float>() : nullptr};
  const DType cd = cache.k.dtype;
  if (q.dtype == DType::kF16) {
    return head_dim == 64 ? launch<__half, 64>(args, plan, cd, stream) : launch<__half, 128>(args, plan, cd, stream);
  }
  return head_dim == 64 ? launch<__nv_bfloat16, 64>(args, plan, cd, stream)
                        : launch<__nv_bfloat16, 128>(args, plan, cd, stream);
}

}  // namespace

bool prefill_attention_supported(DType dtype, int head_dim) {
  return (dtype == DType::kF16 || dtype == DType::kBF16) && (head_dim == 64 || head_dim == 128);
}

Status configure_prefill_attention() {
  const std::pair<const void*, size_t> kernels[] = {
      {reinterpret_cast<const void*>(prefill_attention_kernel<__half, 64>), smem_bytes<64>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__half, 128>), smem_bytes<128>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__nv_bfloat16, 64>), smem_bytes<64>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__nv_bfloat16, 128>), smem_bytes<128>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__half, 64, KvFp8>), smem_bytes<64>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__half, 128, KvFp8>), smem_bytes<128>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__nv_bfloat16, 64, KvFp8>), smem_bytes<64>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__nv_bfloat16, 128, KvFp8>), smem_bytes<128>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__half, 64, KvInt8>), smem_bytes<64>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__half, 128, KvInt8>), smem_bytes<128>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__nv_bfloat16, 64, KvInt8>), smem_bytes<64>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__nv_bfloat16, 128, KvInt8>), smem_bytes<128>()}};
  for (const auto& [fn, bytes] : kernels) {
    ANVIL_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
        "prefill_attention (shared memory limit)");
  }
  return Status();
}

size_t prefill_attention_scratch_bytes(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta,
                                       int num_sms) {
  const Plan plan = make_plan(static_cast<int>(q.size(1)), static_cast<int>(cache.k.size(2)), meta, num_sms);
  return scratch_bytes_for(plan, q.size(0), static_cast<int>(q.size(1)), static_cast<int>(q.size(2)));
}

Status prefill_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                         int num_sms, float* scratch, size_t scratch_bytes, const Tensor& out, cudaStream_t stream) {
  return run(q, cache, meta, scale, num_sms, scratch, scratch_bytes, out, stream);
}

}  // namespace anvil::cuda
