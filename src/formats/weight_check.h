// A fast pass over loaded weights for NaN and Inf: llama2.c files carry no checksum, so damaged weights would
// otherwise load and print garbage. Float tensors are scanned element by element (by exponent bits, in
// parallel); block-quantized tensors by their fp16 scales, the only fields of a block that can hold NaN/Inf.
#pragma once

#include "anvil/status.h"
#include "formats/checkpoint.h"

namespace anvil {

// OK when every tensor of `weights` is finite; otherwise data_loss naming the first bad tensor (by name), the
// element or block index, what was found and the file (weights.source()).
Status check_weights_finite(const WeightStore& weights);

// The same for one tensor; `name` is used in the message.
Status check_tensor_finite(const std::string& name, const Tensor& tensor, const std::string& source);

}  // namespace anvil
