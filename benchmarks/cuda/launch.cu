// The cost of launching a kernel with the CUDA runtime and no framework around it: the number the
// gpu sheets call launch_overhead_s (eager) and graph_node_overhead_s (inside a CUDA graph).
// Built and run by benchmarks/gpu_device.py (--steps launch_raw) on the GPU machine:
//   nvcc -O2 -o launch launch.cu && ./launch   -> one line of JSON
#include <chrono>
#include <cstdio>
#include <cuda_runtime.h>

__global__ void empty_kernel() {}

static double seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int main() {
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  for (int i = 0; i < 2000; ++i) empty_kernel<<<1, 32, 0, stream>>>();
  cudaStreamSynchronize(stream);

  const int n = 20000;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) empty_kernel<<<1, 32, 0, stream>>>();
  auto t1 = std::chrono::steady_clock::now();
  cudaStreamSynchronize(stream);
  auto t2 = std::chrono::steady_clock::now();

  const int m = 2000;
  auto t3 = std::chrono::steady_clock::now();
  for (int i = 0; i < m; ++i) {
    empty_kernel<<<1, 32, 0, stream>>>();
    cudaStreamSynchronize(stream);
  }
  auto t4 = std::chrono::steady_clock::now();

  // the same n kernels captured as one graph, replayed
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal);
  for (int i = 0; i < n; ++i) empty_kernel<<<1, 32, 0, stream>>>();
  cudaStreamEndCapture(stream, &graph);
  cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphLaunch(exec, stream);
  cudaStreamSynchronize(stream);
  auto t5 = std::chrono::steady_clock::now();
  cudaGraphLaunch(exec, stream);
  auto t6 = std::chrono::steady_clock::now();
  cudaStreamSynchronize(stream);
  auto t7 = std::chrono::steady_clock::now();

  cudaError_t err = cudaGetLastError();
  printf("{\"host_enqueue_s\": %.4g, \"eager_back_to_back_s\": %.4g, \"launch_and_sync_s\": %.4g, "
         "\"graph_launch_host_s\": %.4g, \"graph_node_s\": %.4g, \"kernels\": %d, \"error\": \"%s\"}\n",
         seconds(t0, t1) / n, seconds(t0, t2) / n, seconds(t3, t4) / m, seconds(t5, t6), seconds(t5, t7) / n, n,
         cudaGetErrorString(err));
  return err == cudaSuccess ? 0 : 1;
}
