// Plain interface to FlashInfer's Hopper (FA3-class: wgmma, warp-specialized producer/consumer) causal prefill over
// our paged KV cache, instantiated in sm90_prefill.cu (its own target: sm_90a only, C++17, FlashInfer's headers from
// the flashinfer-python wheel). No anvil or FlashInfer types cross this header, so either side compiles alone.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace anvil::cuda::flashinfer_sm90 {

// The plan's work lists live in int_buf (device); the plan writes them to int_host (page-locked, same size) and
// copies them over on the stream.
struct Workspace {
  void* int_buf = nullptr;
  void* int_host = nullptr;
  size_t int_bytes = 0;
};

// One step's batch, bf16, head_dim 128. q, o: [num_tokens, num_heads, 128]; k, v: [num_blocks, block_size,
// num_kv_heads, 128]; block_tables_d: [num_seqs, max_blocks] on the device; query_start_h [num_seqs + 1] and
// context_lens_h [num_seqs] on the host (the same values the device copies hold).
struct Batch {
  int num_seqs = 0, num_tokens = 0, num_heads = 0, num_kv_heads = 0, block_size = 0, max_blocks = 0;
  const int32_t* query_start_h = nullptr;
  const int32_t* context_lens_h = nullptr;
  const int32_t* block_tables_d = nullptr;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float scale = 0.0f;
};

// Opaque result of plan(): offsets of the work lists in Workspace::int_buf.
struct Plan {
  int64_t words[12] = {};
};

// Bytes of Workspace::int_buf (and int_host) a batch of up to num_tokens rows and num_seqs sequences needs.
size_t workspace_bytes(int num_tokens, int num_seqs, int num_heads, int num_sms);

// Host work (one pass over the sequences and query tiles) plus one host-to-device copy on `stream`. Returns "" or
// an error message. The caller must not rewrite int_host until that copy has run.
std::string plan(const Workspace& ws, const Batch& b, Plan* out, cudaStream_t stream);
// Launches the kernel with a plan made for this batch's sequence lengths. Returns "" or an error message.
std::string run(const Workspace& ws, const Batch& b, const Plan& p, cudaStream_t stream);

}  // namespace anvil::cuda::flashinfer_sm90
