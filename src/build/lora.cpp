// Merging a PEFT LoRA adapter into the base weights (build/lora.h).
#include "build/lora.h"

#include <cblas.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "build/quantize.h"
#include "core/logging.h"
#include "formats/safetensors.h"

namespace anvil {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool is_set(const json& config, const char* key) {
  if (!config.contains(key) || config[key].is_null()) return false;
  const json& v = config[key];
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_object() || v.is_array()) return !v.empty();
  if (v.is_string()) return !v.get<std::string>().empty() && v.get<std::string>() != "none";
  return true;
}

}  // namespace

Expected<int64_t> merge_lora(const std::string& adapter_dir, Checkpoint* ckpt) {
  const fs::path dir(adapter_dir);
  const fs::path config_path = dir / "adapter_config.json";
  std::ifstream in(config_path);
  if (!in) return not_found("LoRA adapter " + adapter_dir + " has no adapter_config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const json config = json::parse(ss.str(), nullptr, false);
  const std::string where = "LoRA adapter " + config_path.string();
  if (!config.is_object()) return invalid_file(where + ": not a JSON object");
  if (config.value("peft_type", "") != "LORA") {
    return unsupported(where + ": peft_type '" + config.value("peft_type", "") + "' is not LORA");
  }
  for (const char* key :
       {"use_dora", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "modules_to_save", "layer_replication"}) {
    if (is_set(config, key)) return unsupported(where + ": '" + key + "' is set, which the merge does not support");
  }
  if (config.contains("bias") && config["bias"].is_string() && config["bias"].get<std::string>() != "none") {
    return unsupported(where + ": bias '" + config["bias"].get<std::string>() + "' (trained biases) is not supported");
  }
  if (!config.contains("r") || !config["r"].is_number_integer() || config["r"].get<int>() <= 0 ||
      !config.contains("lora_alpha") || !config["lora_alpha"].is_number()) {
    return invalid_file(where + ": needs a positive integer 'r' and a number 'lora_alpha'");
  }
  const int r = config["r"].get<int>();
  const double alpha = config["lora_alpha"].get<double>();
  const float scale = static_cast<float>(config.value("use_rslora", false) ? alpha / std::sqrt(r) : alpha / r);

  const fs::path weights_path = dir / "adapter_model.safetensors";
  if (!fs::is_regular_file(weights_path))
    return not_found("LoRA adapter " + adapter_dir + " has no adapter_model.safetensors");
  WeightStore adapter;
  ANVIL_RETURN_IF_ERROR(load_safetensors_file(weights_path.string(), &adapter));
  const std::string prefix = "base_model.model.";
  const std::string a_suffix = ".lora_A.weight", b_suffix = ".lora_B.weight";
  int64_t merged = 0;
  for (const auto& [name, a] : adapter.tensors()) {
    const bool is_a = name.size() > a_suffix.size() && name.ends_with(a_suffix);
    const bool is_b = name.size() > b_suffix.size() && name.ends_with(b_suffix);
    if (!is_a && !is_b) return unsupported(where + ": tensor " + name + " is not a lora_A/lora_B weight");
    if (is_b) continue;
    const std::string stem = name.substr(0, name.size() - a_suffix.size());
    const Tensor* b = adapter.find(stem + b_suffix);
    if (b == nullptr) return invalid_file(where + ": " + name + " has no matching " + stem + b_suffix);
    const std::string base_name = (stem.rfind(prefix, 0) == 0 ? stem.substr(prefix.size()) : stem) + ".weight";
    const Tensor* w = ckpt->weights.find(base_name);
    if (w == nullptr)
      return not_found(where + ": " + name + " adapts " + base_name + ", which the model does not have");
    if (!(w->dtype == DType::kF32 || w->dtype == DType::kF16 || w->dtype == DType::kBF16) || w->ndim != 2) {
      return unsupported(where + ": the base weight " + base_name + " is " + w->describe() +
                         "; LoRA merges into float weights only");
    }
    const int64_t out = w->shape[0], cols = w->shape[1];
    if (a.ndim != 2 || b->ndim != 2 || a.shape[0] != r || a.shape[1] != cols || b->shape[0] != out ||
        b->shape[1] != r) {
      return invalid_file(where + ": " + stem + " has A " + a.describe() + " and B " + b->describe() +
                          ", which do not fit " + base_name + " " + w->describe() + " at r " + std::to_string(r));
    }
    std::vector<float> wf(static_cast<size_t>(out * cols)), af(static_cast<size_t>(r * cols)),
        bf(static_cast<size_t>(out * r));
    ANVIL_RETURN_IF_ERROR(weight_to_f32(*w, wf.data()));
    convert_to_f32(a.data, a.dtype, af.data(), af.size());
    convert_to_f32(b->data, b->dtype, bf.data(), bf.size());
    // W [out, cols] += scale * B [out, r] @ A [r, cols]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(out), static_cast<int>(cols), r, scale,
                bf.data(), r, af.data(), static_cast<int>(cols), 1.0f, wf.data(), static_cast<int>(cols));
    Buffer buf = Buffer::host(w->nbytes());
    convert_from_f32(wf.data(), w->dtype, buf.data(), wf.size());
    Tensor t = Tensor::make(buf.data(), w->dtype, {out, cols});
    ckpt->weights.add_view(base_name, t);
    ckpt->weights.keep_buffer(std::move(buf));
    ++merged;
  }
  if (merged == 0) return invalid_file(where + ": the adapter holds no lora_A/lora_B weights");
  ANVIL_LOG_INFO("merged LoRA adapter {} (r {}, scale {:.4g}) into {} weights", adapter_dir, r, scale, merged);
  return merged;
}

}  // namespace anvil
