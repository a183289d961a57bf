// Shared CUDA helpers: error checking that turns CUDA failures into Status values naming the op, and the
// element-type traits (fp16/bf16 <-> float) every kernel uses. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>
#include <utility>

#include "anvil/status.h"
#include "core/tensor.h"

namespace anvil::cuda {

inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status();
  return internal_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

// Checks a launch: the launch error itself (bad configuration) without synchronizing.
inline Status check_launch(const char* op) { return cuda_status(cudaGetLastError(), op); }

#define ANVIL_CUDA_RETURN_IF_ERROR(expr, what) ANVIL_RETURN_IF_ERROR(::anvil::cuda::cuda_status((expr), (what)))

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// ---- programmatic dependent launch (Hopper) ----
// A kernel launched by launch_kernel() may start while the kernel before it on the stream drains: its CTAs are
// scheduled once every CTA of the previous kernel has called pdl_trigger() (or exited). Such a kernel must call
// pdl_wait() in every CTA, on every path, before it reads anything an earlier kernel wrote or writes anything an
// earlier kernel reads; pdl_wait() returns once the previous kernel has completed and its writes are visible (and
// that kernel waited for its own predecessor, so the chain is ordered). Work that touches only memory no
// kernel of the step writes (weights) may run before it. Both are no-ops when the kernel was launched without the
// attribute, and on devices before sm_90.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether launch_kernel() asks for programmatic dependent launch: only with ANVIL_PDL=1 in the environment, until
// it is measured faster on its own (bench/results/2026-12-03_h200_decode_fusion.md). Read once; immutable after.
inline bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("ANVIL_PDL");
    return v != nullptr && std::string(v) == "1";
  }();
  return enabled;
}

// Launches `kernel` on `stream` like <<<grid, block, smem, stream>>>, with programmatic stream serialization
// (see pdl_wait) when pdl_enabled(). Works inside CUDA graph capture (the edge becomes a programmatic one).
template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = pdl_enabled() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

inline int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

// Keys per key split of one sequence: its own context divided evenly over `num_splits`, rounded up to a multiple
// of `granularity` (the whole context when there is one split). The grid depends only on the split count, so a
// CUDA graph captured for a decode bucket replays correctly for any context lengths.
__device__ __forceinline__ int keys_per_split(int context, int num_splits, int granularity) {
  if (num_splits == 1) return context;
  return ((context + num_splits - 1) / num_splits + granularity - 1) / granularity * granularity;
}

// Calls `fn` with a null pointer of the element type matching `dtype` (fp32, fp16, bf16):
// dispatch_float(t.dtype, [&](auto* tag) { using T = std::remove_pointer_t<decltype(tag)>; ... }).
template <typename Fn>
Status dispatch_float(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32: return fn(static_cast<float*>(nullptr));
    case DType::kF16: return fn(static_cast<__half*>(nullptr));
    case DType::kBF16: return fn(static_cast<__nv_bfloat16*>(nullptr));
    default: return unsupported("cuda: dtype " + std::string(dtype_name(dtype)) + " is not supported here");
  }
}

}  // namespace anvil::cuda
