// The CUDA multi-tensor driver (the scheme of NVIDIA Apex and torch's _foreach kernels): every
// tensor of a TensorList is cut into chunks of kChunk elements, one thread block per chunk, and
// the per-launch metadata (pointers, sizes, and each tensor's first block) travels in the
// kernel arguments. Blocks find their tensor by a binary search over the per-tensor prefix of
// block counts, so a launch holds any number of blocks (large tensors fill the whole GPU in one
// launch) and only the tensor count per launch is bounded by the parameter space: 4 KiB on
// every GPU, 32,764 bytes with CUDA >= 12.1 (runtime and driver) on Volta and newer. A list
// that fits one 4 KiB launch uses the 4 KiB kernel (less to copy per launch); a longer one the
// 32 KiB kernel where the device takes it (a 20,000-tensor Adam step: 33 launches, not 278).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/ops.h"
#include "fastopt/common.h"
#include "fastopt/tensor_list.h"

// Built against a runtime that has large kernel parameters (12.1); the driver and the device
// are checked at run time (large_params()).
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12010
#define FASTOPT_LARGE_PARAMS 1
#else
#define FASTOPT_LARGE_PARAMS 0
#endif
#if defined(CUDART_VERSION) && CUDART_VERSION >= 11070
#define FASTOPT_GRID_CONSTANT __grid_constant__
#else
#define FASTOPT_GRID_CONSTANT
#endif

namespace fastopt::cuda {

constexpr int kBlock = 512;
constexpr int kIlp = 4;                  // scalar path: elements per thread per iteration
constexpr int64_t kChunk = 65536;        // elements per block
constexpr int kSmallParams = 4096;       // kernel parameter space on every architecture
constexpr int kLargeParams = 32764;      // CUDA >= 12.1 on sm_70 and newer
constexpr int kOpBytes = 320;            // room left for the op's own arguments
constexpr int64_t kMaxBlocks = (int64_t(1) << 31) - 1;  // grid limit in x

// One launch's tensors for an op with N slots, as many as `Bytes` of parameters hold.
template <int N, int Bytes>
struct Meta {
  static constexpr int kSlots = N;
  static constexpr int kBytes = Bytes;
  static constexpr int kCapacity = (Bytes - kOpBytes - 16) / (8 * N + 8 + 4);
  void* addr[N][kCapacity];
  int64_t numel[kCapacity];
  int32_t block_end[kCapacity];  // prefix sums of the tensors' block counts
  int32_t n_tensors;
  int32_t first_block;  // global index of this launch's first block (reductions)
};

// (tensor, chunk) of this block: the first tensor whose block_end exceeds blockIdx.x.
template <typename MetaT>
__host__ __device__ __forceinline__ void locate(const MetaT& meta, int b, int& tensor,
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

// The vector path: one 16-byte access per slot per thread and iteration (4 floats, 2 doubles,
// 8 halves), when every pointer of the chunk is 16-byte aligned and the chunk is a multiple of
// kVec long; otherwise the scalar path, kIlp elements per thread per iteration.
template <typename T>
constexpr int kVec = 16 / int(sizeof(T));

template <typename T>
struct alignas(16) Vec {
  T v[kVec<T>];
};

FASTOPT_HD bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Op: a struct with `static constexpr unsigned kWrite` (bit s set: slot s is stored back),
// `FASTOPT_HD unsigned writes() const` (kWrite, and any slot a launch stores besides: the
// optimizers' grad when they unscale it), `FASTOPT_HD void prepare()` (per-thread setup, e.g. reading a coefficient from device
// memory) and `FASTOPT_HD void operator()(T (&x)[N])` applying the rule to one
// element's slots in registers. Slots whose pointer is null (unused options) are neither
// loaded nor stored. One thread's work for one block; host+device so tests can replay a launch
// on the CPU.
template <int N, typename T, typename MetaT, typename Op>
FASTOPT_HD void apply_block(const MetaT& meta, Op& op, int block, int thread, int threads) {
  int tensor;
  int64_t chunk;
  locate(meta, block, tensor, chunk);
  const int64_t start = chunk * kChunk;
  int64_t n = meta.numel[tensor] - start;
  if (n > kChunk) n = kChunk;
  constexpr int V = kVec<T>;
  T* ptr[N];
  bool vec = n % V == 0;
#pragma unroll
  for (int s = 0; s < N; ++s) {
    ptr[s] = static_cast<T*>(meta.addr[s][tensor]);
    if (ptr[s]) {
      ptr[s] += start;
      vec = vec && aligned16(ptr[s]);
    }
  }
  op.prepare();
  const unsigned writes = op.writes();
  if (vec) {
    T r[V][N];
    for (int64_t i = thread; i * V < n; i += threads) {
#pragma unroll
      for (int s = 0; s < N; ++s)
        if (ptr[s]) {
          const Vec<T> v = reinterpret_cast<const Vec<T>*>(ptr[s])[i];
#pragma unroll
          for (int k = 0; k < V; ++k) r[k][s] = v.v[k];
        }
#pragma unroll
      for (int k = 0; k < V; ++k) op(r[k]);
#pragma unroll
      for (int s = 0; s < N; ++s)
        if ((writes >> s & 1u) && ptr[s]) {
          Vec<T> v;
#pragma unroll
          for (int k = 0; k < V; ++k) v.v[k] = r[k][s];
          reinterpret_cast<Vec<T>*>(ptr[s])[i] = v;
        }
    }
  } else {
    T r[kIlp][N];
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
            if ((writes >> s & 1u) && ptr[s]) ptr[s][i] = r[k][s];
        }
      }
    }
  }
}

// __grid_constant__: the metadata is read in place from the parameter space, never copied to
// local memory, although apply_block indexes it with run-time values.
template <int N, typename T, typename MetaT, typename Op>
__global__ void __launch_bounds__(kBlock) apply_kernel(const FASTOPT_GRID_CONSTANT MetaT meta,
                                                       const FASTOPT_GRID_CONSTANT Op op0) {
  Op op = op0;
  apply_block<N, T>(meta, op, blockIdx.x, threadIdx.x, blockDim.x);
}

// Walks the list and calls launch(meta, n_blocks) for every batch of up to MetaT::kCapacity
// non-empty tensors (fewer if the batch would exceed the grid limit).
template <typename MetaT, typename Launch>
void plan_launches(const TensorList& tl, Launch&& launch) {
  constexpr int N = MetaT::kSlots;
  static_assert(sizeof(MetaT) + kOpBytes <= MetaT::kBytes, "kernel arguments exceed the space");
  MetaT meta;
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
    if (numel <= 0) continue;
    const int64_t chunks = (numel + kChunk - 1) / kChunk;
    if (chunks > kMaxBlocks) throw std::invalid_argument("fastopt CUDA: tensor too large");
    if (blocks + chunks > kMaxBlocks) flush();
    for (int s = 0; s < N; ++s)
      meta.addr[s][n] = s < tl.n_slots ? tl.slot<void>(s, t) : nullptr;
    meta.numel[n] = numel;
    blocks += chunks;
    meta.block_end[n] = int32_t(blocks);
    if (++n == MetaT::kCapacity) flush();
  }
  flush();
}

// The launches of one list: with `large` (the device takes kLargeParams), a list longer than
// one 4 KiB launch holds goes in 32 KiB launches; everything else in 4 KiB ones. `launch` is
// called with a Meta<N, kSmallParams> or a Meta<N, kLargeParams>.
template <int N, typename Launch>
void for_each_launch(const TensorList& tl, bool large, Launch&& launch) {
#if FASTOPT_LARGE_PARAMS
  if (large) {
    int64_t nonempty = 0;
    for (int64_t t = 0; t < tl.n_tensors; ++t) nonempty += tl.numel[t] > 0;
    if (nonempty > Meta<N, kSmallParams>::kCapacity)
      return plan_launches<Meta<N, kLargeParams>>(tl, launch);
  }
#else
  (void)large;
#endif
  plan_launches<Meta<N, kSmallParams>>(tl, launch);
}

template <int N, typename T, typename Op>
void multi_tensor_apply(const TensorList& tl, const Op& op, uintptr_t stream) {
  static_assert(sizeof(Op) <= kOpBytes, "op arguments exceed their share of the parameters");
  for_each_launch<N>(tl, large_params(), [&](const auto& meta, int n_blocks) {
    using MetaT = std::decay_t<decltype(meta)>;
    apply_kernel<N, T, MetaT, Op>
        <<<n_blocks, kBlock, 0, reinterpret_cast<cudaStream_t>(stream)>>>(meta, op);
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
