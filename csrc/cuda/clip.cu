#include <vector>

#include "fastopt/rules/clip.h"

#include "cuda/multi_tensor_apply.cuh"

namespace fastopt::cuda {

enum class Pointwise { scale, clamp };

// One rule in place with a value from the host: scale_rule (x * coef) or clamp_rule.
template <typename T, Pointwise K>
struct PointwiseOp {
  static constexpr unsigned kWrite = 0b1u;
  math_t<T> value;
  FASTOPT_HD unsigned writes() const { return kWrite; }
  FASTOPT_HD void prepare() {}
  FASTOPT_HD void operator()(T (&x)[1]) const {
    if constexpr (K == Pointwise::scale) scale_rule(x[0], value);
    else clamp_rule(x[0], value);
  }
};
template <typename T>
using ScaleOp = PointwiseOp<T, Pointwise::scale>;
template <typename T>
using ClampOp = PointwiseOp<T, Pointwise::clamp>;

// The coefficient from device memory (capturable clipping), rounded as ScaleOp's host value.
template <typename T>
struct ScaleByOp {
  static constexpr unsigned kWrite = 0b1u;
  const double* coef_ptr;
  math_t<T> coef = 0;
  FASTOPT_HD unsigned writes() const { return kWrite; }
  FASTOPT_HD void prepare() { coef = math_t<T>(*coef_ptr); }
  FASTOPT_HD void operator()(T (&x)[1]) const { scale_rule(x[0], coef); }
};

FASTOPT_HD double combine(NormKind kind, double a, double b) {
  return kind == NormKind::linf ? nan_max(a, b) : a + b;
}

// One thread's share of its block's partial: elements thread, thread + threads, ... of the
// block's chunk, in that order. The block then folds the threads' values in a fixed tree.
template <typename T, typename MetaT>
FASTOPT_HD double norm_thread(const MetaT& meta, NormKind kind, double p, int block, int thread,
                              int threads) {
  int tensor;
  int64_t chunk;
  locate(meta, block, tensor, chunk);
  const int64_t start = chunk * kChunk;
  int64_t n = meta.numel[tensor] - start;
  if (n > kChunk) n = kChunk;
  const T* x = static_cast<const T*>(meta.addr[0][tensor]) + start;
  double a = 0.0;
  for (int64_t i = thread; i < n; i += threads) a = combine(kind, a, norm_term(x[i], kind, p));
  return a;
}

// The norm and the clip coefficient from the folded sum: out[0] = norm, out[1] = coef.
FASTOPT_HD void norm_result(NormKind kind, double p, double max_norm, double sum, double* out) {
  double total = sum;
  if (kind == NormKind::l2) total = std::sqrt(sum);
  else if (kind == NormKind::lp) total = std::pow(sum, 1.0 / p);
  const double coef = max_norm / (total + 1e-6);
  out[0] = total;
  out[1] = total != total ? total : (coef < 1.0 ? coef : 1.0);
}

// One level of the fold of n partials: x[i] = combine(x[i], x[i + width]) for i = 0, 2 width,
// 4 width, ... (levels width = 1, 2, 4, ...): the same pairs as the host fold below.
FASTOPT_HD void fold_level(double* x, int64_t n, int64_t width, NormKind kind, int64_t first,
                           int64_t stride) {
  for (int64_t i = 2 * width * first; i + width < n; i += 2 * width * stride)
    x[i] = combine(kind, x[i], x[i + width]);
}

namespace {

// One partial per block: each thread sums a fixed set of elements, then a fixed-shape tree in
// shared memory; no atomics, so the result is the same bits on every run.
template <typename T, NormKind Kind, typename MetaT>
__global__ void __launch_bounds__(kBlock) norm_kernel(const FASTOPT_GRID_CONSTANT MetaT meta,
                                                      double p, double* partial) {
  __shared__ double acc[kBlock];
  acc[threadIdx.x] = norm_thread<T>(meta, Kind, p, blockIdx.x, threadIdx.x, blockDim.x);
  __syncthreads();
  for (int width = kBlock / 2; width > 0; width /= 2) {
    if (threadIdx.x < width)
      acc[threadIdx.x] = combine(Kind, acc[threadIdx.x], acc[threadIdx.x + width]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[meta.first_block + blockIdx.x] = acc[0];
}

constexpr int kFinishBlock = 1024;

__global__ void __launch_bounds__(kFinishBlock)
    norm_finish_kernel(double* x, int64_t n, NormKind kind, double p, double max_norm,
                       double* out) {
  for (int64_t width = 1; width < n; width *= 2) {
    fold_level(x, n, width, kind, threadIdx.x, blockDim.x);
    __syncthreads();  // also makes this block's global writes visible to the next level
  }
  if (threadIdx.x == 0) norm_result(kind, p, max_norm, n > 0 ? x[0] : 0.0, out);
}

double fold(NormKind kind, std::vector<double>& x) {
  const int64_t n = int64_t(x.size());
  if (n == 0) return 0.0;
  for (int64_t width = 1; width < n; width *= 2) fold_level(x.data(), n, width, kind, 0, 1);
  return x[0];
}

template <typename F>
void with_kind(NormKind kind, F&& f) {
  switch (kind) {
    case NormKind::l2: f(std::integral_constant<NormKind, NormKind::l2>{}); break;
    case NormKind::l1: f(std::integral_constant<NormKind, NormKind::l1>{}); break;
    case NormKind::linf: f(std::integral_constant<NormKind, NormKind::linf>{}); break;
    default: f(std::integral_constant<NormKind, NormKind::lp>{}); break;
  }
}

template <Pointwise K>
void pointwise(const TensorList& tl, DType dtype, double value, uintptr_t stream) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    multi_tensor_apply<1, T>(tl, PointwiseOp<T, K>{math_t<T>(value)}, stream);
  });
}

}  // namespace

int64_t norm_blocks(const TensorList& tl) {
  int64_t blocks = 0;
  for (int64_t t = 0; t < tl.n_tensors; ++t)
    if (tl.numel[t] > 0) blocks += (tl.numel[t] + kChunk - 1) / kChunk;
  return blocks;
}

void norm_partials(const TensorList& tl, DType dtype, NormKind kind, double p, double* partial,
                   uintptr_t stream) {
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_kind(kind, [&](auto kind_c) {
      for_each_launch<1>(tl, large_params(), [&](const auto& meta, int n_blocks) {
        using MetaT = std::decay_t<decltype(meta)>;
        norm_kernel<T, decltype(kind_c)::value, MetaT><<<n_blocks, kBlock, 0, s>>>(meta, p,
                                                                                  partial);
        check(cudaGetLastError(), "kernel launch");
      });
    });
  });
}

void norm_finish(double* partial, int64_t n, NormKind kind, double p, double max_norm,
                 double* out, uintptr_t stream) {
  norm_finish_kernel<<<1, kFinishBlock, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      partial, n, kind, p, max_norm, out);
  check(cudaGetLastError(), "kernel launch");
}

double norm(const TensorList& tl, DType dtype, NormKind kind, double p, uintptr_t stream) {
  const int64_t blocks = norm_blocks(tl);
  if (blocks == 0) return 0.0;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  void* buf = nullptr;
  check(cudaMallocAsync(&buf, blocks * sizeof(double), s), "allocation");
  try {
    norm_partials(tl, dtype, kind, p, static_cast<double*>(buf), stream);
  } catch (...) {
    cudaFreeAsync(buf, s);
    throw;
  }
  std::vector<double> host(blocks);
  check(cudaMemcpyAsync(host.data(), buf, blocks * sizeof(double), cudaMemcpyDeviceToHost, s),
        "copy");
  check(cudaFreeAsync(buf, s), "free");
  check(cudaStreamSynchronize(s), "synchronize");
  return fold(kind, host);
}

void scale(const TensorList& tl, DType dtype, double coef, uintptr_t stream) {
  pointwise<Pointwise::scale>(tl, dtype, coef, stream);
}

void scale_by(const TensorList& tl, DType dtype, const double* coef, uintptr_t stream) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    multi_tensor_apply<1, T>(tl, ScaleByOp<T>{coef}, stream);
  });
}

void clamp(const TensorList& tl, DType dtype, double clip_value, uintptr_t stream) {
  pointwise<Pointwise::clamp>(tl, dtype, clip_value, stream);
}

}  // namespace fastopt::cuda
