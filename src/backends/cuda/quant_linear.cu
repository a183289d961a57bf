// Linear on GGUF block-quantized weights (DType kQ4_0 ... kQ6_K, kept in their file layout on the device):
// decode-sized steps (<= 8 tokens, no bias) run quant_gemv, which dequantizes in registers; batched steps (up to
// kQuantGemmMaxTokens) run quant_gemm, which decodes tiles into shared memory for the tensor cores; longer steps,
// and weights with a bias, dequantize the weight into scratch and run the dense cuBLASLt GEMM on it.
#include "backends/cuda/convert.cuh"
#include "backends/cuda/cuda_backend.cuh"
#include "backends/cuda/quant_gemv.cuh"
#include "formats/gguf_quant.h"

namespace anvil::cuda {
namespace {

size_t align16(size_t n) {
  return (n + 15) / 16 * 16;
}

}  // namespace

std::optional<QuantKind> quant_kind_of(DType dtype) {
  if (!is_quantized(dtype)) return std::nullopt;
  return quant_kind_from_ggml(static_cast<uint32_t>(ggml_type_of(dtype)));
}

Status CudaBackend::quant_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) {
  const int64_t num_tokens = x.size(0), rows = weight.size(0), cols = weight.size(1);
  const std::optional<QuantKind> kind = quant_kind_of(weight.dtype);
  if (!kind) return unsupported("cuda linear: no kernel for weights of type " + std::string(dtype_name(weight.dtype)));
  if (x.dtype != dtype_ || x.size(1) != cols || out.size(0) != num_tokens || out.size(1) != rows) {
    return internal_error("quant linear: shapes or dtypes do not match: x " + x.describe() + ", weight " +
                          weight.describe() + ", out " + out.describe());
  }
  if (num_tokens == 0) return Status();
  const size_t elem = dtype_size(dtype_);
  if (num_tokens <= kQuantGemmMaxTokens && !bias.defined()) {
    const bool gemv = num_tokens <= kQuantGemvMaxTokens;
    OpTimer timer(this, [&] {
      return std::string(gemv ? "quant_gemv " : "quant_gemm ") + std::string(dtype_name(weight.dtype)) +
             " T=" + std::to_string(num_tokens) + " " + std::to_string(rows) + "x" + std::to_string(cols);
    });
    // fp32 outputs (the logits) go through a 16-bit staging row, then one conversion.
    const bool staged = out.dtype != dtype_;
    const size_t ws_bytes = align16(gemv ? quant_gemv_workspace_bytes(cols, static_cast<int>(num_tokens))
                                         : quant_gemm_workspace_bytes(rows, cols, static_cast<int>(num_tokens)));
    const size_t stage_bytes = staged ? align16(static_cast<size_t>(num_tokens * rows) * elem) : 0;
    void* buf = nullptr;
    if (ws_bytes + stage_bytes > 0) {
      ANVIL_ASSIGN_OR_RETURN(buf, scratch(ws_bytes + stage_bytes));
    }
    void* dst = staged ? static_cast<char*>(buf) + ws_bytes : out.data;
    ANVIL_RETURN_IF_ERROR(dispatch_float(dtype_, [&](auto* tag) -> Status {
      using T = std::remove_pointer_t<decltype(tag)>;
      if constexpr (std::is_same_v<T, float>) {
        return internal_error("quant linear: fp32 activations");
      } else if (gemv) {
        return quant_gemv<T>(*kind, weight.data, rows, cols, x.ptr<const T>(), static_cast<int>(num_tokens),
                             static_cast<T*>(dst), buf, stream_);
      } else {
        return quant_gemm<T>(*kind, weight.data, rows, cols, x.ptr<const T>(), static_cast<int>(num_tokens),
                             static_cast<T*>(dst), buf, stream_);
      }
    }));
    if (!staged) return Status();
    return convert_on_device(dst, dtype_, out.data, out.dtype, num_tokens * rows, stream_);
  }
  // NOTE: long prefills (and weights with a bias) dequantize the weight per call into scratch (rows x cols 16-bit:
  // 1 GB for a 128K x 4K LM head; one matrix at a time, the scratch reused) and run the dense GEMM, whose rate
  // repays the dequantization at thousands of tokens; steps up to kQuantGemmMaxTokens read the blocks in place.
  void* dense = nullptr;
  {
    OpTimer timer(this, [&] { return "quant_dequantize " + std::to_string(rows) + "x" + std::to_string(cols); });
    ANVIL_ASSIGN_OR_RETURN(dense, scratch(static_cast<size_t>(rows * cols) * elem));
    ANVIL_RETURN_IF_ERROR(dispatch_float(dtype_, [&](auto* tag) -> Status {
      using T = std::remove_pointer_t<decltype(tag)>;
      if constexpr (std::is_same_v<T, float>) {
        return internal_error("quant linear: fp32 activations");
      } else {
        return quant_dequantize<T>(*kind, weight.data, rows, cols, static_cast<T*>(dense), stream_);
      }
    }));
  }
  return linear(x, Tensor::make(dense, dtype_, {rows, cols}, Device::kCuda), bias, out);
}

Status CudaBackend::quant_embedding(const Tensor& ids, const Tensor& table, const Tensor& out) {
  const std::optional<QuantKind> kind = quant_kind_of(table.dtype);
  if (!kind) return unsupported("cuda embedding: no kernel for tables of type " + std::string(dtype_name(table.dtype)));
  // NOTE: the table is decoded once into a 16-bit copy kept beside the quantized one (vocab x hidden x 2 bytes;
  // 56 MB for SmolLM2), allocated at the first (eager, uncaptured) forward; the quantized table still serves a
  // tied LM head.
  auto it = dequantized_tables_.find(table.data);
  if (it == dequantized_tables_.end()) {
    const int64_t rows = table.size(0), cols = table.size(1);
    ANVIL_ASSIGN_OR_RETURN(Buffer dense, allocate(static_cast<size_t>(rows * cols) * dtype_size(dtype_)));
    ANVIL_RETURN_IF_ERROR(dispatch_float(dtype_, [&](auto* tag) -> Status {
      using T = std::remove_pointer_t<decltype(tag)>;
      if constexpr (std::is_same_v<T, float>) {
        return internal_error("quant embedding: fp32 activations");
      } else {
        return quant_dequantize<T>(*kind, table.data, rows, cols, static_cast<T*>(dense.data()), stream_);
      }
    }));
    it = dequantized_tables_.emplace(table.data, std::move(dense)).first;
  }
  return embedding(ids, it->second.view(dtype_, {table.size(0), table.size(1)}), out);
}

}  // namespace anvil::cuda
