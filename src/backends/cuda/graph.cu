// CUDA graph capture and replay of a whole forward pass (decode steps): one launch instead of hundreds.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

class CudaGraph final : public CapturedGraph {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t stream) : exec_(exec), stream_(stream) {}
  ~CudaGraph() override { cudaGraphExecDestroy(exec_); }
  Status replay() override { return cuda_status(cudaGraphLaunch(exec_, stream_), "cudaGraphLaunch"); }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
};

}  // namespace

Expected<std::unique_ptr<CapturedGraph>> CudaBackend::capture(const std::function<Status()>& record) {
  ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin capture");
  Status recorded = record();
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
  if (!recorded.ok()) {
    if (graph) cudaGraphDestroy(graph);
    return recorded;
  }
  ANVIL_CUDA_RETURN_IF_ERROR(end, "end capture");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  ANVIL_CUDA_RETURN_IF_ERROR(inst, "instantiate graph");
  return std::unique_ptr<CapturedGraph>(new CudaGraph(exec, stream_));
}

}  // namespace anvil::cuda
