// The quantization pass over a checkpoint's linear weights (build/quantize_checkpoint.h).
#include "build/quantize_checkpoint.h"

#include <new>
#include <vector>

#include "build/activation_aware.h"
#include "build/calibration.h"
#include "core/logging.h"

namespace anvil {

namespace {

struct Target {
  DType dtype;
  ActivationQuant activations;
};

Expected<Target> target_of(QuantScheme scheme) {
  switch (scheme) {
    case QuantScheme::kFp8:
      return Target{DType::kFP8E4M3, ActivationQuant::kPerTokenDynamic};
    case QuantScheme::kInt8WeightOnly:
      return Target{DType::kInt8, ActivationQuant::kNone};
    case QuantScheme::kInt4Rtn:
      return Target{DType::kInt4, ActivationQuant::kNone};
    default:
      return unsupported(
          "quantization '" + std::string(quant_scheme_name(scheme)) + "' " +
          (scheme == QuantScheme::kInt4Gptq
               ? "is not a quantizer: a GPTQ checkpoint is imported as it is (load it without --quantization)"
               : "cannot be applied at load: it needs calibration text (anvil build --calibration)"));
  }
}

}  // namespace

Expected<QuantizeReport> quantize_checkpoint(const QuantizeOptions& options, Checkpoint* ckpt) {
  QuantizeReport report;
  if (options.scheme == QuantScheme::kNone) return report;
  if (options.scheme == QuantScheme::kInt4Awq || options.scheme == QuantScheme::kSmoothQuant) {
    if (options.calibration_ids.empty()) {
      return invalid_argument("quantization '" + std::string(quant_scheme_name(options.scheme)) +
                              "' needs calibration text: anvil build --calibration FILE");
    }
    for (const WeightSpec& spec : model_weight_specs(ckpt->config)) {
      const Tensor* w = ckpt->weights.find(spec.name);
      if (spec.role == WeightRole::kLinear && w != nullptr && is_scaled_weight(w->dtype)) {
        return invalid_argument("quantize: " + spec.name + " is already " + std::string(dtype_name(w->dtype)));
      }
    }
    ANVIL_ASSIGN_OR_RETURN(const auto stats,
                           collect_input_stats(*ckpt, options.calibration_ids, options.calibration_sample_rows));
    return quantize_activation_aware(options.scheme, stats, ckpt);
  }
  ANVIL_ASSIGN_OR_RETURN(const Target target, target_of(options.scheme));
  const std::vector<WeightSpec> specs = model_weight_specs(ckpt->config);
  std::vector<float> rows;
  for (const WeightSpec& spec : specs) {
    if (spec.role != WeightRole::kLinear) continue;
    const Tensor* w = ckpt->weights.find(spec.name);
    if (w == nullptr) return internal_error("quantize: the checkpoint has no tensor " + spec.name);
    if (is_scaled_weight(w->dtype)) {
      return invalid_argument("quantize: " + spec.name + " is already " + std::string(dtype_name(w->dtype)) +
                              " (an engine or a quantized checkpoint); drop --quantization to run it as it is");
    }
    if (w->ndim != 2) return internal_error("quantize: linear weight " + spec.name + " is not a matrix");
    const int64_t out_features = w->shape[0];
    const int64_t cols = w->shape[1];
    try {
      rows.resize(static_cast<size_t>(out_features * cols));
    } catch (const std::bad_alloc&) {
      return resource_exhausted("quantize: no host memory to widen " + spec.name + " to fp32");
    }
    ANVIL_RETURN_IF_ERROR(weight_to_f32(*w, rows.data()));
    int32_t group_size = 0;
    if (target.dtype == DType::kInt4) {
      group_size = int4_group_size(cols);
      if (group_size != 128) {
        report.notes.push_back(spec.name + ": " + std::to_string(cols) + " columns, int4 group size " +
                               std::to_string(group_size) + (group_size == 0 ? " (one group per row)" : ""));
      }
      if (cols % 2 != 0)
        return unsupported("quantize: int4 needs an even width; " + spec.name + " has " + std::to_string(cols));
    }
    ANVIL_ASSIGN_OR_RETURN(QuantizedWeight q,
                           quantize_rtn(rows.data(), out_features, cols, target.dtype, group_size, target.activations));
    report.bytes_before += w->nbytes();
    report.bytes_after += q.storage.nbytes();
    ++report.num_quantized;
    ckpt->weights.add_view(spec.name, q.tensor);
    ckpt->weights.keep_buffer(std::move(q.storage));
  }
  if (report.num_quantized == 0) {
    return unsupported("quantize: the " + ckpt->config.architecture +
                       " family marks no linear weights, so it cannot be quantized yet");
  }
  ANVIL_LOG_INFO("quantized {} linear weights to {}: {:.1f} MiB -> {:.1f} MiB", report.num_quantized,
                 quant_scheme_name(options.scheme), report.bytes_before / 1048576.0, report.bytes_after / 1048576.0);
  for (const std::string& note : report.notes) ANVIL_LOG_DEBUG("{}", note);
  return report;
}

}  // namespace anvil
