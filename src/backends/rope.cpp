// Rotary-embedding inverse frequencies, with the scalings Hugging Face applies (linear, llama3).
#include <cmath>
#include <vector>

#include "backends/backend.h"

namespace anvil {

std::vector<float> rope_inv_freq(const RopeConfig& rope, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    // NOTE: computed in fp32 as transformers does (theta ** (arange(0, d, 2).float() / d)).
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(rope.theta, exponent);
  }
  if (rope.scaling == RopeScalingType::kLinear) {
    for (float& f : inv_freq) f /= rope.factor;
  } else if (rope.scaling == RopeScalingType::kLlama3) {
    const float old_len = static_cast<float>(rope.original_max_position_embeddings);
    const float low_freq_wavelen = old_len / rope.low_freq_factor;
    const float high_freq_wavelen = old_len / rope.high_freq_factor;
    const float pi = 3.14159265358979323846f;
    for (float& f : inv_freq) {
      const float wavelen = 2.0f * pi / f;
      float scaled = wavelen > low_freq_wavelen ? f / rope.factor : f;
      const bool is_medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      if (is_medium) {
        const float smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
        scaled = (1.0f - smooth) * scaled / rope.factor + smooth * scaled;
      }
      f = scaled;
    }
  }
  return inv_freq;
}

}  // namespace anvil
