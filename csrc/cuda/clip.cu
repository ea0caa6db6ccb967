#include <vector>

#include "fastopt/rules/clip.h"

#include "cuda/multi_tensor_apply.cuh"

namespace fastopt::cuda {

namespace {

template <typename T>
struct ScaleOp {
  static constexpr unsigned kWrite = 0b1u;
  math_t<T> coef;
  FASTOPT_HD void prepare() {}
  FASTOPT_HD void operator()(T (&x)[1]) const { scale_rule(x[0], coef); }
};

template <typename T>
struct ClampOp {
  static constexpr unsigned kWrite = 0b1u;
  math_t<T> clip_value;
  FASTOPT_HD void prepare() {}
  FASTOPT_HD void operator()(T (&x)[1]) const { clamp_rule(x[0], clip_value); }
};

__device__ __forceinline__ double combine(NormKind kind, double a, double b) {
  return kind == NormKind::linf ? nan_max(a, b) : a + b;
}

// One partial per block: each thread sums a fixed set of elements, then a fixed-shape tree in
// shared memory; no atomics, so the result is the same bits on every run.
template <typename T, NormKind Kind>
__global__ void __launch_bounds__(kBlock) norm_kernel(Meta<1> meta, double p, double* partial) {
  __shared__ double acc[kBlock];
  int tensor;
  int64_t chunk;
  locate(meta, blockIdx.x, tensor, chunk);
  const int64_t start = chunk * kChunk;
  int64_t n = meta.numel[tensor] - start;
  if (n > kChunk) n = kChunk;
  const T* x = static_cast<const T*>(meta.addr[0][tensor]) + start;
  double a = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) a = combine(Kind, a, norm_term(x[i], Kind, p));
  acc[threadIdx.x] = a;
  __syncthreads();
  for (int width = kBlock / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) acc[threadIdx.x] = combine(Kind, acc[threadIdx.x], acc[threadIdx.x + width]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[meta.first_block + blockIdx.x] = acc[0];
}

double fold(NormKind kind, std::vector<double>& x) {
  const size_t n = x.size();
  if (n == 0) return 0.0;
  for (size_t width = 1; width < n; width *= 2)
    for (size_t i = 0; i + width < n; i += 2 * width)
      x[i] = kind == NormKind::linf ? nan_max(x[i], x[i + width]) : x[i] + x[i + width];
  return x[0];
}

}  // namespace

double norm(const TensorList& tl, DType dtype, NormKind kind, double p, uintptr_t stream) {
  int64_t blocks = 0;
  for (int64_t t = 0; t < tl.n_tensors; ++t) blocks += (tl.numel[t] + kChunk - 1) / kChunk;
  if (blocks == 0) return 0.0;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  void* buf = nullptr;
  check(cudaMallocAsync(&buf, blocks * sizeof(double), s), "allocation");
  double* partial = static_cast<double*>(buf);
  try {
    dispatch_storage(dtype, [&](auto tag) {
      using T = decltype(tag);
      auto run = [&](auto kind_c) {
        for_each_launch<1>(tl, [&](const Meta<1>& meta, int n_blocks) {
          norm_kernel<T, decltype(kind_c)::value><<<n_blocks, kBlock, 0, s>>>(meta, p, partial);
          check(cudaGetLastError(), "kernel launch");
        });
      };
      switch (kind) {
        case NormKind::l2: run(std::integral_constant<NormKind, NormKind::l2>{}); break;
        case NormKind::l1: run(std::integral_constant<NormKind, NormKind::l1>{}); break;
        case NormKind::linf: run(std::integral_constant<NormKind, NormKind::linf>{}); break;
        default: run(std::integral_constant<NormKind, NormKind::lp>{}); break;
      }
    });
  } catch (...) {
    cudaFreeAsync(buf, s);
    throw;
  }
  std::vector<double> host(blocks);
  check(cudaMemcpyAsync(host.data(), partial, blocks * sizeof(double), cudaMemcpyDeviceToHost, s),
        "copy");
  check(cudaFreeAsync(buf, s), "free");
  check(cudaStreamSynchronize(s), "synchronize");
  return fold(kind, host);
}

void scale(const TensorList& tl, DType dtype, double coef, uintptr_t stream) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    multi_tensor_apply<1, T>(tl, ScaleOp<T>{math_t<T>(coef)}, stream);
  });
}

void clamp(const TensorList& tl, DType dtype, double clip_value, uintptr_t stream) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    multi_tensor_apply<1, T>(tl, ClampOp<T>{math_t<T>(clip_value)}, stream);
  });
}

}  // namespace fastopt::cuda
