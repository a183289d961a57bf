// Helpers for CUDA-vs-CPU op tests: random host data rounded to the device dtype (so both backends see the
// same values), device upload/download, and the relative L2 error used as the pass criterion.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "backends/cuda/cuda_backend.h"

namespace anvil::test {

// Relative L2 error tolerated per device dtype: bf16 keeps 8 mantissa bits, fp16 11.
inline double tolerance(DType dtype) { return dtype == DType::kBF16 ? 1.5e-2 : 3e-3; }

inline std::vector<float> random_values(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Rounds every value to `dtype` and back, so the CPU reference sees exactly what the GPU sees.
inline void round_to(std::vector<float>& v, DType dtype) {
  std::vector<uint16_t> tmp(v.size());
  convert_from_f32(v.data(), dtype, tmp.data(), v.size());
  convert_to_f32(tmp.data(), dtype, v.data(), v.size());
}

inline double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
    den += want[i] * static_cast<double>(want[i]);
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// A pair of backends and owned buffers for one test.
class OpHarness {
 public:
  explicit OpHarness(DType dtype) : OpHarness(CudaBackendOptions{.device_id = 0, .dtype = dtype}) {}
  explicit OpHarness(const CudaBackendOptions& options) : dtype_(options.dtype) {
    cpu_ = make_cpu_backend(CpuBackendOptions{.num_threads = 4});
    auto gpu = make_cuda_backend(options);
    // NOTE: no EXPECT here: a failure recorded before GTEST_SKIP() makes gtest run the test body anyway (it then
    // dereferenced the missing backend and crashed on machines without a GPU). Callers skip with error().
    if (gpu.ok()) {
      gpu_ = std::move(gpu).value();
    } else {
      error_ = gpu.status().to_string();
    }
  }
  bool ok() const { return gpu_ != nullptr; }
  // Why there is no GPU backend ("" when there is one).
  const std::string& error() const { return error_; }
  Backend& cpu() { return *cpu_; }
  Backend& gpu() { return *gpu_; }
  DType dtype() const { return dtype_; }

  // Host fp32 tensor holding `values`.
  Tensor host(const std::vector<float>& values, std::initializer_list<int64_t> shape) {
    Buffer b = Buffer::host(values.size() * 4);
    std::memcpy(b.data(), values.data(), values.size() * 4);
    Tensor t = b.view(DType::kF32, shape);
    buffers_.push_back(std::move(b));
    return t;
  }
  Tensor host_i32(const std::vector<int32_t>& values, std::initializer_list<int64_t> shape) {
    Buffer b = Buffer::host(std::max<size_t>(values.size(), 1) * 4);
    std::memcpy(b.data(), values.data(), values.size() * 4);
    Tensor t = b.view(DType::kI32, shape);
    buffers_.push_back(std::move(b));
    return t;
  }
  // Device tensor in the harness dtype (fp16/bf16) holding `values`.
  Tensor device(const std::vector<float>& values, std::initializer_list<int64_t> shape) {
    std::vector<uint16_t> half(values.size());
    convert_from_f32(values.data(), dtype_, half.data(), values.size());
    auto buf = gpu_->allocate(values.size() * 2);
    EXPECT_TRUE(buf.ok());
    Tensor t = buf->view(dtype_, shape);
    EXPECT_TRUE(gpu_->copy_to_device(half.data(), t).ok());
    buffers_.push_back(std::move(buf).value());
    return t;
  }
  Tensor device_f32(const std::vector<float>& values, std::initializer_list<int64_t> shape) {
    auto buf = gpu_->allocate(values.size() * 4);
    Tensor t = buf->view(DType::kF32, shape);
    EXPECT_TRUE(gpu_->copy_to_device(values.data(), t).ok());
    buffers_.push_back(std::move(buf).value());
    return t;
  }
  Tensor device_i32(const std::vector<int32_t>& values, std::initializer_list<int64_t> shape) {
    auto buf = gpu_->allocate(std::max<size_t>(values.size(), 1) * 4);
    Tensor t = buf->view(DType::kI32, shape);
    EXPECT_TRUE(gpu_->copy_to_device(values.data(), t).ok());
    buffers_.push_back(std::move(buf).value());
    return t;
  }
  // Downloads a device tensor (any float dtype) as fp32.
  std::vector<float> download(const Tensor& t) {
    EXPECT_TRUE(gpu_->synchronize().ok());
    std::vector<float> out(t.numel());
    if (t.dtype == DType::kF32) {
      EXPECT_TRUE(gpu_->copy_to_host(t, out.data()).ok());
    } else {
      std::vector<uint16_t> half(t.numel());
      EXPECT_TRUE(gpu_->copy_to_host(t, half.data()).ok());
      convert_to_f32(half.data(), t.dtype, out.data(), out.size());
    }
    return out;
  }
  std::vector<float> read_host(const Tensor& t) {
    return std::vector<float>(t.ptr<const float>(), t.ptr<const float>() + t.numel());
  }

 private:
  DType dtype_;
  std::unique_ptr<Backend> cpu_;
  std::unique_ptr<Backend> gpu_;
  std::vector<Buffer> buffers_;
  std::string error_;
};

// The paged-cache layout of an attention test batch: sequence s brings seqs[s].first new tokens and has a context
// of seqs[s].second tokens (the new ones included); its blocks are drawn in a shuffled order from a pool with a
// few spare blocks, so a wrong block-table lookup reads someone else's keys.
struct PagedLayout {
  int num_seqs = 0, num_tokens = 0, max_q = 0, max_ctx = 0, max_blocks = 1, num_blocks = 0;
  std::vector<int32_t> tables, qstart{0}, ctxs;
  std::vector<int32_t> positions, slots;  // of the new tokens, in order

  PagedLayout(const std::vector<std::pair<int, int>>& seqs, int block_size, std::mt19937& rng) {
    for (auto [nq, ctx] : seqs) {
      max_blocks = std::max(max_blocks, (ctx + block_size - 1) / block_size);
      num_tokens += nq;
      max_q = std::max(max_q, nq);
      max_ctx = std::max(max_ctx, ctx);
    }
    num_seqs = static_cast<int>(seqs.size());
    num_blocks = num_seqs * max_blocks + 3;
    std::vector<int32_t> perm(num_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    tables.assign(static_cast<size_t>(num_seqs) * max_blocks, 0);
    int next = 0;
    for (int s = 0; s < num_seqs; ++s) {
      auto [nq, ctx] = seqs[s];
      for (int b = 0; b < (ctx + block_size - 1) / block_size; ++b) tables[s * max_blocks + b] = perm[next++];
      for (int i = 0; i < nq; ++i) {
        const int pos = ctx - nq + i;
        positions.push_back(pos);
        slots.push_back(tables[s * max_blocks + pos / block_size] * block_size + pos % block_size);
      }
      qstart.push_back(qstart.back() + nq);
      ctxs.push_back(ctx);
    }
  }

  // The batch's AttentionMetadata on the harness's CPU (gpu = false) or GPU.
  AttentionMetadata metadata(OpHarness& h, int block_size, bool gpu) const {
    AttentionMetadata m;
    m.num_seqs = num_seqs;
    m.max_blocks_per_seq = max_blocks;
    m.block_size = block_size;
    m.max_query_len = max_q;
    m.max_context_len = max_ctx;
    m.query_start = gpu ? h.device_i32(qstart, {num_seqs + 1}) : h.host_i32(qstart, {num_seqs + 1});
    m.context_lens = gpu ? h.device_i32(ctxs, {num_seqs}) : h.host_i32(ctxs, {num_seqs});
    m.block_tables = gpu ? h.device_i32(tables, {num_seqs, max_blocks}) : h.host_i32(tables, {num_seqs, max_blocks});
    m.host_query_start = qstart;  // as the runner's eager steps pass them
    m.host_context_lens = ctxs;
    return m;
  }
};

}  // namespace anvil::test
