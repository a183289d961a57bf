// Backend selection and KV-cache sizing.
#include "runtime/backend_factory.h"

#include <algorithm>

namespace anvil {

Expected<std::unique_ptr<Backend>> make_backend(const EngineConfig& config) {
  if (config.device == "cpu") return make_cpu_backend(CpuBackendOptions{.num_threads = config.num_threads});
  if (config.device == "cuda") {
    return unsupported("device 'cuda': the CUDA backend is not available in this build yet");
  }
  return invalid_argument("device must be 'cpu' or 'cuda' (got '" + config.device + "')");
}

Expected<int32_t> plan_kv_blocks(const EngineConfig& config, const ModelConfig& model, int64_t max_model_len,
                                 Backend& backend) {
  const int64_t blocks_per_seq = (max_model_len + config.block_size - 1) / config.block_size;
  return static_cast<int32_t>(std::max<int64_t>(blocks_per_seq, 1));
}

}  // namespace anvil
