// Kernel lab for GGUF block-quantized decode GEMV and dequantization (never linked into the engine).
// Validates every QuantKind, token count 1..8 and odd shapes against the CPU decoder (formats/gguf_quant.cpp,
// fp64 dots of its dequantized weights), then times llama3-8b shapes with CUDA graphs over weight buffers that
// rotate through more than the L2, against a device-to-device copy measured in the same run. Validated variants:
// v1 fp32 FMA on dequantized values (lab only), v2 dp4a on int8 x (the engine's, src/backends/cuda/quant_gemv.cu)
// in every configuration of the 2026-12-02 sweep. Timed (2026-12-03): the engine GEMV with x quantized in its own
// launch against inside the kernel, quant_gemm (batched steps, quant_gemm.cu) at 16-256 tokens, dequantize.
// (The 2026-12-02 configuration sweep and the v1/v2 variant timings are in git history and logs/.)
// Build and run: dev/kernels/quant_gemv/build.sh, then run.sh on the GPU machine.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/quant_dequantize.cu"
#include "backends/cuda/quant_gemm.cu"
#include "backends/cuda/quant_gemv.cu"
#include "core/dtype.h"
#include "formats/gguf_quant.h"

using namespace anvil;
using namespace anvil::cuda;

#define CK(expr)                                                                                 \
  do {                                                                                           \
    cudaError_t e_ = (expr);                                                                     \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(2);                                                                              \
    }                                                                                            \
  } while (0)
#define CKS(expr)                                                                                \
  do {                                                                                           \
    Status s_ = (expr);                                                                          \
    if (!s_.ok()) {                                                                              \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, s_.to_string().c_str()); \
      std::exit(2);                                                                              \
    }                                                                                            \
  } while (0)

namespace qlab {

constexpr QuantKind kKinds[kNumQuantKinds] = {QuantKind::kQ4_0, QuantKind::kQ4_1, QuantKind::kQ5_0, QuantKind::kQ5_1,
                                              QuantKind::kQ8_0, QuantKind::kQ4_K, QuantKind::kQ5_K, QuantKind::kQ6_K};
constexpr uint32_t kGgml[kNumQuantKinds] = {2, 3, 6, 7, 8, 12, 13, 14};

// ---- v1: fp32 FMA on dequantized values (x read as 16-bit, no int8) ------------------------------------------
template <typename T>
struct Fp32Dot {
  struct Args {
    const T* x;
  };
  __device__ __forceinline__ static float qf(uint32_t wx, int j) {  // wx = q word ^ 0x80808080
    return __int_as_float(__byte_perm(wx, 0x4B000000u, 0x7650u + (j & 3))) - 8388736.0f;
  }
  template <int kTok, int kRows, typename U>
  __device__ __forceinline__ static void accumulate(const Args& a, int64_t cols, int num_tokens, int64_t unit,
                                                    const quant::Unit (&u)[kRows], float (&acc)[kTok][kRows]) {
    uint32_t wx[kRows][8];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int k = 0; k < 8; ++k) wx[r][k] = u[r].q[k] ^ 0x80808080u;
    }
#pragma unroll
    for (int t = 0; t < kTok; ++t) {
      if (t >= num_tokens) break;
      const uint4* xp = reinterpret_cast<const uint4*>(a.x + t * cols + unit * 32);
      float xf[32];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint4 raw = __ldg(xp + i);
        const T* h = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int j = 0; j < 8; ++j) xf[8 * i + j] = to_float(h[j]);
      }
      float sx = 0.0f;
#pragma unroll
      for (int j = 0; j < 32; ++j) sx += xf[j];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float lo = 0.0f, hi = 0.0f;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          lo = fmaf(qf(wx[r][j / 4], j), xf[j], lo);
          hi = fmaf(qf(wx[r][4 + j / 4], j), xf[16 + j], hi);
        }
        acc[t][r] += u[r].d_lo * lo + u[r].d_hi * hi + u[r].m * sx;
      }
    }
  }
};

template <QuantKind K, int kTok, int kRows, int kPipe, typename Dot, typename T, int kSplit = 4>
void launch_variant(const void* w, int64_t rows, int64_t cols, typename Dot::Args args, int ntok, T* out,
                    cudaStream_t st) {
  constexpr int smem = quant::gemv_smem_bytes<K, kRows, kPipe>();
  auto* kernel = quant::quant_gemv_kernel<K, kTok, kRows, kPipe, kSplit, Dot, T>;
  static const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  CK(attr);
  constexpr int kRowsPerCta = kRows * quant::kGemvWarps / kSplit;
  kernel<<<static_cast<unsigned>((rows + kRowsPerCta - 1) / kRowsPerCta), quant::kGemvWarps * 32, smem, st>>>(
      static_cast<const uint8_t*>(w), rows, cols, args, nullptr, ntok, out);
}

// ---- configurations swept for the engine path: rows per group, pipeline depth, warps splitting a row ----------
struct Cfg {
  int rows, pipe, split;
};
constexpr int kNumCfg = 4;
template <int kTok>
constexpr Cfg cfg_of(int c) {
  constexpr Cfg t1[kNumCfg] = {{2, 3, 4}, {2, 4, 1}, {4, 3, 2}, {4, 3, 1}};
  constexpr Cfg t2[kNumCfg] = {{4, 3, 4}, {2, 4, 1}, {4, 3, 2}, {4, 3, 1}};
  constexpr Cfg t4[kNumCfg] = {{4, 3, 4}, {4, 3, 2}, {4, 3, 1}, {8, 2, 4}};
  constexpr Cfg t8[kNumCfg] = {{4, 3, 4}, {8, 2, 4}, {4, 3, 2}, {4, 3, 1}};
  return kTok == 1 ? t1[c] : (kTok == 2 ? t2[c] : (kTok == 4 ? t4[c] : t8[c]));
}
constexpr int tok_bucket(int ntok) {
  return ntok == 1 ? 1 : (ntok == 2 ? 2 : (ntok <= 4 ? 4 : 8));
}

// quantize x + GEMV with configuration c of the token bucket (the engine path, with a chosen configuration).
template <QuantKind K, int kTok, int kC>
void launch_cfg(const void* w, int64_t rows, int64_t cols, const __nv_bfloat16* x, int ntok, __nv_bfloat16* out,
                void* ws, cudaStream_t st) {
  constexpr Cfg c = cfg_of<kTok>(kC);
  auto* q = static_cast<int8_t*>(ws);
  auto* s = reinterpret_cast<float2*>(q + (static_cast<size_t>(ntok) * cols + 15) / 16 * 16);
  const int64_t n = ntok * cols;
  quant::quantize_x_kernel<__nv_bfloat16><<<static_cast<unsigned>((n / 8 + 255) / 256), 256, 0, st>>>(x, n, q, s);
  launch_variant<K, kTok, c.rows, c.pipe, quant::Dp4aDot, __nv_bfloat16, c.split>(
      w, rows, cols, quant::Dp4aDot::Args{{q, s}}, ntok, out, st);
}
template <QuantKind K, int kTok>
void launch_cfg_rt(int c, const void* w, int64_t rows, int64_t cols, const __nv_bfloat16* x, int ntok,
                   __nv_bfloat16* out, void* ws, cudaStream_t st) {
  switch (c) {
    case 0:
      launch_cfg<K, kTok, 0>(w, rows, cols, x, ntok, out, ws, st);
      break;
    case 1:
      launch_cfg<K, kTok, 1>(w, rows, cols, x, ntok, out, ws, st);
      break;
    case 2:
      launch_cfg<K, kTok, 2>(w, rows, cols, x, ntok, out, ws, st);
      break;
    default:
      launch_cfg<K, kTok, 3>(w, rows, cols, x, ntok, out, ws, st);
      break;
  }
}
template <QuantKind K>
void launch_cfg_kind(int c, const void* w, int64_t rows, int64_t cols, const __nv_bfloat16* x, int ntok,
                     __nv_bfloat16* out, void* ws, cudaStream_t st) {
  switch (tok_bucket(ntok)) {
    case 1:
      launch_cfg_rt<K, 1>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
    case 2:
      launch_cfg_rt<K, 2>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
    case 4:
      launch_cfg_rt<K, 4>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
    default:
      launch_cfg_rt<K, 8>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
  }
}
void launch_cfg_any(QuantKind kind, int c, const void* w, int64_t rows, int64_t cols, const __nv_bfloat16* x, int ntok,
                    __nv_bfloat16* out, void* ws, cudaStream_t st) {
  switch (kind) {
    case QuantKind::kQ4_0:
      launch_cfg_kind<QuantKind::kQ4_0>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
    case QuantKind::kQ4_1:
      launch_cfg_kind<QuantKind::kQ4_1>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
    case QuantKind::kQ5_0:
      launch_cfg_kind<QuantKind::kQ5_0>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
    case QuantKind::kQ5_1:
      launch_cfg_kind<QuantKind::kQ5_1>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
    case QuantKind::kQ8_0:
      launch_cfg_kind<QuantKind::kQ8_0>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
    case QuantKind::kQ4_K:
      launch_cfg_kind<QuantKind::kQ4_K>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
    case QuantKind::kQ5_K:
      launch_cfg_kind<QuantKind::kQ5_K>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
    case QuantKind::kQ6_K:
      launch_cfg_kind<QuantKind::kQ6_K>(c, w, rows, cols, x, ntok, out, ws, st);
      break;
  }
}

// SM copy and read kernels: the bandwidth ceilings next to cudaMemcpyAsync.
__global__ void copy_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    dst[i] = __ldcs(src + i);
}
__global__ void read_kernel(const uint4* __restrict__ src, size_t n, uint32_t* sink) {
  uint32_t acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(src + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

// ---- host helpers -----------------------------------------------------------------------------------------
uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void put_f16(uint8_t* p, float v) {
  const uint16_t h = float_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// Random bytes with sane fp16 scales: the integer fields take every value, the scales are those of a weight.
std::vector<uint8_t> random_blocks(QuantKind kind, int64_t rows, int64_t cols, uint64_t seed) {
  const int64_t nblocks = rows * cols / quant_block_size(kind);
  const int bb = quant_block_bytes(kind);
  std::vector<uint8_t> w(nblocks * bb);
  uint64_t s = seed;
  for (size_t i = 0; i < w.size(); i += 8) {
    const uint64_t r = splitmix(s);
    std::memcpy(w.data() + i, &r, std::min<size_t>(8, w.size() - i));
  }
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (int64_t b = 0; b < nblocks; ++b) {
    uint8_t* p = w.data() + b * bb;
    const float d = u(rng) * 0.01f * (rng() & 1 ? 1.0f : -1.0f);
    switch (kind) {
      case QuantKind::kQ4_1:
      case QuantKind::kQ5_1:
        put_f16(p, std::fabs(d));
        put_f16(p + 2, -std::fabs(d) * (kind == QuantKind::kQ4_1 ? 8.0f : 16.0f) * u(rng));
        break;
      case QuantKind::kQ4_K:
      case QuantKind::kQ5_K:
        put_f16(p, std::fabs(d) * 0.05f);
        put_f16(p + 2, std::fabs(d) * 0.1f * u(rng));
        break;
      case QuantKind::kQ6_K:
        put_f16(p + 208, d * 0.02f);
        break;
      default:
        put_f16(p, d);
        break;
    }
  }
  return w;
}

template <typename T>
uint16_t to_bits(float v) {
  return std::is_same_v<T, __half> ? float_to_fp16(v) : float_to_bf16(v);
}
template <typename T>
float from_bits(uint16_t h) {
  return std::is_same_v<T, __half> ? fp16_to_float(h) : bf16_to_float(h);
}

double rel_l2(const float* got, const double* want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

int g_failures = 0;
int g_checks = 0;

void check(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

// ---- validation -------------------------------------------------------------------------------------------
template <typename T>
void validate(QuantKind kind, int64_t rows, int64_t cols, uint64_t seed, double* worst_true, double* worst_emul) {
  const char* tname = std::is_same_v<T, __half> ? "f16" : "bf16";
  const int ntok_max = kQuantGemvMaxTokens;
  const std::vector<uint8_t> w = random_blocks(kind, rows, cols, seed);
  std::vector<float> wf(rows * cols);
  CKS(dequantize_gguf(static_cast<GgmlType>(kGgml[static_cast<int>(kind)]), w.data(), w.size(), wf.data(), wf.size()));
  // x rounded to T, and its int8 emulation (the quantize_x_kernel's float operations).
  std::mt19937 rng(static_cast<uint32_t>(seed * 7 + 1));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> xh(ntok_max * cols);
  std::vector<float> x(ntok_max * cols), xe(ntok_max * cols);
  for (size_t i = 0; i < x.size(); ++i) {
    xh[i] = to_bits<T>(nd(rng));
    x[i] = from_bits<T>(xh[i]);
  }
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (int j = 0; j < 32; ++j) xe[b * 32 + j] = d * static_cast<float>(std::nearbyint(x[b * 32 + j] * inv));
  }
  std::vector<double> ref(ntok_max * rows), refe(ntok_max * rows);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < rows; ++n) {
    for (int t = 0; t < ntok_max; ++t) {
      double a = 0, e = 0;
      const float* wr = wf.data() + n * cols;
      for (int64_t k = 0; k < cols; ++k) {
        a += static_cast<double>(wr[k]) * x[t * cols + k];
        e += static_cast<double>(wr[k]) * xe[t * cols + k];
      }
      ref[t * rows + n] = a;
      refe[t * rows + n] = e;
    }
  }
  void *dw, *dx, *dout, *dws, *ddq;
  CK(cudaMalloc(&dw, w.size()));
  CK(cudaMalloc(&dx, xh.size() * 2));
  CK(cudaMalloc(&dout, ntok_max * rows * 2));
  CK(cudaMalloc(&dws, quant_gemv_workspace_bytes(cols, ntok_max)));
  CK(cudaMalloc(&ddq, rows * cols * 4));
  CK(cudaMemcpy(dw, w.data(), w.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dx, xh.data(), xh.size() * 2, cudaMemcpyHostToDevice));
  std::vector<uint16_t> oh(ntok_max * rows);
  std::vector<float> of(ntok_max * rows);
  const double tol_emul = std::is_same_v<T, __half> ? 1.5e-3 : 8e-3;
  const double tol_true = 3e-2;
  const std::string tag =
      std::string(quant_kind_name(kind)) + " " + tname + " [" + std::to_string(rows) + "x" + std::to_string(cols) + "]";
  for (int ntok = 1; ntok <= ntok_max; ++ntok) {
    CK(cudaMemset(dout, 0xff, ntok_max * rows * 2));  // NaN in both 16-bit formats
    CKS(quant_gemv<T>(kind, dw, rows, cols, static_cast<const T*>(dx), ntok, static_cast<T*>(dout), dws, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(oh.data(), dout, ntok_max * rows * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < oh.size(); ++i) of[i] = from_bits<T>(oh[i]);
    bool untouched = true;  // rows of tokens >= ntok must stay poisoned
    for (size_t i = ntok * rows; i < oh.size(); ++i) untouched &= oh[i] == 0xffff;
    const double et = rel_l2(of.data(), ref.data(), ntok * rows);
    const double ee = rel_l2(of.data(), refe.data(), ntok * rows);
    if (ntok * rows >= 64) *worst_true = std::max(*worst_true, et);
    *worst_emul = std::max(*worst_emul, ee);
    // The int8-x error is relative to the terms, not the sum: judged on outputs of 64+ values only.
    const bool true_ok = et < tol_true || ntok * rows < 64;
    check(true_ok && ee < tol_emul && untouched, "gemv " + tag + " ntok " + std::to_string(ntok) + ": err vs exact x " +
                                                     std::to_string(et) + ", vs int8-x emulation " +
                                                     std::to_string(ee) + (untouched ? "" : ", wrote past num_tokens"));
  }
  // Every swept configuration (bf16 only), every token count, against the int8-x emulation.
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    for (int c = 0; c < kNumCfg; ++c) {
      for (int ntok = 1; ntok <= ntok_max; ++ntok) {
        CK(cudaMemset(dout, 0xff, ntok_max * rows * 2));
        launch_cfg_any(kind, c, dw, rows, cols, static_cast<const T*>(dx), ntok, static_cast<T*>(dout), dws, 0);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(oh.data(), dout, ntok_max * rows * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < oh.size(); ++i) of[i] = from_bits<T>(oh[i]);
        const double ee = rel_l2(of.data(), refe.data(), ntok * rows);
        check(ee < tol_emul,
              "cfg " + std::to_string(c) + " " + tag + " ntok " + std::to_string(ntok) + ": err " + std::to_string(ee));
      }
    }
  }
  // v1 (fp32 FMA) for Q4_0 and Q4_K at 1 and 8 tokens: error vs exact x at the output rounding only.
  if (kind == QuantKind::kQ4_0 || kind == QuantKind::kQ4_K) {
    for (int ntok : {1, 8}) {
      CK(cudaMemset(dout, 0xff, ntok_max * rows * 2));
      typename Fp32Dot<T>::Args a{static_cast<const T*>(dx)};
      auto run = [&](auto kc) {
        constexpr QuantKind K = decltype(kc)::value;
        if (ntok == 1) {
          launch_variant<K, 1, 2, 3, Fp32Dot<T>, T>(dw, rows, cols, a, 1, static_cast<T*>(dout), 0);
        } else {
          launch_variant<K, 8, 4, 3, Fp32Dot<T>, T>(dw, rows, cols, a, 8, static_cast<T*>(dout), 0);
        }
      };
      if (kind == QuantKind::kQ4_0) run(std::integral_constant<QuantKind, QuantKind::kQ4_0>{});
      if (kind == QuantKind::kQ4_K) run(std::integral_constant<QuantKind, QuantKind::kQ4_K>{});
      CK(cudaGetLastError());
      CK(cudaDeviceSynchronize());
      CK(cudaMemcpy(oh.data(), dout, ntok_max * rows * 2, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < oh.size(); ++i) of[i] = from_bits<T>(oh[i]);
      const double et = rel_l2(of.data(), ref.data(), ntok * rows);
      check(et < tol_emul, "v1 fp32 " + tag + " ntok " + std::to_string(ntok) + ": err " + std::to_string(et));
    }
  }
  // Dequantize: fp32 bit-identical to the CPU decoder, T equal to its rounding.
  {
    std::vector<float> g(rows * cols);
    CK(cudaMemset(ddq, 0xff, rows * cols * 4));
    CKS(quant_dequantize<float>(kind, dw, rows, cols, static_cast<float*>(ddq), 0));
    CK(cudaMemcpy(g.data(), ddq, g.size() * 4, cudaMemcpyDeviceToHost));
    check(std::memcmp(g.data(), wf.data(), g.size() * 4) == 0, "dequantize f32 " + tag + " not bit-identical");
    std::vector<uint16_t> gh(rows * cols);
    CK(cudaMemset(ddq, 0xff, rows * cols * 2));
    CKS(quant_dequantize<T>(kind, dw, rows, cols, static_cast<T*>(ddq), 0));
    CK(cudaMemcpy(gh.data(), ddq, gh.size() * 2, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t i = 0; i < gh.size(); ++i) bad += gh[i] != to_bits<T>(wf[i]);
    check(bad == 0, "dequantize " + tag + ": " + std::to_string(bad) + " elements differ");
  }
  CK(cudaFree(dw));
  CK(cudaFree(dx));
  CK(cudaFree(dout));
  CK(cudaFree(dws));
  CK(cudaFree(ddq));
}

// ---- timing -----------------------------------------------------------------------------------------------
__global__ void fill_random(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t z = static_cast<uint32_t>(i) * 0x9E3779B9u + seed;
    z ^= z >> 16;
    z *= 0x85EBCA6Bu;
    z ^= z >> 13;
    z *= 0xC2B2AE35u;
    p[i] = z ^ (z >> 16);
  }
}

struct Pool {
  uint8_t* base = nullptr;
  size_t bytes = 0;
};

// Median seconds per launch of `launch(buffer_index)`, captured `per_graph` times in a graph.
double time_graph(const std::function<void(int, cudaStream_t)>& launch, int nbuf, cudaStream_t st) {
  const int per_graph = std::max(20, nbuf);
  for (int i = 0; i < nbuf; ++i) launch(i, st);  // warm up (module load, attributes)
  CK(cudaStreamSynchronize(st));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < per_graph; ++i) launch(i % nbuf, st);
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int rep = 0; rep < 13; ++rep) {
    CK(cudaEventRecord(e0, st));
    CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float m = 0;
    CK(cudaEventElapsedTime(&m, e0, e1));
    if (rep >= 3) ms.push_back(m);
  }
  std::sort(ms.begin(), ms.end());
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  return ms[ms.size() / 2] * 1e-3 / per_graph;
}

struct Shape {
  const char* name;
  int64_t rows, cols;
};
constexpr Shape kShapes[] = {
    {"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096}, {"down", 4096, 14336}, {"lm_head", 128256, 4096}};

int num_buffers(const Pool& pool, size_t bytes) {
  return static_cast<int>(std::clamp<size_t>(pool.bytes / ((bytes + 255) / 256 * 256), 1, 48));
}
const uint8_t* buffer(const Pool& pool, size_t bytes, int i) {
  return pool.base + i * ((bytes + 255) / 256 * 256);
}

}  // namespace qlab
using namespace qlab;

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const bool skip_validation = mode == "--time-only";
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("GPU %s, %d SMs, L2 %d MB, smem/SM %zu KB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              prop.sharedMemPerMultiprocessor >> 10);

  // Validation: every kind, both 16-bit types, odd shapes, every token count.
  if (!skip_validation) {
    for (QuantKind kind : kKinds) {
      const int64_t bs = quant_block_size(kind);
      const std::vector<std::pair<int64_t, int64_t>> shapes = {
          {1, bs}, {7, 3 * bs}, {19, bs == 32 ? 1056 : 2304}, {111, 4096 + bs}, {4097, 4096}};
      double wt = 0, we = 0;
      uint64_t seed = 1234 + static_cast<int>(kind) * 100;
      for (auto [r, c] : shapes) {
        validate<__nv_bfloat16>(kind, r, c, seed++, &wt, &we);
        validate<__half>(kind, r, c, seed++, &wt, &we);
      }
      std::printf("validate %-5s worst rel err: vs exact x %.2e, vs int8-x emulation %.2e\n", quant_kind_name(kind), wt,
                  we);
    }
    std::printf("validation: %d checks, %d failures\n", g_checks, g_failures);
    if (mode == "--validate-only") return g_failures == 0 ? 0 : 1;
  }

  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  Pool pool;
  pool.bytes = size_t{1200} << 20;
  CK(cudaMalloc(&pool.base, pool.bytes));
  fill_random<<<1024, 256, 0, st>>>(reinterpret_cast<uint32_t*>(pool.base), pool.bytes / 4, 77);
  CK(cudaGetLastError());
  // Copy bandwidth (bytes read + written) on 512 MiB.
  void* cdst;
  const size_t cbytes = size_t{512} << 20;
  CK(cudaMalloc(&cdst, cbytes));
  const double tcopy = time_graph(
      [&](int i, cudaStream_t s) {
        CK(cudaMemcpyAsync(cdst, pool.base + i * cbytes, cbytes, cudaMemcpyDeviceToDevice, s));
      },
      2, st);
  const double memcpy_gbs = 2.0 * cbytes / tcopy * 1e-9;
  const double tkcopy = time_graph(
      [&](int i, cudaStream_t s) {
        copy_kernel<<<prop.multiProcessorCount * 8, 512, 0, s>>>(reinterpret_cast<const uint4*>(pool.base + i * cbytes),
                                                                 static_cast<uint4*>(cdst), cbytes / 16);
      },
      2, st);
  const double kcopy_gbs = 2.0 * cbytes / tkcopy * 1e-9;
  const double tread = time_graph(
      [&](int i, cudaStream_t s) {
        read_kernel<<<prop.multiProcessorCount * 8, 512, 0, s>>>(reinterpret_cast<const uint4*>(pool.base + i * cbytes),
                                                                 cbytes / 16, static_cast<uint32_t*>(cdst));
      },
      2, st);
  const double read_gbs = cbytes / tread * 1e-9;
  const double copy_gbs = std::max(memcpy_gbs, kcopy_gbs);
  std::printf(
      "copy 512 MiB (bytes read + written): cudaMemcpyAsync %.0f GB/s, SM copy kernel %.0f GB/s; "
      "read-only kernel %.0f GB/s; reference for %% = %.0f GB/s\n",
      memcpy_gbs, kcopy_gbs, read_gbs, copy_gbs);
  CK(cudaFree(cdst));

  const int64_t max_cols = 14336, max_rows = 128256, max_toks = 256;
  void *dx, *dout, *dws, *ddq;
  CK(cudaMalloc(&dx, max_toks * max_cols * 2));
  CK(cudaMalloc(&dout, max_toks * max_rows * 2));
  CK(cudaMalloc(&dws, quant_gemv_workspace_bytes(max_cols, 8)));
  // x: standard normal values in bf16.
  {
    std::vector<uint16_t> xh(max_toks * max_cols);
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    for (auto& v : xh) v = float_to_bf16(nd(rng));
    CK(cudaMemcpy(dx, xh.data(), xh.size() * 2, cudaMemcpyHostToDevice));
  }
  using BF = __nv_bfloat16;
  auto* x = static_cast<const BF*>(dx);
  auto* out = static_cast<BF*>(dout);

  // Engine GEMV (quant_gemv, bf16) per kind, shape and token count: x quantized in its own launch (kSeparate, the
  // 2026-12-02 path) against inside the GEMV kernel (kInKernel, where x's int8 form fits 64 KB).
  const int toks[4] = {1, 2, 4, 8};
  std::vector<std::string> table;
  double sum_sep[4] = {}, sum_in[4] = {};
  for (int k = 0; k < kNumQuantKinds; ++k) {
    for (int sh = 0; sh < 5; ++sh) {
      const Shape& shape = kShapes[sh];
      const size_t bytes = shape.rows * quant_row_bytes(kKinds[k], shape.cols);
      const int nbuf = num_buffers(pool, bytes);
      char line[400];
      int n =
          std::snprintf(line, sizeof line, "%-5s %-8s %6.1f MB", quant_kind_name(kKinds[k]), shape.name, bytes * 1e-6);
      for (int ti = 0; ti < 4; ++ti) {
        double t[2] = {0, 0};
        for (int m = 0; m < 2; ++m) {
          const QuantGemvX mode = m == 0 ? QuantGemvX::kSeparate : QuantGemvX::kInKernel;
          if (mode == QuantGemvX::kInKernel && 1.25 * toks[ti] * shape.cols > 64 * 1024) continue;
          t[m] = time_graph(
              [&](int i, cudaStream_t s) {
                CKS(quant_gemv<BF>(kKinds[k], buffer(pool, bytes, i), shape.rows, shape.cols, x, toks[ti], out, dws, s,
                                   mode));
              },
              nbuf, st);
        }
        sum_sep[ti] += t[0];
        sum_in[ti] += t[1] > 0 ? t[1] : t[0];
        auto pct = [&](double v) { return 100.0 * bytes / v * 1e-9 / copy_gbs; };
        if (t[1] > 0) {
          n += std::snprintf(line + n, sizeof line - n, " | %6.2f %4.1f%% / %6.2f %4.1f%%", t[0] * 1e6, pct(t[0]),
                             t[1] * 1e6, pct(t[1]));
        } else {
          n += std::snprintf(line + n, sizeof line - n, " | %6.2f %4.1f%% /      -      ", t[0] * 1e6, pct(t[0]));
        }
      }
      std::printf("gemv %s\n", line);
      table.push_back(line);
    }
  }

  // quant_gemm (batched steps) per kind, shape and token count: time, % of copy on the weight bytes, TFLOP/s.
  const int gtoks[4] = {16, 64, 128, 256};
  size_t gws_bytes = 16;
  for (const Shape& shape : kShapes) {
    for (int gt : gtoks) gws_bytes = std::max(gws_bytes, quant_gemm_workspace_bytes(shape.rows, shape.cols, gt));
  }
  void* dgws;
  CK(cudaMalloc(&dgws, gws_bytes));
  std::vector<std::string> gtable;
  for (int k = 0; k < kNumQuantKinds; ++k) {
    for (int sh = 0; sh < 5; ++sh) {
      const Shape& shape = kShapes[sh];
      const size_t bytes = shape.rows * quant_row_bytes(kKinds[k], shape.cols);
      const int nbuf = num_buffers(pool, bytes);
      char line[400];
      int n =
          std::snprintf(line, sizeof line, "%-5s %-8s %6.1f MB", quant_kind_name(kKinds[k]), shape.name, bytes * 1e-6);
      for (int gt : gtoks) {
        const double t = time_graph(
            [&](int i, cudaStream_t s) {
              CKS(quant_gemm<BF>(kKinds[k], buffer(pool, bytes, i), shape.rows, shape.cols, x, gt, out, dgws, s));
            },
            nbuf, st);
        n += std::snprintf(line + n, sizeof line - n, " | %8.2f us %5.1f%% %4.0f TF", t * 1e6,
                           100.0 * bytes / t * 1e-9 / copy_gbs, 2.0 * shape.rows * shape.cols * gt / t * 1e-12);
      }
      std::printf("gemm %s\n", line);
      gtable.push_back(line);
    }
  }

  // Dequantize throughput (bf16 out) on the down shape: bytes read + written.
  std::vector<std::string> dtable;
  CK(cudaMalloc(&ddq, 4096 * 14336 * 2));
  for (QuantKind kind : kKinds) {
    const size_t bytes = 4096 * quant_row_bytes(kind, 14336);
    const int nbuf = num_buffers(pool, bytes);
    const double t = time_graph(
        [&](int i, cudaStream_t s) {
          CKS(quant_dequantize<BF>(kind, buffer(pool, bytes, i), 4096, 14336, static_cast<BF*>(ddq), s));
        },
        nbuf, st);
    const double gbs = (bytes + 4096.0 * 14336 * 2) / t * 1e-9;
    char line[160];
    std::snprintf(line, sizeof line, "%-5s 4096x14336 -> bf16: %7.2f us, %5.0f GB/s read+written, %5.1f%% of copy",
                  quant_kind_name(kind), t * 1e6, gbs, 100 * gbs / copy_gbs);
    dtable.push_back(line);
  }
  CK(cudaDeviceSynchronize());

  std::printf("\n== dequantize ==\n");
  for (auto& l : dtable) std::printf("%s\n", l.c_str());
  std::printf("\n== quant_gemm (bf16 mma.sync, graph replay): time, %% of copy %.0f GB/s on weight bytes, TFLOP/s ==\n",
              copy_gbs);
  std::printf("kind  shape     weights  |   16 tokens | 64 tokens | 128 tokens | 256 tokens\n");
  for (auto& l : gtable) std::printf("%s\n", l.c_str());
  std::printf("\n== quant_gemv totals over kinds and shapes (us): separate x launch / in-kernel x ==\n");
  for (int ti = 0; ti < 4; ++ti) {
    std::printf("ntok %d: %.0f / %.0f\n", toks[ti], sum_sep[ti] * 1e6, sum_in[ti] * 1e6);
  }
  std::printf("\n== quant_gemv (bf16, graph replay): us and %% of copy %.0f GB/s, separate x launch / in-kernel x ==\n",
              copy_gbs);
  std::printf("kind  shape     weights  | ntok 1 | ntok 2 | ntok 4 | ntok 8\n");
  for (auto& l : table) std::printf("%s\n", l.c_str());
  if (!skip_validation) std::printf("validation: %d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
