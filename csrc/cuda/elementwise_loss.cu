// Element-wise losses on the GPU (mse, l1, huber, smooth_l1, bce, bce_with_logits, kl_div):
// one pass that reads input and target, writes the gradient (and the element losses for
// reduction='none') and sums the loss.
//
// The sum is deterministic: the grid depends only on n (at most kLossMaxBlocks blocks of
// kLossBlock threads), thread (b, t) takes elements b * kLossBlock + t + k * stride in
// increasing k and adds them in float64, each block folds its threads in a fixed tree into one
// partial, and the host adds the partials in the CPU kernels' pairwise order. No atomics, so
// the bits do not depend on scheduling.
//
// The per-thread loop (LossThread::sum) is a host+device function, so that
// tests/cuda_loss_emulation.cu replays every thread of a launch on the CPU in the same order.
#include <vector>

#include "cpu/reduce.h"
#include "cuda/multi_tensor_apply.cuh"
#include "fastopt/rules/elementwise_loss.h"

namespace fastopt::cuda {

constexpr int kLossBlock = 256;
// 1024 x 256 threads fill an H100/H200 (132 SMs x 2048 threads) about once: enough loads in
// flight to stream at DRAM speed, and at most 8 KiB of partials to copy back
constexpr int64_t kLossMaxBlocks = 1024;

FASTOPT_HD int64_t loss_blocks(int64_t n) {
  const int64_t b = (n + kLossBlock - 1) / kLossBlock;
  return b < kLossMaxBlocks ? b : kLossMaxBlocks;
}

template <PointLoss K, typename T>
struct LossThread {
  using M = math_t<T>;
  PointLossArgs a;

  FASTOPT_HD double one(int64_t i) const {
    const T* x = static_cast<const T*>(a.input);
    const T* y = static_cast<const T*>(a.target);
    const T* w = static_cast<const T*>(a.weight);
    const T* pw = static_cast<const T*>(a.pos_weight);
    M loss, dloss;
    point_loss<K>(M(x[i]), M(y[i]), M(a.param), pw ? M(pw[i % a.pos_weight_period]) : M(1), loss,
                  dloss);
    const M wv = w ? M(w[i % a.weight_period]) : M(1);
    loss *= wv;
    if (a.grad) static_cast<T*>(a.grad)[i] = T(M(a.grad_scale) * wv * dloss);
    if (a.out) static_cast<T*>(a.out)[i] = T(loss);
    return double(loss);
  }

  // The loss sum of thread `first` of a launch whose threads are `stride` apart; four
  // elements in flight per iteration (independent loads), added in element order.
  FASTOPT_HD double sum(int64_t first, int64_t stride) const {
    double acc = 0.0;
    int64_t i = first;
    for (; i + 3 * stride < a.n; i += 4 * stride) {
      const double l0 = one(i), l1 = one(i + stride), l2 = one(i + 2 * stride),
                   l3 = one(i + 3 * stride);
      acc += l0;
      acc += l1;
      acc += l2;
      acc += l3;
    }
    for (; i < a.n; i += stride) acc += one(i);
    return acc;
  }
};

template <PointLoss K, typename T>
__global__ void __launch_bounds__(kLossBlock)
    elementwise_loss_kernel(LossThread<K, T> th, double* partial) {
  __shared__ double acc[kLossBlock];
  const int t = threadIdx.x;
  acc[t] = th.sum(int64_t(blockIdx.x) * kLossBlock + t, int64_t(gridDim.x) * kLossBlock);
  __syncthreads();
  for (int w = kLossBlock / 2; w > 0; w /= 2) {
    if (t < w) acc[t] += acc[t + w];
    __syncthreads();
  }
  if (t == 0) partial[blockIdx.x] = acc[0];
}

namespace {

template <PointLoss K, typename T>
double run(const PointLossArgs& a, uintptr_t stream) {
  if (a.n == 0) return 0.0;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const int64_t blocks = loss_blocks(a.n);
  void* buf = nullptr;
  check(cudaMallocAsync(&buf, blocks * sizeof(double), s), "allocation");
  elementwise_loss_kernel<K, T>
      <<<unsigned(blocks), kLossBlock, 0, s>>>(LossThread<K, T>{a}, static_cast<double*>(buf));
  const cudaError_t launched = cudaGetLastError();
  if (launched != cudaSuccess) {
    cudaFreeAsync(buf, s);
    check(launched, "kernel launch");
  }
  std::vector<double> partial(blocks);
  check(cudaMemcpyAsync(partial.data(), buf, blocks * sizeof(double), cudaMemcpyDeviceToHost, s),
        "copy");
  check(cudaFreeAsync(buf, s), "free");
  check(cudaStreamSynchronize(s), "synchronize");
  return cpu::pairwise_sum(partial.data(), blocks);
}

}  // namespace

double elementwise_loss(const PointLossArgs& a, DType dtype, PointLoss kind, uintptr_t stream) {
  if (dtype != DType::f64 && dtype != DType::f32)
    throw std::invalid_argument("fastopt CUDA element-wise losses take float32 or float64");
  return with_point_loss(kind, [&](auto k) {
    constexpr PointLoss K = decltype(k)::value;
    return dtype == DType::f64 ? run<K, double>(a, stream) : run<K, float>(a, stream);
  });
}

}  // namespace fastopt::cuda
