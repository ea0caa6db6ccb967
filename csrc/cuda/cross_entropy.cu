// Fused softmax cross-entropy on the GPU: one block per row, two sweeps over the row.
//   sweep 1: every thread keeps an online (max, sum of exps) over its strided elements (and,
//            for probability targets, the sum of t_c); the block folds them in a fixed tree.
//   sweep 2: the gradient is written and, where the loss needs it, sum_c t_c (x_c - max) is
//            accumulated in the same pass.
// So DRAM sees one read of the logits and one write of the gradient (8 bytes per fp32 element:
// sweep 2 re-reads the row while it is still in L2). Each row writes its own loss; the rows
// are then summed on the host by the same fixed-order pairwise fold as the CPU kernels, so the
// reduced loss does not depend on scheduling. Targets are validated, and mean's denominator
// formed, on the host before any gradient is written (as the CPU kernel does).
//
// The per-thread sweeps and the block folds are host+device functions so that
// tests/cuda_kernel_emulation.cu replays a block on the CPU with the same fold order.
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "cpu/reduce.h"
#include "cuda/multi_tensor_apply.cuh"
#include "fastopt/rules/cross_entropy.h"
#include "fastopt/vmath.h"

namespace fastopt::cuda {

constexpr int kCeBlock = 1024;

FASTOPT_HD float tanh_m(float v) { return tanhf(v); }
FASTOPT_HD double tanh_m(double v) { return tanh(v); }

template <typename T>
struct CeRow {
  using M = math_t<T>;
  // elements each thread loads before using them (double: 2, which keeps it within 64 registers)
  static constexpr int kCeUnroll = sizeof(T) == 8 ? 2 : 4;
  const T* logits;
  T* grad;             // nullptr: forward only; may equal logits
  const void* target;
  const T* weight;     // nullptr: unweighted
  double* row_loss;    // device, [n]
  int64_t n, c;
  CeTarget kind;
  int64_t ignore_index;
  double eps, z, cap;  // label smoothing, z-loss, soft-cap (0: off)
  double weight_sum;   // sum of w_c (C when unweighted)
  double scale;        // gradient scale: 1 / denom for mean, else 1

  // What one thread carries out of sweep 1.
  struct Part {
    M max;     // nan_max of the thread's values (NaN and +-inf make the row NaN)
    M m, s;    // online softmax: running max of finite values and sum of exp(v - m)
    M a;       // sum of t_c (probability targets)
  };

  FASTOPT_HD bool probs() const { return kind == CeTarget::probs; }
  FASTOPT_HD int64_t index(int64_t i) const {
    return kind == CeTarget::int32 ? int64_t(static_cast<const int32_t*>(target)[i])
                                   : static_cast<const int64_t*>(target)[i];
  }
  FASTOPT_HD bool ignored(int64_t i) const { return !probs() && index(i) == ignore_index; }
  // The (soft-capped) logit, rounded to storage precision as the CPU kernel stores it.
  FASTOPT_HD M value(const T* x, int64_t j) const {
    const M v = M(x[j]);
    if (cap > 0) return M(T(M(cap) * tanh_m(v * M(1.0 / cap))));
    return v;
  }
  FASTOPT_HD M t_prob(const T* q, int64_t j) const {
    const M t = M(1.0 - eps) * M(q[j]) + M(eps / double(c));
    return weight ? M(weight[j]) * t : t;
  }

  // Both sweeps take a thread's elements tid, tid + nt, tid + 2 nt, ... in that order, loading
  // kCeUnroll of them before using any: several loads in flight per thread are what it takes
  // to approach DRAM bandwidth (and in sweep 2 the stores may alias the loads, in place, so the
  // compiler could not batch them itself).
  FASTOPT_HD Part sweep1(int64_t i, int tid, int nt) const {
    const T* x = logits + i * c;
    const T* q = probs() ? static_cast<const T*>(target) + i * c : nullptr;
    const M inf = M(INFINITY);
    Part p{-inf, -inf, M(0), M(0)};
    for (int64_t j0 = tid; j0 < c; j0 += int64_t(kCeUnroll) * nt) {
      M v[kCeUnroll], t[kCeUnroll];
#pragma unroll
      for (int u = 0; u < kCeUnroll; ++u) {
        const int64_t j = j0 + int64_t(u) * nt;
        v[u] = j < c ? value(x, j) : -inf;
        t[u] = q && j < c ? t_prob(q, j) : M(0);
      }
#pragma unroll
      for (int u = 0; u < kCeUnroll; ++u) {
        if (j0 + int64_t(u) * nt >= c) break;
        p.max = nan_max(p.max, v[u]);
        if (v[u] > -inf && v[u] < inf) {
          if (v[u] > p.m) {
            p.s = p.s * exp_f(p.m - v[u]) + M(1);
            p.m = v[u];
          } else {
            p.s += exp_f(v[u] - p.m);
          }
        }
        if (q) p.a += t[u];
      }
    }
    return p;
  }

  // Row scalars formed from the folded sweep-1 results.
  struct Stats {
    M m;          // row max
    double S;     // sum of exp(v - m)
    double A;     // sum of t_c
    M k;          // scale (A + 2 z lse) / S: softmax_j times it is the first gradient term
    double lse;
  };
  FASTOPT_HD Stats stats(int64_t i, M m, double S, double a_probs) const {
    Stats st{m, S, 0.0, M(0), 0.0};
    if (probs()) {
      st.A = a_probs;
    } else {
      const int64_t y = index(i);
      const double wy = weight ? double(weight[y]) : 1.0;
      st.A = (1.0 - eps) * wy + eps / double(c) * weight_sum;
    }
    st.lse = double(m) + log(S);
    st.k = M(scale * (st.A + 2.0 * z * st.lse) / S);
    return st;
  }
  FASTOPT_HD bool needs_tx() const { return probs() || eps > 0; }

  // Sweep 2 for one thread: writes its gradient elements, returns its part of
  // sum_c t_c (x_c - m) (probabilities) or sum_c w_c (x_c - m) (smoothing), in M.
  FASTOPT_HD M sweep2(int64_t i, int tid, int nt, const Stats& st) const {
    const T* x = logits + i * c;
    T* g = grad ? grad + i * c : nullptr;
    const T* q = probs() ? static_cast<const T*>(target) + i * c : nullptr;
    const bool capped = cap > 0;
    const M inv_cap = capped ? M(1.0 / cap) : M(0);
    const M sc = M(scale);
    const M keep = M(1.0 - eps), spread = M(eps / double(c));
    const M c0 = sc * spread;
    const int64_t y = probs() ? -1 : index(i);
    const M wy = (!probs() && weight) ? M(weight[y]) : M(1);
    const M ty = sc * (keep * wy + spread * wy);
    const bool tx = needs_tx();
    M acc = M(0);
    for (int64_t j0 = tid; j0 < c; j0 += int64_t(kCeUnroll) * nt) {
      M v[kCeUnroll], t[kCeUnroll];
#pragma unroll
      for (int u = 0; u < kCeUnroll; ++u) {
        const int64_t j = j0 + int64_t(u) * nt;
        v[u] = j < c ? value(x, j) : M(0);
        // t_j without the target class's own term (added below)
        t[u] = j >= c ? M(0) : q ? t_prob(q, j) : (weight ? M(weight[j]) : M(1));
      }
#pragma unroll
      for (int u = 0; u < kCeUnroll; ++u) {
        const int64_t j = j0 + int64_t(u) * nt;
        if (j >= c) break;
        if (tx) acc += t[u] * (v[u] - st.m);
        if (!g) continue;
        const M e = exp_f(v[u] - st.m) * st.k;
        M d;
        if (q) d = e - sc * t[u];
        else if (j == y) d = e - ty;
        else d = e - c0 * t[u];
        if (capped) d *= softcap_slope(v[u], inv_cap);
        g[j] = T(d);
      }
    }
    return acc;
  }

  FASTOPT_HD double loss(int64_t i, const Stats& st, M xy, double tx_sum) const {
    double tx;
    if (probs()) {
      tx = tx_sum;
    } else {
      const int64_t y = index(i);
      const double wy = weight ? double(weight[y]) : 1.0;
      tx = (1.0 - eps) * wy * double(xy - st.m);
      if (eps > 0) tx += eps / double(c) * tx_sum;
    }
    return st.A * log(st.S) - tx + z * st.lse * st.lse;
  }

  // A thread's share of exp-sum, rescaled to the row max (0 for a thread without finite values).
  static FASTOPT_HD double rescaled(const Part& p, M m) {
    return p.s == M(0) ? 0.0 : double(p.s) * exp(double(p.m) - double(m));
  }
};

namespace {

// Folds a[0..n) (n a power of two) in the fixed order a[t] = op(a[t], a[t + w]), w = n/2 ... 1:
// the shape the emulation replays on the host.
template <typename V, typename Op>
__device__ __forceinline__ V block_fold(V* a, V v, Op op) {
  a[threadIdx.x] = v;
  __syncthreads();
  for (int w = kCeBlock / 2; w > 0; w /= 2) {
    if (int(threadIdx.x) < w) a[threadIdx.x] = op(a[threadIdx.x], a[threadIdx.x + w]);
    __syncthreads();
  }
  const V r = a[0];
  __syncthreads();
  return r;
}

template <typename T>
__global__ void __launch_bounds__(kCeBlock) cross_entropy_kernel(CeRow<T> r) {
  using M = math_t<T>;
  __shared__ double shared[kCeBlock];
  const int64_t i = blockIdx.x;
  const int tid = threadIdx.x;
  if (r.ignored(i)) {
    if (r.grad)
      for (int64_t j = tid; j < r.c; j += kCeBlock) r.grad[i * r.c + j] = T(0);
    if (tid == 0) r.row_loss[i] = 0.0;
    return;
  }
  const auto p = r.sweep1(i, tid, kCeBlock);
  // read before sweep 2 may overwrite it (in-place gradient)
  const M xy = r.probs() ? M(0) : r.value(r.logits + i * r.c, r.index(i));
  auto max_op = [](double a, double b) { return nan_max(a, b); };
  auto add = [](double a, double b) { return a + b; };
  const M m = M(block_fold(shared, double(p.max), max_op));
  if (!(m > M(-INFINITY) && m < M(INFINITY))) {  // NaN or +-inf decide the whole row
    if (r.grad)
      for (int64_t j = tid; j < r.c; j += kCeBlock)
        r.grad[i * r.c + j] = T(M(NAN));
    if (tid == 0) r.row_loss[i] = double(NAN);
    return;
  }
  const double S = block_fold(shared, CeRow<T>::rescaled(p, m), add);
  const double A = r.probs() ? block_fold(shared, double(p.a), add) : 0.0;
  const auto st = r.stats(i, m, S, A);
  const double tx = double(r.sweep2(i, tid, kCeBlock, st));
  const double tx_sum = r.needs_tx() ? block_fold(shared, tx, add) : 0.0;
  if (tid == 0) r.row_loss[i] = r.loss(i, st, xy, tx_sum);
}

// Validates the targets and forms mean's denominator and the sum of the class weights from
// host copies (w: the weights or nullptr, y: the class indices, int32 or int64, or nullptr), by
// the same loops and folds as the CPU kernel, so these scalars are the CPU's bits. Returns the
// sum of weights.
template <typename T, typename Y>
double host_prepare(const CrossEntropyArgs& a, const T* w, const Y* y, CrossEntropyResult& res) {
  const int64_t N = a.n, C = a.c;
  if (a.target_kind == CeTarget::probs) {
    res.denom = double(N);
  } else {
    for (int64_t i = 0; i < N; ++i) {
      const int64_t yi = y[i];
      if (yi == a.ignore_index) continue;
      if (yi < 0 || yi >= C) {
        res.bad_row = i;
        return 0.0;
      }
      res.denom += w ? double(w[yi]) : 1.0;
    }
  }
  if (!w) return double(C);
  std::vector<double> wd(w, w + C);
  return cpu::pairwise_sum(wd.data(), C);
}

template <typename T>
CeRow<T> make_row(const CrossEntropyArgs& a, double weight_sum, double denom, double* rows) {
  return CeRow<T>{static_cast<const T*>(a.logits), static_cast<T*>(a.grad), a.target,
                  static_cast<const T*>(a.weight), rows, a.n, a.c, a.target_kind,
                  a.ignore_index, a.label_smoothing, a.z_loss, a.softcap, weight_sum,
                  a.reduction == Reduction::mean ? 1.0 / denom : 1.0};
}

// Page-locked host memory for the launcher's copies (targets and weights in, row losses out),
// so they are DMA transfers, not staged through a pageable bounce buffer. Grown on demand and
// kept for the process; one call at a time uses it (the lock spans the call).
class PinnedStaging {
 public:
  std::unique_lock<std::mutex> lock() { return std::unique_lock<std::mutex>(mutex_); }
  char* get(size_t bytes) {
    if (bytes > size_) {
      if (data_) cudaFreeHost(data_);
      data_ = nullptr;
      size_ = 0;
      check(cudaMallocHost(reinterpret_cast<void**>(&data_), bytes), "pinned allocation");
      size_ = bytes;
    }
    return data_;
  }

 private:
  std::mutex mutex_;
  char* data_ = nullptr;
  size_t size_ = 0;
};

PinnedStaging& staging() {
  static PinnedStaging* s = new PinnedStaging;  // never destroyed: no CUDA call at exit
  return *s;
}

size_t round8(size_t n) { return (n + 7) / 8 * 8; }

template <typename T>
CrossEntropyResult run(const CrossEntropyArgs& a, uintptr_t stream) {
  CrossEntropyResult res{0.0, 0.0, -1};
  const int64_t N = a.n, C = a.c;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const bool probs = a.target_kind == CeTarget::probs;
  const size_t y_size = a.target_kind == CeTarget::int32 ? 4 : 8;
  // staging: [weights | class indices | row losses]
  const size_t w_bytes = a.weight ? round8(size_t(C) * sizeof(T)) : 0;
  const size_t y_bytes = probs ? 0 : round8(size_t(N) * y_size);
  auto guard = staging().lock();
  char* host = staging().get(w_bytes + y_bytes + size_t(N) * sizeof(double) + 8);
  const T* w = a.weight ? reinterpret_cast<const T*>(host) : nullptr;
  char* y = host + w_bytes;
  auto* rows = reinterpret_cast<double*>(host + w_bytes + y_bytes);
  // the host needs the targets (validation, mean's denominator) and the weights (their sum)
  // before the launch; probabilities without weights need nothing, and no synchronization
  if (w_bytes + y_bytes > 0) {
    if (a.weight)
      check(cudaMemcpyAsync(host, a.weight, C * sizeof(T), cudaMemcpyDeviceToHost, s), "copy");
    if (!probs && N > 0)
      check(cudaMemcpyAsync(y, a.target, N * y_size, cudaMemcpyDeviceToHost, s), "copy");
    check(cudaStreamSynchronize(s), "synchronize");
  }
  const double weight_sum =
      a.target_kind == CeTarget::int32
          ? host_prepare<T>(a, w, reinterpret_cast<const int32_t*>(y), res)
          : host_prepare<T>(a, w, probs ? nullptr : reinterpret_cast<const int64_t*>(y), res);
  if (res.bad_row >= 0) return res;
  if (N == 0) return res;
  if (N > kMaxBlocks) throw std::runtime_error("fastopt CUDA cross_entropy: too many rows");
  void* buf = nullptr;
  check(cudaMallocAsync(&buf, N * sizeof(double), s), "allocation");
  const CeRow<T> r = make_row<T>(a, weight_sum, res.denom, static_cast<double*>(buf));
  cross_entropy_kernel<T><<<unsigned(N), kCeBlock, 0, s>>>(r);
  const cudaError_t launched = cudaGetLastError();
  if (launched != cudaSuccess) {
    cudaFreeAsync(buf, s);
    check(launched, "kernel launch");
  }
  check(cudaMemcpyAsync(rows, buf, N * sizeof(double), cudaMemcpyDeviceToHost, s), "copy");
  check(cudaFreeAsync(buf, s), "free");
  check(cudaStreamSynchronize(s), "synchronize");
  std::memcpy(a.row_loss, rows, N * sizeof(double));
  res.loss_sum = cpu::pairwise_sum(rows, N);  // overwrites the staged copy
  return res;
}

}  // namespace

CrossEntropyResult cross_entropy(const CrossEntropyArgs& a, DType dtype, uintptr_t stream) {
  if (dtype == DType::f64) return run<double>(a, stream);
  if (dtype == DType::f32) return run<float>(a, stream);
  throw std::invalid_argument("fastopt CUDA cross_entropy takes float32 or float64");
}

}  // namespace fastopt::cuda
