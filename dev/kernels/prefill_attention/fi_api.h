// The lab's plain interface to FlashInfer's kernels (fi_sm90.cu, fi_decode.cu), so that the CUTLASS/CuTe-heavy
// translation units compile once and the harness (prefill_attention.cu) stays quick to rebuild.
// Shapes (bf16 only, head_dim 128, any q/kv head ratio the kernels take; the lab uses 32/8):
//   q, o: [num_tokens, num_heads, 128]; paged k, v: [num_blocks, block_size, num_kv_heads, 128] (our cache layout);
//   ragged k, v: [num_kv_tokens, num_kv_heads, 128].
// Index arrays are int32. *_h are host copies the plans read; *_d live on the device.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace lab::fi {

// Workspaces every plan shares (FlashInfer's plan/run split: the plan writes its work lists here).
struct Workspace {
  void* float_buf = nullptr;  // device
  size_t float_bytes = 0;
  void* int_buf = nullptr;   // device
  void* int_host = nullptr;  // page-locked host mirror of int_buf
  size_t int_bytes = 0;
};

// Everything one paged (or ragged) batch needs; the plan fills `plan` (opaque offsets into the workspace).
struct PrefillBatch {
  int num_seqs = 0, num_tokens = 0, num_heads = 0, num_kv_heads = 0, block_size = 0;
  const int32_t* qo_indptr_h = nullptr;   // [num_seqs + 1] query rows
  const int32_t* kv_len_h = nullptr;      // [num_seqs] keys per sequence (cached prefix + new)
  const int32_t* kv_indptr_h = nullptr;   // [num_seqs + 1] pages (paged) or key rows (ragged)
  const int32_t* kv_indices_d = nullptr;  // [kv_indptr_h[num_seqs]] page ids (paged only)
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float scale = 0.0f;
  int64_t plan[16] = {};
  int64_t kv_rows = 0;  // ragged: rows of k/v
};

// FA3-class (wgmma, warp-specialized) causal prefill. Returns "" or an error message.
std::string sm90_paged_plan(const Workspace& ws, PrefillBatch& b, cudaStream_t stream);
std::string sm90_paged_run(const Workspace& ws, const PrefillBatch& b, cudaStream_t stream);
std::string sm90_ragged_plan(const Workspace& ws, PrefillBatch& b, cudaStream_t stream);
std::string sm90_ragged_run(const Workspace& ws, const PrefillBatch& b, cudaStream_t stream);

struct DecodeBatch {
  int num_seqs = 0, num_heads = 0, num_kv_heads = 0, block_size = 0;
  const int32_t* kv_indptr_h = nullptr;      // [num_seqs + 1] pages
  const int32_t* kv_indptr_d = nullptr;      // same, on the device
  const int32_t* kv_indices_d = nullptr;     // page ids
  const int32_t* last_page_len_d = nullptr;  // [num_seqs] keys in each sequence's last page (1..block_size)
  const void* q = nullptr;                   // [num_seqs, num_heads, 128]
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;  // [num_seqs, num_heads, 128]
  float scale = 0.0f;
  int64_t plan[16] = {};
};

// FlashInfer's batch decode (CUDA cores, split-k planned on the host), group size 4 only.
std::string decode_plan(const Workspace& ws, DecodeBatch& b, cudaStream_t stream);
std::string decode_run(const Workspace& ws, const DecodeBatch& b, cudaStream_t stream);

}  // namespace lab::fi
