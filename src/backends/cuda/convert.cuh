// Element-type conversion on the device (weight upload, tests).
#pragma once

#include <cuda_runtime.h>

#include "anvil/status.h"
#include "core/dtype.h"

namespace anvil::cuda {

// dst[i] = (dst_dtype) src[i] for i < n; both f32/f16/bf16.
Status convert_on_device(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream);

}  // namespace anvil::cuda
