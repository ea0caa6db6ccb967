// The CPU multi-tensor driver: splits every tensor of a TensorList into fixed-size chunks and
// spreads the chunks over OpenMP threads. Chunk boundaries never depend on the thread count,
// so every result (reductions included) is bitwise the same for any number of threads.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastopt/common.h"
#include "fastopt/tensor_list.h"

#ifndef FASTOPT_ISA
#error "csrc/cpu kernels are compiled once per ISA with -DFASTOPT_ISA=<name>"
#endif

namespace fastopt::cpu {

// 16384 elements: every slot's chunk (64 KiB in float32) of a 5-slot op stays in L2.
constexpr int64_t kChunk = 1 << 14;
// Below this many elements in all, threads cost more than they save.
constexpr int64_t kParallelMin = 1 << 15;

struct Chunks {
  std::vector<int64_t> first;  // first[t] = index of tensor t's first chunk; first[n] = total
  int64_t total_elements = 0;

  explicit Chunks(const TensorList& tl) : first(tl.n_tensors + 1) {
    first[0] = 0;
    for (int64_t t = 0; t < tl.n_tensors; ++t) {
      first[t + 1] = first[t] + (tl.numel[t] + kChunk - 1) / kChunk;
      total_elements += tl.numel[t];
    }
  }
  int64_t count() const { return first.back(); }
};

// Calls f(chunk_index, tensor, begin, end) once for every chunk. Each thread takes one
// contiguous run of chunks (a static schedule) and walks it in order.
template <typename F>
void for_each_chunk(const TensorList& tl, const Chunks& chunks, F&& f) {
  const int64_t total = chunks.count();
  if (total == 0) return;
  const bool parallel = chunks.total_elements >= kParallelMin && total > 1;
#pragma omp parallel if (parallel)
  {
    const int64_t nth = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t lo = total * tid / nth, hi = total * (tid + 1) / nth;
    if (lo < hi) {
      int64_t t = std::upper_bound(chunks.first.begin(), chunks.first.end(), lo) -
                  chunks.first.begin() - 1;
      for (int64_t c = lo; c < hi; ++c) {
        while (chunks.first[t + 1] <= c) ++t;
        const int64_t begin = (c - chunks.first[t]) * kChunk;
        f(c, t, begin, std::min(begin + kChunk, tl.numel[t]));
      }
    }
  }
}

template <typename F>
void for_each_chunk(const TensorList& tl, F&& f) {
  for_each_chunk(tl, Chunks(tl), std::forward<F>(f));
}

// Runs f with a value whose type is the storage type for dtype (float or double).
template <typename F>
void dispatch_float(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); break;
    case DType::f64: f(double{}); break;
    default: break;  // the bindings admit only f32 and f64 for CPU kernels
  }
}

}  // namespace fastopt::cpu
