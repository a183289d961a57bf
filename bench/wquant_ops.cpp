// Op-level benchmark of the CUDA linear on the build step's weight types against bf16, on the llama3-8b shapes:
// a decode step's weight stream (32 layers of qkv, o, gate/up (fused SwiGLU) and down, plus the LM head, each
// layer's weights a separate copy so that nothing is served from L2) replayed as one CUDA graph at 1 and 4 tokens,
// reported as weight bytes per second against the device copy bandwidth measured in the same process; and one
// layer's projections at prefill sizes (tokens x 2 x params / time). Random data, never zeros.
// Usage: anvil_wquant_bench [--types bf16,int8,int4,fp8] [--prefill 2048]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/cuda/cuda_backend.h"
#include "core/dtype.h"

namespace anvil {
namespace {

constexpr int64_t kHidden = 4096, kInter = 14336, kQkv = 6144, kVocab = 128256, kLayers = 32;

struct Proj {
  const char* name;
  int64_t rows, cols;
  bool swiglu;
};
constexpr Proj kProjs[] = {{"qkv", kQkv, kHidden, false},
                           {"o", kHidden, kHidden, false},
                           {"gate_up", 2 * kInter, kHidden, true},
                           {"down", kHidden, kInter, false}};

void check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.to_string().c_str());
    std::exit(1);
  }
}

uint64_t next(uint64_t& state) {  // xorshift64*: fast random bytes for GB of weights
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  return state * 2685821657736338717ull;
}

// A host weight of `dtype` [rows, cols] with random data (bf16: N(0, 0.02)-ish values; quantized: random codes,
// fp8 codes finite) and per-row (fp8, int8) or g128 (int4) scales; weight-only except FP8 (W8A8).
struct HostWeight {
  std::vector<uint8_t> data;
  std::vector<float> scale;
  Tensor tensor;
};
HostWeight make_host(DType dtype, int64_t rows, int64_t cols, uint64_t seed) {
  HostWeight w;
  uint64_t st = seed * 0x9E3779B97F4A7C15ull + 1;
  const int32_t group = dtype == DType::kInt4 ? 128 : 0;
  const size_t bytes = dtype == DType::kBF16 ? rows * cols * 2 : dtype == DType::kInt4 ? rows * cols / 2 : rows * cols;
  w.data.resize(bytes);
  if (dtype == DType::kBF16) {
    auto* p = reinterpret_cast<uint16_t*>(w.data.data());
    for (int64_t i = 0; i < rows * cols; ++i) {
      p[i] = float_to_bf16((static_cast<float>(next(st) >> 40) / 16777216.0f - 0.5f) * 0.04f);
    }
  } else {
    for (size_t i = 0; i < bytes; i += 8) {
      uint64_t v = next(st);
      if (dtype == DType::kFP8E4M3) v &= 0x7e7e7e7e7e7e7e7eull;  // never the NaN codes 0x7f / 0xff
      std::memcpy(w.data.data() + i, &v, std::min<size_t>(8, bytes - i));
    }
  }
  w.tensor = Tensor::make(w.data.data(), dtype, {rows, cols});
  if (dtype != DType::kBF16) {
    w.scale.assign(rows * (group == 0 ? 1 : cols / group), dtype == DType::kFP8E4M3 ? 1e-4f : 1e-3f);
    w.tensor.scales.scale = w.scale.data();
    w.tensor.scales.group_size = group;
    // FP8 as --quantization fp8 makes it: W8A8 (per-token dynamic e4m3 activations).
    if (dtype == DType::kFP8E4M3) w.tensor.scales.activations = ActivationQuant::kPerTokenDynamic;
  }
  return w;
}

// `copies` device weights of one shape: the first uploaded, the rest device copies of its bytes (same scales).
std::vector<Tensor> upload_copies(Backend& gpu, DType dtype, const Proj& p, int copies, std::vector<Buffer>* storage) {
  HostWeight h = make_host(dtype, p.rows, p.cols, p.rows * 31 + p.cols);
  auto first = gpu.upload_weight(h.tensor, storage);
  check(first.status(), "upload_weight");
  std::vector<Tensor> out{*first};
  const size_t bytes = first->nbytes();
  for (int i = 1; i < copies; ++i) {
    auto buf = gpu.allocate(bytes);
    check(buf.status(), "allocate");
    if (cudaMemcpy(buf->data(), first->data, bytes, cudaMemcpyDeviceToDevice) != cudaSuccess) std::exit(1);
    Tensor t = *first;
    t.data = buf->data();
    storage->push_back(std::move(buf).value());
    out.push_back(t);
  }
  return out;
}

Tensor device_random(Backend& gpu, int64_t rows, int64_t cols, std::vector<Buffer>* storage, float scale) {
  std::vector<uint16_t> h(rows * cols);
  uint64_t st = 77 + rows;
  for (auto& v : h) v = float_to_bf16((static_cast<float>(next(st) >> 40) / 16777216.0f - 0.5f) * scale);
  auto buf = gpu.allocate(h.size() * 2);
  check(buf.status(), "allocate");
  Tensor t = buf->view(DType::kBF16, {rows, cols});
  check(gpu.copy_to_device(h.data(), t), "copy");
  storage->push_back(std::move(buf).value());
  return t;
}

double copy_bandwidth() {
  const size_t n = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  cudaMalloc(&a, n);
  cudaMalloc(&b, n);
  cudaMemset(a, 1, n);
  for (int i = 0; i < 3; ++i) cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
  cudaEvent_t s, e;
  cudaEventCreate(&s);
  cudaEventCreate(&e);
  cudaEventRecord(s);
  for (int i = 0; i < 10; ++i) cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
  cudaEventRecord(e);
  cudaEventSynchronize(e);
  float ms = 0;
  cudaEventElapsedTime(&ms, s, e);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * 10 * n / (ms * 1e-3);
}

// Median seconds of one replay of `graph` over `reps` replays (after two warm-ups).
double time_graph(Backend& gpu, CapturedGraph& graph, int reps) {
  std::vector<double> t;
  for (int i = 0; i < reps + 2; ++i) {
    check(gpu.synchronize(), "sync");
    const auto a = std::chrono::steady_clock::now();
    check(graph.replay(), "replay");
    check(gpu.synchronize(), "sync");
    const auto b = std::chrono::steady_clock::now();
    if (i >= 2) t.push_back(std::chrono::duration<double>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

DType parse_type(const std::string& s) {
  if (s == "bf16") return DType::kBF16;
  if (s == "int8") return DType::kInt8;
  if (s == "int4") return DType::kInt4;
  return DType::kFP8E4M3;
}

}  // namespace
}  // namespace anvil

int main(int argc, char** argv) {
  using namespace anvil;
  std::string types = "bf16,int8,int4,fp8";
  int64_t prefill = 2048;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--types") types = argv[i + 1];
    if (std::string(argv[i]) == "--prefill") prefill = std::stoll(argv[i + 1]);
  }
  auto made = make_cuda_backend(CudaBackendOptions{.device_id = 0, .dtype = DType::kBF16});
  check(made.status(), "cuda backend");
  Backend& gpu = **made;
  const double bw = copy_bandwidth();
  std::printf("copy bandwidth (read+write): %.3f TB/s\n", bw / 1e12);
  std::vector<Buffer> act;
  const int64_t max_t = std::max<int64_t>(prefill, 4);
  Tensor x = device_random(gpu, max_t, kInter, &act, 2.0f);
  Tensor y = device_random(gpu, max_t, 2 * kInter, &act, 1.0f);
  Tensor scratch = device_random(gpu, max_t, 2 * kInter, &act, 1.0f);
  auto logits_buf = gpu.allocate(max_t * kVocab * 4);
  check(logits_buf.status(), "allocate logits");
  std::printf("%-6s %-9s %7s %10s %9s %8s\n", "type", "what", "tokens", "time us", "GB/s", "% copy");
  for (size_t pos = 0; pos < types.size();) {
    const size_t end = std::min(types.find(',', pos), types.size());
    const std::string name = types.substr(pos, end - pos);
    pos = end + 1;
    const DType dtype = parse_type(name);
    std::vector<Buffer> storage;
    std::vector<std::vector<Tensor>> layers;  // [proj][layer]
    size_t stream_bytes = 0;
    for (const Proj& p : kProjs) {
      layers.push_back(upload_copies(gpu, dtype, p, kLayers, &storage));
      stream_bytes += kLayers * layers.back()[0].nbytes();
    }
    const Proj head{"lm_head", kVocab, kHidden, false};
    const Tensor lm_head = upload_copies(gpu, dtype, head, 1, &storage)[0];
    stream_bytes += lm_head.nbytes();
    for (int64_t t : {int64_t{1}, int64_t{4}}) {
      auto view = [&](const Tensor& base, int64_t rows, int64_t cols) {
        return Tensor::make(base.data, DType::kBF16, {rows, cols}, Device::kCuda);
      };
      const Tensor logits = Tensor::make(logits_buf->data(), DType::kF32, {t, kVocab}, Device::kCuda);
      auto step = [&]() -> Status {
        for (int64_t l = 0; l < kLayers; ++l) {
          for (size_t k = 0; k < std::size(kProjs); ++k) {
            const Proj& p = kProjs[k];
            if (p.swiglu) {
              ANVIL_RETURN_IF_ERROR(gpu.linear_swiglu(view(x, t, p.cols), layers[k][l], view(scratch, t, p.rows),
                                                      view(y, t, p.rows / 2)));
            } else {
              ANVIL_RETURN_IF_ERROR(gpu.linear(view(x, t, p.cols), layers[k][l], Tensor(), view(y, t, p.rows)));
            }
          }
        }
        return gpu.linear(view(x, t, kHidden), lm_head, Tensor(), logits);
      };
      check(step(), "eager step");  // plans, tuning and scratch outside the capture
      auto graph = gpu.capture(step);
      check(graph.status(), "capture");
      const double s = time_graph(gpu, **graph, 10);
      std::printf("%-6s %-9s %7lld %10.1f %9.1f %7.1f%%\n", name.c_str(), "step", static_cast<long long>(t), s * 1e6,
                  stream_bytes / s / 1e9, 100.0 * stream_bytes / s / bw);
    }
    // Prefill-sized projections of one layer (the first copy), eager (one call each after a warm-up).
    for (size_t k = 0; k < std::size(kProjs) && prefill > 0; ++k) {
      const Proj& p = kProjs[k];
      const Tensor xin = Tensor::make(x.data, DType::kBF16, {prefill, p.cols}, Device::kCuda);
      const Tensor out = Tensor::make(scratch.data, DType::kBF16, {prefill, p.rows}, Device::kCuda);
      std::vector<double> t;
      for (int i = 0; i < 7; ++i) {
        check(gpu.synchronize(), "sync");
        const auto a = std::chrono::steady_clock::now();
        check(gpu.linear(xin, layers[k][i % kLayers], Tensor(), out), "prefill linear");
        check(gpu.synchronize(), "sync");
        if (i >= 2) t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
      }
      std::sort(t.begin(), t.end());
      const double s = t[t.size() / 2];
      std::printf("%-6s %-9s %7lld %10.1f %8.0fT (TFLOP/s)\n", name.c_str(), p.name, static_cast<long long>(prefill),
                  s * 1e6, 2.0 * prefill * p.rows * p.cols / s / 1e12);
    }
  }
  return 0;
}
