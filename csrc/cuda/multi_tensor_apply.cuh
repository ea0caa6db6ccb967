// The CUDA multi-tensor driver (the scheme of NVIDIA Apex and torch's _foreach kernels): every
// tensor of a TensorList is cut into chunks of kChunk elements, one thread block per chunk, and
// the per-launch metadata (pointers, sizes, and each tensor's first block) travels in the
// kernel arguments, under the 4 KiB parameter limit. Blocks find their tensor by a binary
// search over the per-tensor prefix of block counts, so a launch holds any number of blocks
// (large tensors fill the whole GPU in one launch) and only the tensor count per launch is
// bounded; longer lists take as many launches as needed.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/ops.h"
#include "fastopt/common.h"
#include "fastopt/tensor_list.h"

namespace fastopt::cuda {

constexpr int kBlock = 512;
constexpr int kIlp = 4;                  // elements per thread per iteration
constexpr int64_t kChunk = 65536;        // elements per block
constexpr int kParamBytes = 4096;        // kernel parameter space on every supported arch
constexpr int kOpBytes = 320;            // room left for the op's own arguments
constexpr int64_t kMaxBlocks = (int64_t(1) << 31) - 1;  // grid limit in x

// Tensors per launch for an op with N slots: what the parameter space holds.
template <int N>
constexpr int max_tensors() {
  return (kParamBytes - kOpBytes - 16) / (8 * N + 8 + 4);
}

template <int N>
struct Meta {
  void* addr[N][max_tensors<N>()];
  int64_t numel[max_tensors<N>()];
  int32_t block_end[max_tensors<N>()];  // prefix sums of the tensors' block counts
  int32_t n_tensors;
  int32_t first_block;  // global index of this launch's first block (reductions)
};

// (tensor, chunk) of this block: the first tensor whose block_end exceeds blockIdx.x.
template <int N>
__host__ __device__ __forceinline__ void locate(const Meta<N>& meta, int b, int& tensor,
                                                int64_t& chunk) {
  int lo = 0, hi = meta.n_tensors - 1;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (meta.block_end[mid] > b) hi = mid;
    else lo = mid + 1;
  }
  tensor = lo;
  chunk = b - (lo == 0 ? 0 : meta.block_end[lo - 1]);
}

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fastopt CUDA ") + what + ": " + cudaGetErrorString(err));
}

// 16-byte (or, for double, 2 x 16-byte) accesses when every pointer of the chunk is aligned
// to kIlp elements and the chunk is a multiple of kIlp long.
template <typename T>
struct alignas(sizeof(T) * kIlp) Vec {
  T v[kIlp];
};

template <typename T>
FASTOPT_HD bool aligned(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kIlp)) == 0;
}

// Op: a struct with `static constexpr unsigned kWrite` (bit s set: slot s is stored back),
// `FASTOPT_HD void prepare()` (per-thread setup, e.g. reading device scalars) and
// `FASTOPT_HD void operator()(T (&x)[N])` applying the rule to one element's slots in registers.
// Slots whose pointer is null (unused options) are neither loaded nor stored.
// One thread's work for one block; host+device so tests can replay a launch on the CPU.
template <int N, typename T, typename Op>
FASTOPT_HD void apply_block(const Meta<N>& meta, Op& op, int block, int thread, int threads) {
  int tensor;
  int64_t chunk;
  locate(meta, block, tensor, chunk);
  const int64_t start = chunk * kChunk;
  int64_t n = meta.numel[tensor] - start;
  if (n > kChunk) n = kChunk;
  T* ptr[N];
  bool vec = n % kIlp == 0;
#pragma unroll
  for (int s = 0; s < N; ++s) {
    ptr[s] = static_cast<T*>(meta.addr[s][tensor]);
    if (ptr[s]) {
      ptr[s] += start;
      vec = vec && aligned<T>(ptr[s]);
    }
  }
  op.prepare();
  T r[kIlp][N];
  if (vec) {
    for (int64_t i = thread; i * kIlp < n; i += threads) {
#pragma unroll
      for (int s = 0; s < N; ++s)
        if (ptr[s]) {
          const Vec<T> v = reinterpret_cast<const Vec<T>*>(ptr[s])[i];
#pragma unroll
          for (int k = 0; k < kIlp; ++k) r[k][s] = v.v[k];
        }
#pragma unroll
      for (int k = 0; k < kIlp; ++k) op(r[k]);
#pragma unroll
      for (int s = 0; s < N; ++s)
        if ((Op::kWrite >> s & 1u) && ptr[s]) {
          Vec<T> v;
#pragma unroll
          for (int k = 0; k < kIlp; ++k) v.v[k] = r[k][s];
          reinterpret_cast<Vec<T>*>(ptr[s])[i] = v;
        }
    }
  } else {
    for (int64_t base = 0; base < n; base += int64_t(threads) * kIlp) {
#pragma unroll
      for (int k = 0; k < kIlp; ++k) {
        const int64_t i = base + thread + int64_t(k) * threads;
        if (i < n) {
#pragma unroll
          for (int s = 0; s < N; ++s)
            if (ptr[s]) r[k][s] = ptr[s][i];
        }
      }
#pragma unroll
      for (int k = 0; k < kIlp; ++k) {
        const int64_t i = base + thread + int64_t(k) * threads;
        if (i < n) op(r[k]);
      }
#pragma unroll
      for (int k = 0; k < kIlp; ++k) {
        const int64_t i = base + thread + int64_t(k) * threads;
        if (i < n) {
#pragma unroll
          for (int s = 0; s < N; ++s)
            if ((Op::kWrite >> s & 1u) && ptr[s]) ptr[s][i] = r[k][s];
        }
      }
    }
  }
}

template <int N, typename T, typename Op>
__global__ void __launch_bounds__(kBlock) apply_kernel(Meta<N> meta, Op op) {
  apply_block<N, T>(meta, op, blockIdx.x, threadIdx.x, blockDim.x);
}

// Walks the list and calls launch(meta, n_blocks) for every batch of up to max_tensors<N>()
// non-empty tensors (fewer if the batch would exceed the grid limit).
template <int N, typename Launch>
void for_each_launch(const TensorList& tl, Launch&& launch) {
  static_assert(sizeof(Meta<N>) + kOpBytes <= kParamBytes, "kernel arguments exceed 4 KiB");
  Meta<N> meta;
  int n = 0;
  int64_t blocks = 0, first_block = 0;
  auto flush = [&] {
    if (n == 0) return;
    meta.n_tensors = n;
    meta.first_block = int32_t(first_block);
    launch(meta, int(blocks));
    first_block += blocks;
    n = 0;
    blocks = 0;
  };
  for (int64_t t = 0; t < tl.n_tensors; ++t) {
    const int64_t numel = tl.numel[t];
    if (numel == 0) continue;
    const int64_t chunks = (numel + kChunk - 1) / kChunk;
    if (chunks > kMaxBlocks) throw std::invalid_argument("fastopt CUDA: tensor too large");
    if (blocks + chunks > kMaxBlocks) flush();
    for (int s = 0; s < N; ++s)
      meta.addr[s][n] = s < tl.n_slots ? tl.slot<void>(s, t) : nullptr;
    meta.numel[n] = numel;
    blocks += chunks;
    meta.block_end[n] = int32_t(blocks);
    if (++n == max_tensors<N>()) flush();
  }
  flush();
}

template <int N, typename T, typename Op>
void multi_tensor_apply(const TensorList& tl, const Op& op, uintptr_t stream) {
  static_assert(sizeof(Op) <= kOpBytes, "op arguments exceed their share of the 4 KiB");
  for_each_launch<N>(tl, [&](const Meta<N>& meta, int n_blocks) {
    apply_kernel<N, T, Op><<<n_blocks, kBlock, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
        meta, op);
    check(cudaGetLastError(), "kernel launch");
  });
}

// Storage type for each DType code; math stays float for the 16-bit types (math_t).
template <typename F>
void dispatch_storage(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); break;
    case DType::f64: f(double{}); break;
    case DType::f16: f(__half{}); break;
    case DType::bf16: f(__nv_bfloat16{}); break;
    default: throw std::invalid_argument("fastopt CUDA: unknown dtype code");
  }
}

}  // namespace fastopt::cuda
