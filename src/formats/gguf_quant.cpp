// Dequantization of ggml blocks to fp32, one decoder per block layout. Each decoder does the float operations of
// gguf-py's numpy code in the same order (fp16 scale widened to fp32, then fp32 multiplies and adds, each rounded),
// which is what makes the results bit-identical. Little-endian throughout; "f16" is an IEEE half.
#include "formats/gguf_quant.h"

// NOTE: the compiler may fuse d * q + m into one FMA (GCC does at -O2 with -march=x86-64-v3) where numpy rounds
// twice; the results are still identical because every product that feeds an add is exact in fp32: an f16 scale
// has 11 significant bits, so d * q (q < 32) has at most 16, and (d * sc) * q and dmin * m in the K formats
// (sc, m < 64, q < 32) at most 22. With no rounding in the product, fma(a, b, c) == (a * b) + c. Checked: the
// bit-exact tests pass with contraction forced on and off.
#include <cstring>
#include <string>

#include "core/dtype.h"

namespace anvil {

namespace {

constexpr int kQK = 32;     // elements per block of the legacy formats (Q4_0 ... Q8_0)
constexpr int kQK_K = 256;  // elements per super-block of the K formats

float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_float(h);
}

// F16: a bare IEEE half per element.
void dequant_f16(const uint8_t* x, float* y, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) y[i] = load_f16(x + 2 * i);
}

// BF16: the top 16 bits of an fp32.
void dequant_bf16(const uint8_t* x, float* y, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, x + 2 * i, 2);
    y[i] = bf16_to_float(h);
  }
}

// Q4_0, 32 elements in 18 bytes: f16 d | u8 qs[16].
// Element j (0..15) is the low nibble of qs[j], element j + 16 its high nibble; y = d * (q - 8).
void block_q4_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>(static_cast<int>(qs[j] & 0x0f) - 8);
    y[j + kQK / 2] = d * static_cast<float>(static_cast<int>(qs[j] >> 4) - 8);
  }
}

// Q4_1, 32 elements in 20 bytes: f16 d | f16 m | u8 qs[16].
// Nibbles as in Q4_0, unsigned; y = d * q + m.
void block_q4_1(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>(qs[j] & 0x0f) + m;
    y[j + kQK / 2] = d * static_cast<float>(qs[j] >> 4) + m;
  }
}

// Q5_0, 32 elements in 22 bytes: f16 d | u32 qh | u8 qs[16].
// Low four bits as in Q4_0; bit 4 of element i is bit i of qh; y = d * (q - 16).
void block_q5_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < kQK / 2; ++j) {
    const int lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + kQK / 2)) & 1u) << 4);
    y[j] = d * static_cast<float>(lo - 16);
    y[j + kQK / 2] = d * static_cast<float>(hi - 16);
  }
}

// Q5_1, 32 elements in 24 bytes: f16 d | f16 m | u32 qh | u8 qs[16].
// 5-bit q as in Q5_0, unsigned; y = d * q + m.
void block_q5_1(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < kQK / 2; ++j) {
    const uint32_t lo = (qs[j] & 0x0fu) | (((qh >> j) & 1u) << 4);
    const uint32_t hi = (qs[j] >> 4) | (((qh >> (j + kQK / 2)) & 1u) << 4);
    y[j] = d * static_cast<float>(lo) + m;
    y[j + kQK / 2] = d * static_cast<float>(hi) + m;
  }
}

// Q8_0, 32 elements in 34 bytes: f16 d | i8 qs[32]; y = q * d.
void block_q8_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block, packed in 12 bytes:
//   bytes 0-3:  scale[0..3] in bits 0-5, bits 4-5 of scale[4..7] in bits 6-7
//   bytes 4-7:  min[0..3] in bits 0-5,   bits 4-5 of min[4..7] in bits 6-7
//   bytes 8-11: low four bits of scale[4..7] in bits 0-3, of min[4..7] in bits 4-7
void k_scale_min(const uint8_t* s, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 63;
    *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 0x0f) | ((s[j - 4] >> 2) & 0x30);
    *min = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
  }
}

// Q4_K, 256 elements in 144 bytes: f16 d | f16 dmin | u8 scales[12] | u8 qs[128].
// Eight sub-blocks of 32, each with a 6-bit scale sc and min m (k_scale_min). Sub-block 2c takes the low nibbles
// of qs[32c .. 32c+31] and sub-block 2c+1 the high nibbles; y = (d * sc) * q - (dmin * m).
void block_q4_k(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int s = 0; s < 8; ++s) {
    int sc = 0, m = 0;
    k_scale_min(scales, s, &sc, &m);
    const float ds = d * static_cast<float>(sc);
    const float dm = dmin * static_cast<float>(m);
    const uint8_t* q = qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int i = 0; i < 32; ++i) y[32 * s + i] = ds * static_cast<float>((q[i] >> shift) & 0x0f) - dm;
  }
}

// Q5_K, 256 elements in 176 bytes: f16 d | f16 dmin | u8 scales[12] | u8 qh[32] | u8 qs[128].
// Low four bits as in Q4_K; bit 4 of element i of sub-block s is bit s of qh[i];
// y = (d * sc) * q - (dmin * m).
void block_q5_k(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int s = 0; s < 8; ++s) {
    int sc = 0, m = 0;
    k_scale_min(scales, s, &sc, &m);
    const float ds = d * static_cast<float>(sc);
    const float dm = dmin * static_cast<float>(m);
    const uint8_t* q = qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int i = 0; i < 32; ++i) {
      const int v = ((q[i] >> shift) & 0x0f) | (((qh[i] >> s) & 1) << 4);
      y[32 * s + i] = ds * static_cast<float>(v) - dm;
    }
  }
}

// Q6_K, 256 elements in 210 bytes: u8 ql[128] | u8 qh[64] | i8 scales[16] | f16 d.
// Two halves of 128 elements; element e = 128h + 32g + i (g 0..3, i 0..31) takes
//   low four bits: ql[64h + 32(g % 2) + i], low nibble for g < 2, high nibble for g >= 2
//   high two bits: bits 2g, 2g+1 of qh[32h + i]
// and scale scales[e / 16]; y = (d * scale) * (q - 32).
void block_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_f16(b + 208);
  float ds[16];
  for (int k = 0; k < 16; ++k) ds[k] = d * static_cast<float>(scales[k]);
  for (int e = 0; e < kQK_K; ++e) {
    const int h = e / 128, g = (e % 128) / 32, i = e % 32;
    const int lo = (ql[64 * h + 32 * (g % 2) + i] >> (4 * (g / 2))) & 0x0f;
    const int hi = (qh[32 * h + i] >> (2 * g)) & 0x03;
    y[e] = ds[e / 16] * static_cast<float>((lo | (hi << 4)) - 32);
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_fn(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return block_q4_0;
    case GgmlType::kQ4_1:
      return block_q4_1;
    case GgmlType::kQ5_0:
      return block_q5_0;
    case GgmlType::kQ5_1:
      return block_q5_1;
    case GgmlType::kQ8_0:
      return block_q8_0;
    case GgmlType::kQ4_K:
      return block_q4_k;
    case GgmlType::kQ5_K:
      return block_q5_k;
    case GgmlType::kQ6_K:
      return block_q6_k;
    default:
      return nullptr;
  }
}

}  // namespace

std::optional<DType> quantized_dtype(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return DType::kQ4_0;
    case GgmlType::kQ4_1:
      return DType::kQ4_1;
    case GgmlType::kQ5_0:
      return DType::kQ5_0;
    case GgmlType::kQ5_1:
      return DType::kQ5_1;
    case GgmlType::kQ8_0:
      return DType::kQ8_0;
    case GgmlType::kQ4_K:
      return DType::kQ4_K;
    case GgmlType::kQ5_K:
      return DType::kQ5_K;
    case GgmlType::kQ6_K:
      return DType::kQ6_K;
    default:
      return std::nullopt;
  }
}

GgmlType ggml_type_of(DType dtype) {
  switch (dtype) {
    case DType::kQ4_0:
      return GgmlType::kQ4_0;
    case DType::kQ4_1:
      return GgmlType::kQ4_1;
    case DType::kQ5_0:
      return GgmlType::kQ5_0;
    case DType::kQ5_1:
      return GgmlType::kQ5_1;
    case DType::kQ8_0:
      return GgmlType::kQ8_0;
    case DType::kQ4_K:
      return GgmlType::kQ4_K;
    case DType::kQ5_K:
      return GgmlType::kQ5_K;
    case DType::kQ6_K:
      return GgmlType::kQ6_K;
    default:
      return GgmlType::kF32;
  }
}

void dequantize_rows(DType dtype, const void* src, int64_t num_rows, int64_t cols, float* dst) {
  const BlockFn fn = block_fn(ggml_type_of(dtype));
  const int64_t block = dtype_block_size(dtype);
  const size_t block_bytes = dtype_block_bytes(dtype);
  const int64_t num_blocks = num_rows * (cols / block);
  const auto* s = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < num_blocks; ++i) fn(s + static_cast<size_t>(i) * block_bytes, dst + i * block);
}

bool can_dequantize(GgmlType type) {
  return type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16 || block_fn(type) != nullptr;
}

Status dequantize_gguf(GgmlType type, const uint8_t* src, uint64_t src_bytes, float* dst, uint64_t numel) {
  const uint32_t type_id = static_cast<uint32_t>(type);
  if (!can_dequantize(type)) {
    return unsupported("dequantize: ggml type " + ggml_type_name(type_id) + " (" + std::to_string(type_id) +
                       ") is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, "
                       "Q6_K)");
  }
  const GgmlTypeTraits* traits = ggml_type_traits(type_id);
  if (numel % traits->block_size != 0) {
    return invalid_argument("dequantize: " + std::to_string(numel) + " elements is not a multiple of the " +
                            traits->name + " block size " + std::to_string(traits->block_size));
  }
  const uint64_t num_blocks = numel / traits->block_size;
  uint64_t need = 0;
  if (__builtin_mul_overflow(num_blocks, uint64_t{traits->type_size}, &need) || need != src_bytes) {
    return invalid_argument("dequantize: " + std::to_string(numel) + " " + traits->name + " elements need " +
                            std::to_string(need) + " bytes, got " + std::to_string(src_bytes));
  }
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(src_bytes));
      return Status();
    case GgmlType::kF16:
      dequant_f16(src, dst, numel);
      return Status();
    case GgmlType::kBF16:
      dequant_bf16(src, dst, numel);
      return Status();
    default:
      break;
  }
  const BlockFn fn = block_fn(type);
  const int64_t n = static_cast<int64_t>(num_blocks);
  const uint64_t block_bytes = traits->type_size;
  const uint64_t block_elems = traits->block_size;
#pragma omp parallel for schedule(static) if (n > 4096)
  for (int64_t i = 0; i < n; ++i) fn(src + static_cast<uint64_t>(i) * block_bytes, dst + i * block_elems);
  return Status();
}

}  // namespace anvil
