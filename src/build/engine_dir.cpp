// Writing and reading engine directories (build/engine_dir.h).
#include "build/engine_dir.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/build_info.h"
#include "core/logging.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"

namespace anvil {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kWeightsFile = "rank0.safetensors";
// Files beside a Hugging Face checkpoint that the engine carries along (tokenizer, chat template).
constexpr const char* kSideFiles[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                      "chat_template.jinja", "tokenizer.model"};

const char* st_dtype_of(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kFP8E4M3:
      return "F8_E4M3";
    case DType::kInt8:
      return "I8";
    case DType::kInt4:
      return "U8";
    default:
      return nullptr;
  }
}

const char* activations_name(ActivationQuant a) {
  return a == ActivationQuant::kPerTokenDynamic ? "per_token_dynamic" : "none";
}

Expected<json> read_json_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot open " + path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return invalid_file(path.string() + ": not a JSON object");
  return j;
}

Status write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return resource_exhausted("cannot write " + path.string());
  return Status();
}

std::string rebuild_hint(const std::string& build_command) {
  return build_command.empty() ? "rebuild it with `anvil build`" : "rebuild it with `" + build_command + "`";
}

// Adds the tensors of one weight to `entries` (and its layout note to `meta`).
Status add_weight(const std::string& name, const Tensor& t, std::vector<SafetensorsWriteEntry>* entries,
                  std::map<std::string, std::string>* meta, json* layout) {
  const char* st = st_dtype_of(t.dtype);
  if (st == nullptr) {
    return unsupported("anvil build: weight " + name + " is " + t.describe() +
                       ", which an engine file cannot hold (float, fp8, int8 and int4 weights only)");
  }
  if (!t.is_contiguous()) return internal_error("anvil build: weight " + name + " is not contiguous");
  std::vector<int64_t> shape(t.shape.begin(), t.shape.begin() + t.ndim);
  if (!is_scaled_weight(t.dtype)) {
    entries->push_back({name, st, shape, t.data, t.nbytes()});
    return Status();
  }
  const int64_t rows = t.shape[0];
  const int64_t cols = t.shape[1];
  const int64_t groups = t.scales.num_groups(cols);
  if (t.dtype == DType::kInt4) shape[1] = cols / 2;
  entries->push_back({name, st, shape, t.data, t.nbytes()});
  const size_t scale_bytes = static_cast<size_t>(rows * groups) * sizeof(float);
  entries->push_back({name + ".scale", "F32", {rows, groups}, t.scales.scale, scale_bytes});
  if (t.scales.zero != nullptr) entries->push_back({name + ".zero", "F32", {rows, groups}, t.scales.zero, scale_bytes});
  const json note = {{"dtype", std::string(dtype_name(t.dtype))},
                     {"cols", cols},
                     {"group_size", t.scales.group_size},
                     {"zero", t.scales.zero != nullptr},
                     {"activations", activations_name(t.scales.activations)}};
  (*meta)["anvil.quant." + name] = note.dump();
  (*layout)[name] = note;
  return Status();
}

// Attaches `<name>.scale` (and `.zero`) to each quantized tensor the metadata names, as the contract's views.
Status attach_scales(const std::map<std::string, std::string>& meta, const std::string& file, WeightStore* store) {
  const std::string prefix = "anvil.quant.";
  for (const auto& [key, value] : meta) {
    if (key.rfind(prefix, 0) != 0) continue;
    const std::string name = key.substr(prefix.size());
    const json note = json::parse(value, nullptr, false);
    auto bad = [&](const std::string& what) { return invalid_file(file + ": quantized tensor " + name + " " + what); };
    if (!note.is_object() || !note.contains("dtype") || !note.contains("cols") || !note.contains("group_size")) {
      return bad("has a malformed layout note: " + value);
    }
    const Tensor* data = store->find(name);
    const Tensor* scale = store->find(name + ".scale");
    const Tensor* zero = store->find(name + ".zero");
    if (data == nullptr) return bad("is listed in the metadata but missing");
    if (scale == nullptr) return bad("has no " + name + ".scale tensor");
    const std::string dtype = note["dtype"].get<std::string>();
    const int64_t cols = note["cols"].get<int64_t>();
    const int32_t group_size = note["group_size"].get<int32_t>();
    DType want;
    DType stored;
    if (dtype == "int4") {
      want = DType::kInt4, stored = DType::kU8;
    } else if (dtype == "int8") {
      want = DType::kInt8, stored = DType::kInt8;
    } else if (dtype == "float8_e4m3") {
      want = DType::kFP8E4M3, stored = DType::kFP8E4M3;
    } else {
      return bad("has type " + dtype + ", which this Anvil cannot run");
    }
    const int64_t stored_cols = want == DType::kInt4 ? cols / 2 : cols;
    if (data->dtype != stored || data->ndim != 2 || data->shape[1] != stored_cols) {
      return bad("is stored as " + data->describe() + ", not as its " + dtype + " layout of " + std::to_string(cols) +
                 " columns says");
    }
    const int64_t rows = data->shape[0];
    Tensor t = Tensor::make(data->data, want, {rows, cols});
    t.scales.group_size = group_size;
    const int64_t groups = t.scales.num_groups(cols);
    auto check_side = [&](const Tensor* side, const char* what) -> Status {
      if (side->dtype != DType::kF32 || side->ndim != 2 || side->shape[0] != rows || side->shape[1] != groups) {
        return bad("has " + std::string(what) + " " + side->describe() + ", expected float32[" + std::to_string(rows) +
                   ", " + std::to_string(groups) + "]");
      }
      return Status();
    };
    ANVIL_RETURN_IF_ERROR(check_side(scale, "scales"));
    t.scales.scale = scale->ptr<const float>();
    if (note.value("zero", false)) {
      if (zero == nullptr) return bad("has no " + name + ".zero tensor");
      ANVIL_RETURN_IF_ERROR(check_side(zero, "zeros"));
      t.scales.zero = zero->ptr<const float>();
    }
    t.scales.activations = note.value("activations", "none") == std::string("per_token_dynamic")
                               ? ActivationQuant::kPerTokenDynamic
                               : ActivationQuant::kNone;
    store->add_view(name, t);
    store->erase(name + ".scale");
    store->erase(name + ".zero");
  }
  for (const auto& [name, t] : store->tensors()) {
    if (t.dtype == DType::kU8) return invalid_file(file + ": tensor " + name + " is raw bytes without a layout note");
  }
  return Status();
}

// The Llama family's fused projections, stacked once here so a load maps them instead of copying: q/k/v rows into
// `self_attn.qkv_proj.weight`, gate/up rows into `mlp.gate_up_proj.weight` (the names and row order the family
// reads for Phi-3, and fuses to at load otherwise). Parts of a weight must share dtype, width and scale layout.
struct Fused {
  std::map<std::string, Tensor> tensors;  // every tensor of the file, fused ones in place of their parts
  std::vector<Buffer> storage;
  bool is_fused = false;
};

bool same_layout(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.ndim == 2 && b.ndim == 2 && a.shape[1] == b.shape[1] && a.is_contiguous() &&
         b.is_contiguous() && a.scales.defined() == b.scales.defined() && a.scales.group_size == b.scales.group_size &&
         (a.scales.zero == nullptr) == (b.scales.zero == nullptr) && a.scales.activations == b.scales.activations;
}

// Stacks `parts` along rows (data, then scales and zeros for scaled weights) into a new buffer.
Tensor stack_rows(const std::vector<const Tensor*>& parts, std::vector<Buffer>* storage) {
  const Tensor& first = *parts[0];
  const int64_t cols = first.shape[1];
  int64_t rows = 0;
  size_t data_bytes = 0;
  for (const Tensor* p : parts) rows += p->shape[0], data_bytes += p->nbytes();
  const bool scaled = first.scales.defined();
  const int64_t groups = scaled ? first.scales.num_groups(cols) : 0;
  const size_t data_padded = (data_bytes + 63) / 64 * 64;
  const size_t side_bytes = static_cast<size_t>(rows * groups) * sizeof(float);
  const size_t total = data_padded + side_bytes * (first.scales.zero != nullptr ? 2 : 1);
  storage->push_back(Buffer::host(std::max<size_t>(total, 64)));
  char* base = static_cast<char*>(storage->back().data());
  Tensor out = Tensor::make(base, first.dtype, {rows, cols});
  out.scales = first.scales;
  size_t off = 0, side = 0;
  for (const Tensor* p : parts) {
    std::memcpy(base + off, p->data, p->nbytes());
    off += p->nbytes();
    if (scaled) {
      const size_t n = static_cast<size_t>(p->shape[0] * groups) * sizeof(float);
      std::memcpy(base + data_padded + side, p->scales.scale, n);
      if (p->scales.zero != nullptr) std::memcpy(base + data_padded + side_bytes + side, p->scales.zero, n);
      side += n;
    }
  }
  if (scaled) {
    out.scales.scale = reinterpret_cast<const float*>(base + data_padded);
    if (first.scales.zero != nullptr) out.scales.zero = reinterpret_cast<const float*>(base + data_padded + side_bytes);
  }
  return out;
}

// Fuses every layer's projections when all of them can be (the family reads one layout for the whole model).
Fused fuse_projections(const Checkpoint& ckpt) {
  Fused f;
  f.tensors = ckpt.weights.tensors();
  const ModelConfig& c = ckpt.config;
  if (!ckpt.weights.contains("model.layers.0.self_attn.q_proj.weight") ||
      ckpt.weights.contains("model.layers.0.self_attn.q_norm.weight")) {
    return f;  // not a Llama layout, or QK-norm (Qwen3), whose q/k/v the family keeps apart
  }
  const std::vector<std::pair<std::vector<std::string>, std::string>> groups = {
      {{"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"}, "self_attn.qkv_proj.weight"},
      {{"mlp.gate_proj.weight", "mlp.up_proj.weight"}, "mlp.gate_up_proj.weight"}};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const auto& [names, fused] : groups) {
      const Tensor* first = ckpt.weights.find(p + names[0]);
      for (const std::string& n : names) {
        const Tensor* t = ckpt.weights.find(p + n);
        if (first == nullptr || t == nullptr || !same_layout(*first, *t))
          return Fused{ckpt.weights.tensors(), {}, false};
      }
    }
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const auto& [names, fused] : groups) {
      std::vector<const Tensor*> parts;
      for (const std::string& n : names) parts.push_back(ckpt.weights.find(p + n));
      f.tensors[p + fused] = stack_rows(parts, &f.storage);
      for (const std::string& n : names) f.tensors.erase(p + n);
    }
  }
  f.is_fused = true;
  return f;
}

}  // namespace

bool is_engine_dir(const std::string& path) {
  std::error_code ec;
  const fs::path config = fs::path(path) / "config.json";
  if (!fs::is_directory(path, ec) || !fs::is_regular_file(config, ec)) return false;
  Expected<json> j = read_json_file(config);
  return j.ok() && j->contains("anvil_engine");
}

Expected<std::string> engine_kv_cache_dtype(const std::string& dir) {
  ANVIL_ASSIGN_OR_RETURN(json config, read_json_file(fs::path(dir) / "config.json"));
  const json& build = config["build_config"];
  if (!build.is_object() || !build.contains("kv_cache_dtype")) return std::string("auto");
  if (!build["kv_cache_dtype"].is_string()) {
    return invalid_file("engine " + dir + ": build_config.kv_cache_dtype is not a string");
  }
  return build["kv_cache_dtype"].get<std::string>();
}

Status write_engine(const Checkpoint& ckpt, const std::string& source_path, const BuildOptions& options,
                    const QuantizeReport& report, const std::string& out_dir) {
  if (ckpt.format == "gguf") {
    return unsupported("anvil build: " + source_path +
                       " is a GGUF file; build from a Hugging Face directory or llama2.c file (GGUF files run as "
                       "they are, or with --quantization at load)");
  }
  std::error_code ec;
  const fs::path out = fs::absolute(out_dir, ec);
  if (fs::exists(out, ec) && !is_engine_dir(out.string()) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec))) {
    return invalid_argument("anvil build: " + out_dir +
                            " exists and is not an Anvil engine directory; choose another -o or remove it");
  }
  const fs::path tmp = out.parent_path() / (out.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec))
    return invalid_argument("anvil build: cannot create " + tmp.string() + ": " + ec.message());
  Status s = [&]() -> Status {
    std::vector<SafetensorsWriteEntry> entries;
    std::map<std::string, std::string> meta;
    json layout = json::object();
    const Fused fused = fuse_projections(ckpt);
    for (const auto& [name, t] : fused.tensors) ANVIL_RETURN_IF_ERROR(add_weight(name, t, &entries, &meta, &layout));
    meta["format"] = "pt";
    meta["anvil.engine_format_version"] = std::to_string(kEngineFormatVersion);
    ANVIL_RETURN_IF_ERROR(write_safetensors((tmp / kWeightsFile).string(), entries, meta));
    std::string tokenizer;
    if (!ckpt.tokenizer_path.empty()) {
      const fs::path tok(ckpt.tokenizer_path);
      tokenizer = tok.filename().string();
      std::vector<fs::path> copies = {tok};
      for (const char* side : kSideFiles) copies.push_back(tok.parent_path() / side);
      for (const fs::path& f : copies) {
        if (!fs::is_regular_file(f, ec) || fs::exists(tmp / f.filename(), ec)) continue;
        if (!fs::copy_file(f, tmp / f.filename(), ec)) {
          return resource_exhausted("anvil build: cannot copy " + f.string() + ": " + ec.message());
        }
      }
    }
    json model_config = ckpt.config_map.raw();
    if (fused.is_fused) model_config["anvil_fused_projections"] = true;  // read by the llama family
    const int64_t max_seq_len = options.max_seq_len > 0 ? options.max_seq_len : ckpt.config.max_position_embeddings;
    json config = {
        {"anvil_engine",
         {{"format_version", kEngineFormatVersion},
          {"anvil_version", build_info().version},
          {"anvil_commit", build_info().commit},
          {"device", options.device},
          {"gpu", options.gpu},
          {"build_command", options.build_command}}},
        {"model_config", model_config},
        {"generation_config", ckpt.generation_config.empty() ? json::object() : ckpt.generation_config.raw()},
        {"source_format", ckpt.format == "dummy" ? "hf-safetensors" : ckpt.format},
        {"source", source_path},
        {"tokenizer", tokenizer},
        {"build_config",
         {{"quantization", std::string(quant_scheme_name(options.quantization))},
          {"kv_cache_dtype", options.kv_cache_dtype},
          {"max_batch", options.max_batch},
          {"max_seq_len", max_seq_len},
          {"dtype", std::string(dtype_name(ckpt.config.dtype))},
          {"lora", options.lora},
          {"tensor_parallel", 1},
          {"pipeline_parallel", 1}}},
        {"profile",
         {{"num_tokens",
           {{"min", 1},
            {"opt", options.opt_num_tokens > 0 ? options.opt_num_tokens : options.max_batch},
            {"max", std::max<int64_t>(max_seq_len, options.max_batch)}}}}},
        // Empty for a CPU engine (OpenBLAS has no per-shape choice); a CUDA build fills it below, after `tune`
        // timed cuBLASLt's candidates for every shape bucket (backends/gemm_algo_cache.h).
        {"gemm_algos", json::object()},
        {"quantization",
         {{"scheme", std::string(quant_scheme_name(options.quantization))},
          {"num_quantized", report.num_quantized},
          {"bytes_before", report.bytes_before},
          {"bytes_after", report.bytes_after},
          {"weights", layout},
          {"notes", report.notes}}},
        {"weights", json::array({{{"file", kWeightsFile}, {"bytes", fs::file_size(tmp / kWeightsFile, ec)}}})},
    };
    ANVIL_RETURN_IF_ERROR(write_text(tmp / "config.json", config.dump(2) + "\n"));
    if (!options.tune) return Status();
    ANVIL_RETURN_IF_ERROR(options.tune(tmp.string()));
    const fs::path tuned = tmp / kGemmAlgosFile;
    if (!fs::exists(tuned, ec)) return Status();  // nothing was timed (every GEMM ran on a GEMV)
    std::ifstream f(tuned);
    const json cache = json::parse(f, nullptr, /*allow_exceptions=*/false);
    f.close();
    if (cache.is_discarded() || !cache.contains("devices") || !cache["devices"].is_object()) {
      return internal_error("anvil build: the GEMM tuning left an unreadable " + tuned.string());
    }
    config["gemm_algos"] = cache["devices"];
    fs::remove(tuned, ec);
    return write_text(tmp / "config.json", config.dump(2) + "\n");
  }();
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return s;
  }
  // Into place: an older engine at out_dir is moved aside first and removed once the new one is there.
  const fs::path old = out.parent_path() / (out.filename().string() + ".old-" + std::to_string(::getpid()));
  const bool had_old = fs::exists(out, ec);
  if (had_old) fs::rename(out, old, ec);
  if (!ec) fs::rename(tmp, out, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove_all(tmp, ec);
    if (had_old) fs::rename(old, out, ec);
    return resource_exhausted("anvil build: cannot move the engine into " + out.string() + ": " + why);
  }
  if (had_old) fs::remove_all(old, ec);
  return Status();
}

Expected<Checkpoint> load_engine(const std::string& dir, const std::string& running_gpu) {
  const fs::path root(dir);
  ANVIL_ASSIGN_OR_RETURN(json config, read_json_file(root / "config.json"));
  const json& engine = config["anvil_engine"];
  const std::string where = "engine " + dir;
  if (!engine.is_object()) return invalid_file(where + ": config.json has no anvil_engine object");
  const std::string build_command = engine.value("build_command", "");
  const int format_version = engine.value("format_version", 0);
  if (format_version != kEngineFormatVersion) {
    return unsupported(where + " has engine format " + std::to_string(format_version) + ", this Anvil reads " +
                       std::to_string(kEngineFormatVersion) + ": " + rebuild_hint(build_command));
  }
  const std::string version = engine.value("anvil_version", "");
  if (version != build_info().version) {
    return unsupported(where + " was built by Anvil " + version + ", this is Anvil " + build_info().version + ": " +
                       rebuild_hint(build_command));
  }
  const std::string gpu = engine.value("gpu", "");
  if (!gpu.empty() && !running_gpu.empty() && gpu != running_gpu) {
    return unsupported(where + " was built and tuned for " + gpu + ", this process runs on " + running_gpu + ": " +
                       rebuild_hint(build_command) + " on this GPU");
  }
  if (!config["model_config"].is_object()) return invalid_file(where + ": config.json has no model_config object");
  if (!config["weights"].is_array() || config["weights"].empty()) {
    return invalid_file(where + ": config.json lists no weights files");
  }
  CheckpointData data;
  data.config_map =
      ConfigMap(config["model_config"], "config.json " + (root / "config.json").string() + " (model_config)");
  if (config["generation_config"].is_object() && !config["generation_config"].empty()) {
    data.generation_config = ConfigMap(config["generation_config"], "config.json " + dir + " (generation_config)");
  }
  for (const json& w : config["weights"]) {
    const std::string file = w.value("file", "");
    const fs::path path = root / file;
    std::error_code ec;
    if (file.empty() || file.find('/') != std::string::npos || !fs::is_regular_file(path, ec)) {
      return not_found(where + ": weights file '" + file + "' is missing; " + rebuild_hint(build_command));
    }
    const uint64_t want = w.value("bytes", uint64_t{0});
    const uint64_t have = fs::file_size(path, ec);
    if (have != want) {
      return invalid_file(where + ": " + path.string() + " is " + std::to_string(have) + " bytes, the build wrote " +
                          std::to_string(want) + (have < want ? " (truncated)" : "") + "; " +
                          rebuild_hint(build_command));
    }
    ANVIL_RETURN_IF_ERROR(load_safetensors_file(path.string(), &data.weights, SafetensorsDtypes::kFloatAndQuantized));
    ANVIL_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapped, MappedFile::open(path.string()));
    ANVIL_ASSIGN_OR_RETURN(auto meta, parse_safetensors_metadata(mapped->data(), mapped->size(), path.string()));
    ANVIL_RETURN_IF_ERROR(attach_scales(meta, path.string(), &data.weights));
    data.weights.set_source(path.string());
  }
  data.format = config.value("source_format", "hf-safetensors");
  const std::string tokenizer = config.value("tokenizer", "");
  if (!tokenizer.empty() && fs::exists(root / tokenizer)) data.tokenizer_path = (root / tokenizer).string();
  return checkpoint_from_data(std::move(data), dir);
}

}  // namespace anvil
