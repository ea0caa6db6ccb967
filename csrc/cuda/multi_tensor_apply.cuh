// The CUDA multi-tensor driver (the scheme of NVIDIA Apex and torch's _foreach kernels): every
// tensor of a TensorList is cut into chunks of kChunk elements, one thread block per chunk, and
// the per-launch metadata (pointers, sizes, block -> (tensor, chunk) map) travels in the kernel
// arguments, which stay under the 4 KiB parameter limit. A list that does not fit is stepped
// in as many launches as needed; a tensor may straddle two launches.
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
constexpr int kMaxBlocks = 320;          // blocks per launch
constexpr int kParamBytes = 4096;        // kernel parameter space on every supported arch
constexpr int kOpBytes = 320;            // room left for the op's own arguments

// Tensors per launch for an op with N slots: what the parameter space holds.
template <int N>
constexpr int max_tensors() {
  return (kParamBytes - kOpBytes - kMaxBlocks * 5 - 16) / (8 * N + 8);
}

template <int N>
struct Meta {
  void* addr[N][max_tensors<N>()];
  int64_t numel[max_tensors<N>()];
  int32_t block_chunk[kMaxBlocks];
  uint8_t block_tensor[kMaxBlocks];
  int32_t first_block;  // global index of this launch's first block (reductions)
};

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
__device__ __forceinline__ bool aligned(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kIlp)) == 0;
}

// Op: a struct with `static constexpr unsigned kWrite` (bit s set: slot s is stored back),
// `__device__ void prepare()` (per-thread setup, e.g. reading device scalars) and
// `__device__ void operator()(T (&x)[N])` applying the rule to one element's slots in registers.
// Slots whose pointer is null (unused options) are neither loaded nor stored.
template <int N, typename T, typename Op>
__global__ void __launch_bounds__(kBlock) apply_kernel(Meta<N> meta, Op op) {
  const int tensor = meta.block_tensor[blockIdx.x];
  const int64_t start = int64_t(meta.block_chunk[blockIdx.x]) * kChunk;
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
    for (int64_t i = threadIdx.x; i * kIlp < n; i += blockDim.x) {
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
    for (int64_t base = 0; base < n; base += int64_t(blockDim.x) * kIlp) {
#pragma unroll
      for (int k = 0; k < kIlp; ++k) {
        const int64_t i = base + threadIdx.x + int64_t(k) * blockDim.x;
        if (i < n) {
#pragma unroll
          for (int s = 0; s < N; ++s)
            if (ptr[s]) r[k][s] = ptr[s][i];
        }
      }
#pragma unroll
      for (int k = 0; k < kIlp; ++k) {
        const int64_t i = base + threadIdx.x + int64_t(k) * blockDim.x;
        if (i < n) op(r[k]);
      }
#pragma unroll
      for (int k = 0; k < kIlp; ++k) {
        const int64_t i = base + threadIdx.x + int64_t(k) * blockDim.x;
        if (i < n) {
#pragma unroll
          for (int s = 0; s < N; ++s)
            if ((Op::kWrite >> s & 1u) && ptr[s]) ptr[s][i] = r[k][s];
        }
      }
    }
  }
}

// Walks the list and calls launch(meta, n_blocks) for every full (or final) batch of blocks.
template <int N, typename Launch>
void for_each_launch(const TensorList& tl, Launch&& launch) {
  static_assert(sizeof(Meta<N>) + kOpBytes <= kParamBytes, "kernel arguments exceed 4 KiB");
  Meta<N> meta;
  int n_tensors = 0, n_blocks = 0;
  int32_t next_first_block = 0;
  meta.first_block = 0;
  for (int64_t t = 0; t < tl.n_tensors; ++t) {
    const int64_t numel = tl.numel[t];
    if (numel == 0) continue;
    const int64_t chunks = (numel + kChunk - 1) / kChunk;
    for (int s = 0; s < N; ++s)
      meta.addr[s][n_tensors] = s < tl.n_slots ? tl.slot<void>(s, t) : nullptr;
    meta.numel[n_tensors] = numel;
    ++n_tensors;
    for (int64_t c = 0; c < chunks; ++c) {
      meta.block_tensor[n_blocks] = uint8_t(n_tensors - 1);
      meta.block_chunk[n_blocks] = int32_t(c);
      ++n_blocks;
      const bool blocks_full = n_blocks == kMaxBlocks;
      const bool tensors_full = n_tensors == max_tensors<N>() && c == chunks - 1;
      if (blocks_full || tensors_full) {
        launch(meta, n_blocks);
        next_first_block += n_blocks;
        meta.first_block = next_first_block;
        n_blocks = 0;
        if (c != chunks - 1) {  // the tensor continues in the next launch, as its entry 0
          for (int s = 0; s < N; ++s) meta.addr[s][0] = meta.addr[s][n_tensors - 1];
          meta.numel[0] = numel;
          n_tensors = 1;
        } else {
          n_tensors = 0;
        }
      }
    }
  }
  if (n_blocks > 0) launch(meta, n_blocks);
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

// The step count and lr of a capturable optimizer, read once per thread.
struct Scalars {
  double lr, step;
  __device__ __forceinline__ static Scalars read(const DeviceScalars& d, double lr) {
    return {d.lr ? *d.lr : lr, d.step ? *d.step : 0.0};
  }
};

}  // namespace fastopt::cuda
