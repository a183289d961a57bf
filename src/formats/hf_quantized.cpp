// Import of GPTQ, AWQ and compressed-tensors checkpoints into Anvil's scaled weights (formats/hf_quantized.h):
// the quantization_config check, the unpacking of each format's int32 words, and the repack into kInt4 (two codes
// a byte along in_features), kInt8 or kFP8E4M3 [out, in] with fp32 scales/zeros [out, groups].
#include "formats/hf_quantized.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "core/logging.h"
#include "core/scaled_weight.h"
#include "formats/checkpoint.h"

namespace anvil {

namespace {

using json = nlohmann::json;

// AWQ's gemm packing puts column 8k + j of a word group in nibble kAwqNibbleOf[j] (its order map 0,2,4,6,1,3,5,7
// read backwards).
constexpr int kAwqNibbleOf[8] = {0, 4, 1, 5, 2, 6, 3, 7};

std::string shape_text(const Tensor& t) {
  return t.describe();
}

// ---- quantization_config ----

Status read_int(const ConfigMap& q, const std::string& key, int64_t* out, Need need = Need::kOptional) {
  return q.get_int(key, out, need);
}

Expected<HfQuantConfig> parse_gptq(const ConfigMap& q) {
  HfQuantConfig c;
  c.method = HfQuantMethod::kGptq;
  int64_t bits = 0, group = 0;
  ANVIL_RETURN_IF_ERROR(read_int(q, "bits", &bits, Need::kRequired));
  if (bits != 4 && bits != 8) return q.unsupported_value("bits", std::to_string(bits), "4, 8");
  ANVIL_RETURN_IF_ERROR(read_int(q, "group_size", &group, Need::kRequired));
  if (group != -1 && group <= 0) return q.unsupported_value("group_size", std::to_string(group), "-1 or > 0");
  bool desc_act = false;
  ANVIL_RETURN_IF_ERROR(q.get_bool("desc_act", &desc_act));
  if (desc_act) {
    return q.unsupported_value("desc_act", "true",
                               "false; act-order checkpoints (a permuted g_idx) would need the activations "
                               "permuted per linear");
  }
  ANVIL_RETURN_IF_ERROR(q.get_bool("sym", &c.symmetric));
  std::string format = "gptq";
  ANVIL_RETURN_IF_ERROR(q.get_string("checkpoint_format", &format));
  if (format != "gptq" && format != "gptq_v2") return q.unsupported_value("checkpoint_format", format, "gptq, gptq_v2");
  c.gptq_v2_zeros = format == "gptq_v2";
  c.bits = static_cast<int>(bits);
  c.group_size = group == -1 ? 0 : static_cast<int32_t>(group);
  return c;
}

Expected<HfQuantConfig> parse_awq(const ConfigMap& q) {
  HfQuantConfig c;
  c.method = HfQuantMethod::kAwq;
  int64_t bits = 0, group = 0;
  ANVIL_RETURN_IF_ERROR(read_int(q, q.contains("bits") ? "bits" : "w_bit", &bits, Need::kRequired));
  if (bits != 4) return q.unsupported_value("bits", std::to_string(bits), "4");
  ANVIL_RETURN_IF_ERROR(read_int(q, q.contains("group_size") ? "group_size" : "q_group_size", &group, Need::kRequired));
  if (group <= 0 && group != -1) return q.unsupported_value("group_size", std::to_string(group), "-1 or > 0");
  std::string version = "gemm";
  ANVIL_RETURN_IF_ERROR(q.get_string("version", &version));
  std::string lower = version;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (lower != "gemm") {
    return q.unsupported_value("version", version, "gemm (gemv, exllama, marlin and ipex pack differently)");
  }
  bool zero_point = true;
  ANVIL_RETURN_IF_ERROR(q.get_bool("zero_point", &zero_point));
  if (!zero_point) return q.unsupported_value("zero_point", "false", "true");
  c.symmetric = false;
  c.bits = 4;
  c.group_size = group == -1 ? 0 : static_cast<int32_t>(group);
  return c;
}

// One compressed-tensors QuantizationArgs object (weights or input_activations).
struct CtArgs {
  int64_t num_bits = 0;
  std::string type;
  std::string strategy;
  int64_t group_size = 0;
  bool symmetric = true;
  bool dynamic = false;
};

Status parse_ct_args(const ConfigMap& a, CtArgs* out) {
  ANVIL_RETURN_IF_ERROR(a.get_int("num_bits", &out->num_bits, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(a.get_string("type", &out->type));
  ANVIL_RETURN_IF_ERROR(a.get_string("strategy", &out->strategy));
  ANVIL_RETURN_IF_ERROR(a.get_int("group_size", &out->group_size));
  ANVIL_RETURN_IF_ERROR(a.get_bool("symmetric", &out->symmetric));
  if (const json* d = a.find("dynamic")) {
    if (d->is_boolean()) {
      out->dynamic = d->get<bool>();
    } else if (!(d->is_string() && d->get<std::string>() == "local")) {
      return a.wrong_type("dynamic", "a boolean");
    }
  }
  if (const json* order = a.find("actorder")) {
    const std::string v = order->is_string() ? order->get<std::string>() : order->dump();
    return a.unsupported_value("actorder", v, "null (act-order needs the activations permuted per linear)");
  }
  return Status();
}

Expected<HfQuantConfig> parse_compressed_tensors(const ConfigMap& q) {
  std::string format;
  ANVIL_RETURN_IF_ERROR(q.get_string("format", &format));
  if (q.contains("kv_cache_scheme")) {
    return unsupported(q.name("kv_cache_scheme") + " in " + q.source() +
                       " is set; a quantized KV cache from the checkpoint is not imported");
  }
  if (q.contains("sparsity_config")) {
    return unsupported(q.name("sparsity_config") + " in " + q.source() +
                       " is set; sparse checkpoints are not imported");
  }
  std::optional<ConfigMap> groups;
  ANVIL_RETURN_IF_ERROR(q.get_object("config_groups", &groups));
  if (!groups || groups->raw().size() != 1) {
    return unsupported(q.source() + ": " + q.name("config_groups") +
                       " must hold exactly one scheme (one group for every quantized linear)");
  }
  std::optional<ConfigMap> group;
  ANVIL_RETURN_IF_ERROR(groups->get_object(groups->raw().begin().key(), &group));
  std::string group_format;
  ANVIL_RETURN_IF_ERROR(group->get_string("format", &group_format));
  if (format.empty() || format == "mixed-precision") format = group_format;
  std::optional<ConfigMap> weights_map, inputs_map;
  ANVIL_RETURN_IF_ERROR(group->get_object("weights", &weights_map));
  if (!weights_map) return group->missing("weights");
  ANVIL_RETURN_IF_ERROR(group->get_object("input_activations", &inputs_map));
  if (group->contains("output_activations")) {
    return unsupported(group->name("output_activations") + " in " + q.source() + " is set; not supported");
  }
  CtArgs w, in;
  ANVIL_RETURN_IF_ERROR(parse_ct_args(*weights_map, &w));
  if (inputs_map) ANVIL_RETURN_IF_ERROR(parse_ct_args(*inputs_map, &in));
  if (w.dynamic) return weights_map->unsupported_value("dynamic", "true", "false");
  const bool row_strategy = w.strategy == "channel" || w.strategy == "tensor";

  HfQuantConfig c;
  c.bits = static_cast<int>(w.num_bits);
  c.symmetric = w.symmetric;
  if (format == "pack-quantized") {
    c.method = HfQuantMethod::kCtPackQuantized;
    if (w.type != "int") return weights_map->unsupported_value("type", w.type, "int");
    if (w.num_bits != 4) return weights_map->unsupported_value("num_bits", std::to_string(w.num_bits), "4");
    if (w.strategy == "group") {
      if (w.group_size <= 0) return weights_map->unsupported_value("group_size", std::to_string(w.group_size), "> 0");
      c.group_size = static_cast<int32_t>(w.group_size);
    } else if (w.strategy != "channel") {
      return weights_map->unsupported_value("strategy", w.strategy, "group, channel");
    }
    if (inputs_map)
      return unsupported(group->name("input_activations") + " in " + q.source() +
                         " is set; int4 weights run with unquantized activations only (W4A16)");
  } else if (format == "float-quantized" || format == "naive-quantized" || format == "int-quantized") {
    const bool is_float = format == "float-quantized";
    c.method = is_float ? HfQuantMethod::kCtFloatQuantized : HfQuantMethod::kCtNaiveQuantized;
    const std::string want_type = is_float ? "float" : "int";
    if (w.type != want_type) return weights_map->unsupported_value("type", w.type, want_type);
    if (w.num_bits != 8) return weights_map->unsupported_value("num_bits", std::to_string(w.num_bits), "8");
    if (!row_strategy) {
      return weights_map->unsupported_value("strategy", w.strategy,
                                            "channel, tensor (block and group fp8/int8 scales have no kernel)");
    }
    if (!w.symmetric) return weights_map->unsupported_value("symmetric", "false", "true");
    if (inputs_map) {
      if (in.type != want_type || in.num_bits != 8) {
        return inputs_map->unsupported_value("type", in.type + std::to_string(in.num_bits),
                                             want_type + "8 (the weight's own type)");
      }
      if (in.strategy != "token" && in.strategy != "tensor") {
        return inputs_map->unsupported_value("strategy", in.strategy, "token, tensor");
      }
      if (!in.symmetric) return inputs_map->unsupported_value("symmetric", "false", "true");
      c.w8a8 = true;
      c.static_input_scale = !in.dynamic;
    }
  } else {
    return q.unsupported_value("format", format, "pack-quantized, float-quantized, naive-quantized, int-quantized");
  }
  return c;
}

// ---- tensor access ----

struct Store {
  WeightStore* store;

  const Tensor* find(const std::string& name) const { return store->find(name); }

  Expected<const Tensor*> need(const std::string& name, const std::string& what) const {
    const Tensor* t = store->find(name);
    if (t == nullptr) return not_found("tensor " + name + " (" + what + ") is missing (file " + store->source() + ")");
    if (!t->is_contiguous())
      return invalid_file("tensor " + name + " is not contiguous (file " + store->source() + ")");
    return t;
  }

  Status bad_shape(const std::string& name, const Tensor& t, const std::string& expected) const {
    return invalid_file("tensor " + name + " has shape " + shape_text(t) + ", expected " + expected + " (file " +
                        store->source() + ")");
  }

  Status bad_dtype(const std::string& name, const Tensor& t, const std::string& expected) const {
    return invalid_file("tensor " + name + " is " + shape_text(t) + ", expected dtype " + expected + " (file " +
                        store->source() + ")");
  }
};

std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "[";
  bool first = true;
  for (int64_t v : d) {
    s += (first ? "" : ", ") + std::to_string(v);
    first = false;
  }
  return s + "]";
}

bool has_shape(const Tensor& t, std::initializer_list<int64_t> d) {
  if (t.ndim != static_cast<int>(d.size())) return false;
  int i = 0;
  for (int64_t v : d) {
    if (t.shape[i++] != v) return false;
  }
  return true;
}

int32_t word_at(const Tensor& t, int64_t idx) {
  int32_t v;
  std::memcpy(&v, static_cast<const uint8_t*>(t.data) + idx * 4, 4);
  return v;
}

// A float tensor's values as fp32 (f32/f16/bf16).
Expected<std::vector<float>> floats_of(const Store& s, const std::string& name, const Tensor& t) {
  if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16) {
    return s.bad_dtype(name, t, "F32, F16 or BF16");
  }
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(t.data, t.dtype, out.data(), out.size());
  return out;
}

// Owned storage of one imported weight: codes (or none, for a view of the file's own fp8/int8 data), then scales
// [rows, groups], then zeros.
struct Imported {
  Buffer storage;
  Tensor tensor;
  uint8_t* codes = nullptr;
  float* scale = nullptr;
  float* zero = nullptr;
};

Expected<Imported> allocate(const std::string& name, DType dtype, int64_t rows, int64_t cols, int32_t group_size,
                            bool has_zero, bool own_codes) {
  Imported w;
  const int64_t groups = group_size == 0 ? 1 : cols / group_size;
  const size_t code_bytes =
      own_codes ? (dtype == DType::kInt4 ? static_cast<size_t>(rows * cols / 2) : static_cast<size_t>(rows * cols)) : 0;
  const size_t code_padded = (code_bytes + 63) / 64 * 64;
  const size_t scale_bytes = static_cast<size_t>(rows * groups) * sizeof(float);
  try {
    w.storage = Buffer::host(code_padded + scale_bytes * (has_zero ? 2 : 1));
  } catch (const std::bad_alloc&) {
    return resource_exhausted("import: no host memory for " + name);
  }
  auto* base = static_cast<uint8_t*>(w.storage.data());
  std::memset(base, 0, w.storage.nbytes());
  w.codes = own_codes ? base : nullptr;
  w.scale = reinterpret_cast<float*>(base + code_padded);
  w.zero = has_zero ? w.scale + rows * groups : nullptr;
  w.tensor = Tensor::make(w.codes, dtype, {rows, cols});
  w.tensor.scales.scale = w.scale;
  w.tensor.scales.zero = w.zero;
  w.tensor.scales.group_size = group_size;
  return w;
}

Status finish(const std::string& prefix, Imported w, const std::vector<std::string>& drop, WeightStore* store) {
  const std::string name = prefix + ".weight";
  ANVIL_RETURN_IF_ERROR(check_scaled_weight(w.tensor, "import " + name));
  for (const std::string& d : drop) store->erase(prefix + "." + d);
  store->add_view(name, w.tensor);
  store->keep_buffer(std::move(w.storage));
  return Status();
}

// The group size of a [*, in] weight whose scales have `groups` groups, per the config's group_size.
Status check_groups(const Store& s, const std::string& name, const Tensor& t, int32_t group_size, int64_t in,
                    int64_t groups) {
  const int64_t want = group_size == 0 ? 1 : in / group_size;
  if (group_size > 0 && in % group_size != 0) {
    return invalid_file("tensor " + name + ": group size " + std::to_string(group_size) + " does not divide the " +
                        std::to_string(in) + " input features (file " + s.store->source() + ")");
  }
  if (groups != want) {
    return invalid_file("tensor " + name + " holds " + std::to_string(groups) + " groups, expected " +
                        std::to_string(want) + " for " + std::to_string(in) + " input features and group size " +
                        std::to_string(group_size) + " (file " + s.store->source() + ")");
  }
  (void)t;
  return Status();
}

// Writes unsigned code u (bits 4 or 8) of element [o][i] as Anvil's signed code u - 2^(bits-1).
inline void put_code(Imported& w, int bits, int64_t in, int64_t o, int64_t i, int32_t u) {
  const int64_t idx = o * in + i;
  if (bits == 4) {
    set_int4(w.codes, idx, u - 8);
  } else {
    w.codes[idx] = static_cast<uint8_t>(static_cast<int8_t>(u - 128));
  }
}

// GPTQ and AWQ: codes, zeros and scales in [in|groups, out] orientation.
Status import_gptq_awq(const HfQuantConfig& c, const Store& s, const std::string& prefix) {
  const bool awq = c.method == HfQuantMethod::kAwq;
  const int pack = 32 / c.bits;
  const std::string qw_name = prefix + ".qweight", qz_name = prefix + ".qzeros", sc_name = prefix + ".scales";
  ANVIL_ASSIGN_OR_RETURN(const Tensor* qw, s.need(qw_name, "packed weight"));
  ANVIL_ASSIGN_OR_RETURN(const Tensor* sc, s.need(sc_name, "scales"));
  ANVIL_ASSIGN_OR_RETURN(const Tensor* qz, s.need(qz_name, "packed zeros"));
  if (qw->dtype != DType::kI32) return s.bad_dtype(qw_name, *qw, "I32");
  if (qz->dtype != DType::kI32) return s.bad_dtype(qz_name, *qz, "I32");
  if (qw->ndim != 2) return s.bad_shape(qw_name, *qw, "a matrix");
  const int64_t in = awq ? qw->shape[0] : qw->shape[0] * pack;
  const int64_t out = awq ? qw->shape[1] * pack : qw->shape[1];
  if (sc->ndim != 2 || sc->shape[1] != out) return s.bad_shape(sc_name, *sc, "[groups, " + std::to_string(out) + "]");
  const int64_t groups = sc->shape[0];
  ANVIL_RETURN_IF_ERROR(check_groups(s, sc_name, *sc, c.group_size, in, groups));
  if (out % pack != 0 || !has_shape(*qz, {groups, out / pack})) {
    return s.bad_shape(qz_name, *qz, dims({groups, out / pack}));
  }
  const int64_t gsize = c.group_size == 0 ? in : c.group_size;
  if (const Tensor* g_idx = s.find(prefix + ".g_idx")) {
    if (g_idx->dtype != DType::kI32 || !has_shape(*g_idx, {in}))
      return s.bad_shape(prefix + ".g_idx", *g_idx, dims({in}));
    for (int64_t i = 0; i < in; ++i) {
      if (word_at(*g_idx, i) != i / gsize) {
        return unsupported("tensor " + prefix + ".g_idx maps input feature " + std::to_string(i) + " to group " +
                           std::to_string(word_at(*g_idx, i)) + ", not " + std::to_string(i / gsize) +
                           ": act-order (desc_act) checkpoints are not supported (file " + s.store->source() + ")");
      }
    }
  }
  ANVIL_ASSIGN_OR_RETURN(const std::vector<float> scales, floats_of(s, sc_name, *sc));
  const DType dtype = c.bits == 4 ? DType::kInt4 : DType::kInt8;
  if (dtype == DType::kInt4 && in % 2 != 0) return s.bad_shape(qw_name, *qw, "an even number of input features");
  ANVIL_ASSIGN_OR_RETURN(Imported w, allocate(prefix + ".weight", dtype, out, in, c.group_size, true, true));
  const int32_t mask = (1 << c.bits) - 1;
  const std::vector<int32_t> codes = awq ? unpack_awq(static_cast<const int32_t*>(qw->data), in, out)
                                         : unpack_gptq_rows(static_cast<const int32_t*>(qw->data), in, out, c.bits);
  const std::vector<int32_t> zeros = awq ? unpack_awq(static_cast<const int32_t*>(qz->data), groups, out)
                                         : unpack_gptq_cols(static_cast<const int32_t*>(qz->data), groups, out, c.bits);
  const float offset = static_cast<float>(1 << (c.bits - 1));
  // NOTE: GPTQ's original packing (checkpoint_format gptq, AutoGPTQ) stores zero - 1; gptq_v2 and AWQ store zero.
  const int32_t zero_add = (!awq && !c.gptq_v2_zeros) ? 1 : 0;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t o = 0; o < out; ++o) {
      w.scale[o * groups + g] = scales[static_cast<size_t>(g * out + o)];
      const int32_t z = (zeros[static_cast<size_t>(g * out + o)] & mask) + zero_add;
      w.zero[o * groups + g] = static_cast<float>(z) - offset;
    }
  }
  for (int64_t i = 0; i < in; ++i) {
    for (int64_t o = 0; o < out; ++o) put_code(w, c.bits, in, o, i, codes[static_cast<size_t>(i * out + o)]);
  }
  return finish(prefix, std::move(w), {"qweight", "qzeros", "scales", "g_idx"}, s.store);
}

Status import_ct_packed(const HfQuantConfig& c, const Store& s, const std::string& prefix) {
  const std::string pk_name = prefix + ".weight_packed", sc_name = prefix + ".weight_scale",
                    sh_name = prefix + ".weight_shape", zp_name = prefix + ".weight_zero_point";
  ANVIL_ASSIGN_OR_RETURN(const Tensor* pk, s.need(pk_name, "packed weight"));
  ANVIL_ASSIGN_OR_RETURN(const Tensor* sc, s.need(sc_name, "scales"));
  ANVIL_ASSIGN_OR_RETURN(const Tensor* sh, s.need(sh_name, "original shape"));
  if (pk->dtype != DType::kI32 || pk->ndim != 2) return s.bad_dtype(pk_name, *pk, "I32 matrix");
  if ((sh->dtype != DType::kI64 && sh->dtype != DType::kI32) || !has_shape(*sh, {2})) {
    return s.bad_shape(sh_name, *sh, "I64[2] (out_features, in_features)");
  }
  auto shape_at = [&](int k) {
    if (sh->dtype == DType::kI32) return static_cast<int64_t>(word_at(*sh, k));
    int64_t v;
    std::memcpy(&v, static_cast<const uint8_t*>(sh->data) + k * 8, 8);
    return v;
  };
  const int64_t out = shape_at(0), in = shape_at(1);
  if (out <= 0 || in <= 0 || !has_shape(*pk, {out, (in + 7) / 8})) {
    return s.bad_shape(pk_name, *pk, dims({out, (in + 7) / 8}) + " for weight_shape " + dims({out, in}));
  }
  if (sc->ndim != 2 || sc->shape[0] != out) return s.bad_shape(sc_name, *sc, "[" + std::to_string(out) + ", groups]");
  const int64_t groups = sc->shape[1];
  ANVIL_RETURN_IF_ERROR(check_groups(s, sc_name, *sc, c.group_size, in, groups));
  if (in % 2 != 0) return s.bad_shape(pk_name, *pk, "an even number of input features");
  ANVIL_ASSIGN_OR_RETURN(const std::vector<float> scales, floats_of(s, sc_name, *sc));
  ANVIL_ASSIGN_OR_RETURN(Imported w,
                         allocate(prefix + ".weight", DType::kInt4, out, in, c.group_size, !c.symmetric, true));
  std::copy(scales.begin(), scales.end(), w.scale);
  if (!c.symmetric) {
    // Zero points are packed like the weight but along out_features: [ceil(out / 8), groups].
    ANVIL_ASSIGN_OR_RETURN(const Tensor* zp, s.need(zp_name, "packed zero points"));
    if (zp->dtype != DType::kI32 || !has_shape(*zp, {(out + 7) / 8, groups})) {
      return s.bad_shape(zp_name, *zp, "I32" + dims({(out + 7) / 8, groups}));
    }
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t g = 0; g < groups; ++g) {
        const int32_t word = word_at(*zp, (o / 8) * groups + g);
        w.zero[o * groups + g] = static_cast<float>(((word >> (4 * (o % 8))) & 0xf) - 8);
      }
    }
  }
  const std::vector<int32_t> codes = unpack_ct_int4(static_cast<const int32_t*>(pk->data), out, in);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < in; ++i) put_code(w, 4, in, o, i, codes[static_cast<size_t>(o * in + i)]);
  }
  return finish(prefix, std::move(w), {"weight_packed", "weight_scale", "weight_shape", "weight_zero_point"}, s.store);
}

// fp8 / int8 [out, in] weights stay the file's own bytes; only the per-row fp32 scales are made.
Status import_ct_8bit(const HfQuantConfig& c, const Store& s, const std::string& prefix) {
  const bool is_float = c.method == HfQuantMethod::kCtFloatQuantized;
  const std::string w_name = prefix + ".weight", sc_name = prefix + ".weight_scale";
  ANVIL_ASSIGN_OR_RETURN(const Tensor* wt, s.need(w_name, "quantized weight"));
  ANVIL_ASSIGN_OR_RETURN(const Tensor* sc, s.need(sc_name, "scale"));
  const DType dtype = is_float ? DType::kFP8E4M3 : DType::kInt8;
  if (wt->dtype != dtype || wt->ndim != 2) return s.bad_dtype(w_name, *wt, is_float ? "F8_E4M3 matrix" : "I8 matrix");
  if (s.find(prefix + ".weight_zero_point") != nullptr && !c.symmetric) {
    return unsupported("tensor " + prefix + ".weight_zero_point: asymmetric 8-bit weights are not supported");
  }
  const int64_t out = wt->shape[0], in = wt->shape[1];
  ANVIL_ASSIGN_OR_RETURN(const std::vector<float> scales, floats_of(s, sc_name, *sc));
  const bool per_row = has_shape(*sc, {out, 1}) || has_shape(*sc, {out});
  if (!per_row && scales.size() != 1) return s.bad_shape(sc_name, *sc, dims({out, 1}) + " or [1]");
  ANVIL_ASSIGN_OR_RETURN(Imported w, allocate(w_name, dtype, out, in, 0, false, false));
  for (int64_t o = 0; o < out; ++o) w.scale[o] = per_row ? scales[static_cast<size_t>(o)] : scales[0];
  w.tensor.data = wt->data;
  w.tensor.scales.activations = c.w8a8 ? ActivationQuant::kPerTokenDynamic : ActivationQuant::kNone;
  if (c.static_input_scale && s.find(prefix + ".input_scale") == nullptr) {
    return not_found("tensor " + prefix + ".input_scale (static activation scale) is missing (file " +
                     s.store->source() + ")");
  }
  return finish(prefix, std::move(w), {"weight_scale", "input_scale", "weight_zero_point", "input_zero_point"},
                s.store);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Expected<HfQuantConfig> parse_hf_quant_config(const ConfigMap& config) {
  std::optional<ConfigMap> q;
  ANVIL_RETURN_IF_ERROR(config.get_object("quantization_config", &q));
  if (!q) return HfQuantConfig{};
  std::string method;
  if (!q->contains("quant_method")) return q->missing("quant_method");
  ANVIL_RETURN_IF_ERROR(q->get_string("quant_method", &method));
  if (method == "gptq") return parse_gptq(*q);
  if (method == "awq") return parse_awq(*q);
  if (method == "compressed-tensors") return parse_compressed_tensors(*q);
  if (method == "fp8") {
    return unsupported(config.source() +
                       ": quantization_config.quant_method 'fp8' (fine-grained fp8: 128x128 blocks of "
                       "weight_scale_inv) is not imported: Anvil's fp8 kernels take one scale per row, and folding "
                       "the blocks into rows would round every weight a second time; load the bf16 checkpoint with "
                       "--quantization fp8, or a compressed-tensors float-quantized (per-channel) export");
  }
  std::string bits;
  if (q->raw().contains("bits") && q->raw()["bits"].is_number_integer()) {
    bits = ", " + std::to_string(q->raw()["bits"].get<int>()) + " bits";
  }
  return unsupported(config.source() + ": quantization_config.quant_method '" + method + "'" + bits +
                     " is not supported (supported: gptq, awq, compressed-tensors; or an unquantized checkpoint with "
                     "--quantization fp8|int8-wo|int4-rtn at load, or `anvil build --quantization ...`)");
}

Status import_hf_quantized(const HfQuantConfig& config, WeightStore* store) {
  if (config.method == HfQuantMethod::kNone) return Status();
  const Store s{store};
  std::set<std::string> prefixes;
  std::string marker;
  switch (config.method) {
    case HfQuantMethod::kGptq:
    case HfQuantMethod::kAwq:
      marker = ".qweight";
      break;
    case HfQuantMethod::kCtPackQuantized:
      marker = ".weight_packed";
      break;
    default:
      marker = ".weight_scale";
      break;
  }
  for (const auto& [name, tensor] : store->tensors()) {
    if (ends_with(name, marker)) prefixes.insert(name.substr(0, name.size() - marker.size()));
  }
  if (prefixes.empty()) {
    return invalid_file("quantization_config names a quantized checkpoint, but no tensor ends in " + marker +
                        " (file " + store->source() + ")");
  }
  for (const std::string& prefix : prefixes) {
    switch (config.method) {
      case HfQuantMethod::kGptq:
      case HfQuantMethod::kAwq:
        ANVIL_RETURN_IF_ERROR(import_gptq_awq(config, s, prefix));
        break;
      case HfQuantMethod::kCtPackQuantized:
        ANVIL_RETURN_IF_ERROR(import_ct_packed(config, s, prefix));
        break;
      default:
        ANVIL_RETURN_IF_ERROR(import_ct_8bit(config, s, prefix));
        break;
    }
  }
  if (config.static_input_scale) {
    ANVIL_LOG_INFO("{}: static input_scale of {} linears ignored; activations are quantized per token on the fly",
                   store->source(), prefixes.size());
  }
  return Status();
}

// ---- packings ----

std::vector<int32_t> pack_gptq_rows(const std::vector<int32_t>& codes, int64_t rows, int64_t cols, int bits) {
  const int64_t pack = 32 / bits;
  std::vector<int32_t> out(static_cast<size_t>(rows / pack * cols), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t v = static_cast<uint32_t>(codes[static_cast<size_t>(r * cols + c)]) << (bits * (r % pack));
      out[static_cast<size_t>((r / pack) * cols + c)] |= static_cast<int32_t>(v);
    }
  }
  return out;
}

std::vector<int32_t> unpack_gptq_rows(const int32_t* packed, int64_t rows, int64_t cols, int bits) {
  const int64_t pack = 32 / bits;
  const uint32_t mask = (1u << bits) - 1;
  std::vector<int32_t> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t word;
      std::memcpy(&word, packed + (r / pack) * cols + c, 4);
      out[static_cast<size_t>(r * cols + c)] = static_cast<int32_t>((word >> (bits * (r % pack))) & mask);
    }
  }
  return out;
}

std::vector<int32_t> pack_gptq_cols(const std::vector<int32_t>& codes, int64_t rows, int64_t cols, int bits) {
  const int64_t pack = 32 / bits;
  std::vector<int32_t> out(static_cast<size_t>(rows * (cols / pack)), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t v = static_cast<uint32_t>(codes[static_cast<size_t>(r * cols + c)]) << (bits * (c % pack));
      out[static_cast<size_t>(r * (cols / pack) + c / pack)] |= static_cast<int32_t>(v);
    }
  }
  return out;
}

std::vector<int32_t> unpack_gptq_cols(const int32_t* packed, int64_t rows, int64_t cols, int bits) {
  const int64_t pack = 32 / bits;
  const uint32_t mask = (1u << bits) - 1;
  std::vector<int32_t> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t word;
      std::memcpy(&word, packed + r * (cols / pack) + c / pack, 4);
      out[static_cast<size_t>(r * cols + c)] = static_cast<int32_t>((word >> (bits * (c % pack))) & mask);
    }
  }
  return out;
}

std::vector<int32_t> pack_awq(const std::vector<int32_t>& codes, int64_t rows, int64_t cols) {
  std::vector<int32_t> out(static_cast<size_t>(rows * (cols / 8)), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t v = static_cast<uint32_t>(codes[static_cast<size_t>(r * cols + c)]) << (4 * kAwqNibbleOf[c % 8]);
      out[static_cast<size_t>(r * (cols / 8) + c / 8)] |= static_cast<int32_t>(v);
    }
  }
  return out;
}

std::vector<int32_t> unpack_awq(const int32_t* packed, int64_t rows, int64_t cols) {
  std::vector<int32_t> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t word;
      std::memcpy(&word, packed + r * (cols / 8) + c / 8, 4);
      out[static_cast<size_t>(r * cols + c)] = static_cast<int32_t>((word >> (4 * kAwqNibbleOf[c % 8])) & 0xf);
    }
  }
  return out;
}

std::vector<int32_t> pack_ct_int4(const std::vector<int32_t>& codes, int64_t rows, int64_t cols) {
  const int64_t words = (cols + 7) / 8;
  std::vector<int32_t> out(static_cast<size_t>(rows * words), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t v = static_cast<uint32_t>(codes[static_cast<size_t>(r * cols + c)]) << (4 * (c % 8));
      out[static_cast<size_t>(r * words + c / 8)] |= static_cast<int32_t>(v);
    }
  }
  return out;
}

std::vector<int32_t> unpack_ct_int4(const int32_t* packed, int64_t rows, int64_t cols) {
  const int64_t words = (cols + 7) / 8;
  std::vector<int32_t> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t word;
      std::memcpy(&word, packed + r * words + c / 8, 4);
      out[static_cast<size_t>(r * cols + c)] = static_cast<int32_t>((word >> (4 * (c % 8))) & 0xf);
    }
  }
  return out;
}

}  // namespace anvil
