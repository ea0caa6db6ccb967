// Fused softmax cross-entropy: forward and gradient for one row at a time, the row staying in
// cache between its sweeps (max, sum of exps, gradient); rows spread over OpenMP threads.
#include "fastopt/rules/cross_entropy.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fastopt/vmath.h"
#include "multi_tensor.h"
#include "ops.h"
#include "reduce.h"

namespace fastopt::cpu::FASTOPT_ISA {
namespace {

// Row sums use a fixed number of lanes (not the vector width) so the bits do not depend on the
// ISA; float lanes are flushed into double every kFlush elements, which keeps the sum of exps
// of a 50k-class row accurate to a few float ulp.
constexpr int kLanes = 16;
constexpr int64_t kFlush = 1024;

template <typename M, typename F>
double row_sum(int64_t n, F&& f) {
  double total[kLanes] = {};
  for (int64_t b = 0; b < n; b += kFlush) {
    const int64_t e = std::min(n, b + kFlush);
    M lanes[kLanes] = {};
    int64_t j = b;
    for (; j + kLanes <= e; j += kLanes)
      for (int l = 0; l < kLanes; ++l) lanes[l] += f(j + l);
    for (int l = 0; j < e; ++j, ++l) lanes[l] += f(j);
    for (int l = 0; l < kLanes; ++l) total[l] += double(lanes[l]);
  }
  return pairwise_sum(total, kLanes);
}

template <typename M, typename T>
M row_max(int64_t n, const T* __restrict x) {
  M lanes[kLanes];
  for (int l = 0; l < kLanes; ++l) lanes[l] = -std::numeric_limits<M>::infinity();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] = nan_max(lanes[l], M(x[j + l]));
  for (int l = 0; j < n; ++j, ++l) lanes[l] = nan_max(lanes[l], M(x[j]));
  M m = lanes[0];
  for (int l = 1; l < kLanes; ++l) m = nan_max(m, lanes[l]);
  return m;
}

template <typename T>
struct Row {
  using M = math_t<T>;
  const CrossEntropyArgs& a;
  const T* weight;  // nullptr when unweighted
  double weight_sum;  // sum of w_c (C when unweighted)
  double scale;       // gradient scale: 1 / denom for mean, else 1

  // One row: returns its loss; writes its gradient to g (nullptr: forward only). g may equal x.
  // work is a scratch row used only for soft-capping without a gradient buffer.
  double run(const T* x, T* g, const void* target_row, T* work) const {
    const int64_t C = a.c;
    const bool cap = a.softcap > 0;
    const M inv_cap = cap ? M(1.0 / a.softcap) : M(0);
    const M capv = M(a.softcap);
    const T* src = x;
    if (cap) {
      T* dst = g ? g : work;
      for (int64_t j = 0; j < C; ++j) dst[j] = T(capv * std::tanh(M(x[j]) * inv_cap));
      src = dst;
    }
    const M m = row_max<M>(C, src);
    const double eps = a.label_smoothing;
    const bool probs = a.target_kind == CeTarget::probs;
    int64_t y = 0;
    if (!probs)
      y = a.target_kind == CeTarget::int32 ? int64_t(*static_cast<const int32_t*>(target_row))
                                           : *static_cast<const int64_t*>(target_row);
    if (!std::isfinite(double(m))) {
      // NaN or +-inf decide the whole row (x - max is NaN somewhere), as in the reference.
      if (g) std::fill(g, g + C, T(std::numeric_limits<M>::quiet_NaN()));
      return std::numeric_limits<double>::quiet_NaN();
    }
    const T* p = probs ? static_cast<const T*>(target_row) : nullptr;
    const M keep = M(1.0 - eps), spread = M(eps / double(C));
    // t_c for probability targets (see rules/cross_entropy.h)
    auto t_prob = [&](int64_t j) {
      const M t = keep * M(p[j]) + spread;
      return weight ? M(weight[j]) * t : t;
    };
    const M xy = probs ? M(0) : M(src[y]);
    // A = sum_c t_c and tx = sum_c t_c (x_c - max). Shifting by the max makes the loss
    // A log(S) - tx a sum of two non-negative terms, so nothing cancels when it is near 0.
    double A, tx;
    if (probs) {
      A = row_sum<M>(C, t_prob);
      tx = row_sum<M>(C, [&](int64_t j) { return t_prob(j) * (M(src[j]) - m); });
    } else {
      const double wy = weight ? double(weight[y]) : 1.0;
      A = (1.0 - eps) * wy + eps / double(C) * weight_sum;
      tx = (1.0 - eps) * wy * double(xy - m);
      if (eps > 0) {
        const double sx =
            weight ? row_sum<M>(C, [&](int64_t j) { return M(weight[j]) * (M(src[j]) - m); })
                   : row_sum<M>(C, [&](int64_t j) { return M(src[j]) - m; });
        tx += eps / double(C) * sx;
      }
    }
    // Without soft-capping the exps are stored in the gradient row and scaled in place by the
    // last sweep; with it, the capped values live there and the exps are recomputed. Every
    // exponent is x - max <= 0 (a row with a non-finite max returned above): exp_nonpos_f.
    const bool store = g && !cap;
    double S;
    if (store)
      S = row_sum<M>(C, [&](int64_t j) {
        const M e = exp_nonpos_f(M(src[j]) - m);
        g[j] = T(e);
        return e;
      });
    else
      S = row_sum<M>(C, [&](int64_t j) { return exp_nonpos_f(M(src[j]) - m); });
    const double lse = double(m) + std::log(S);
    const double loss = A * std::log(S) - tx + a.z_loss * lse * lse;
    if (!g) return loss;

    const M k = M(scale * (A + 2.0 * a.z_loss * lse) / S);
    const M sc = M(scale);
    if (probs) {
      if (cap)
        for (int64_t j = 0; j < C; ++j) {
          const M s = M(g[j]);
          g[j] = T((exp_nonpos_f(s - m) * k - sc * t_prob(j)) * softcap_slope(s, inv_cap));
        }
      else
        for (int64_t j = 0; j < C; ++j) g[j] = T(M(g[j]) * k - sc * t_prob(j));
      return loss;
    }
    const M c0 = sc * spread;  // the smoothing part of t_j, times the scale
    if (cap) {
      if (weight)
        for (int64_t j = 0; j < C; ++j) {
          const M s = M(g[j]);
          g[j] = T((exp_nonpos_f(s - m) * k - c0 * M(weight[j])) * softcap_slope(s, inv_cap));
        }
      else
        for (int64_t j = 0; j < C; ++j) {
          const M s = M(g[j]);
          g[j] = T((exp_nonpos_f(s - m) * k - c0) * softcap_slope(s, inv_cap));
        }
    } else {
      if (weight)
        for (int64_t j = 0; j < C; ++j) g[j] = T(M(g[j]) * k - c0 * M(weight[j]));
      else
        for (int64_t j = 0; j < C; ++j) g[j] = T(M(g[j]) * k - c0);
    }
    // the target class's own term, recomputed from the saved value
    const M wy = weight ? M(weight[y]) : M(1);
    const M ty = sc * (keep * wy + spread * wy);
    const M slope = cap ? softcap_slope(xy, inv_cap) : M(1);
    g[y] = T((exp_nonpos_f(xy - m) * k - ty) * slope);
    return loss;
  }
};

template <typename T>
CrossEntropyResult run(const CrossEntropyArgs& a) {
  CrossEntropyResult res{0.0, 0.0, -1};
  const int64_t N = a.n, C = a.c;
  const T* weight = static_cast<const T*>(a.weight);
  const bool probs = a.target_kind == CeTarget::probs;
  auto index_of = [&](int64_t i) -> int64_t {
    return a.target_kind == CeTarget::int32 ? int64_t(static_cast<const int32_t*>(a.target)[i])
                                            : static_cast<const int64_t*>(a.target)[i];
  };
  // Validate the targets and find mean's denominator before any row writes its gradient.
  if (probs) {
    res.denom = double(N);
  } else {
    for (int64_t i = 0; i < N; ++i) {
      const int64_t y = index_of(i);
      if (y == a.ignore_index) continue;
      if (y < 0 || y >= C) {
        res.bad_row = i;
        return res;
      }
      res.denom += weight ? double(weight[y]) : 1.0;
    }
  }
  double weight_sum = double(C);
  if (weight) {
    std::vector<double> w(C);
    for (int64_t j = 0; j < C; ++j) w[j] = double(weight[j]);
    weight_sum = pairwise_sum(w.data(), C);
  }
  const double scale = a.reduction == Reduction::mean ? 1.0 / res.denom : 1.0;
  const Row<T> row{a, weight, weight_sum, scale};
  const T* logits = static_cast<const T*>(a.logits);
  T* grad = static_cast<T*>(a.grad);
  const bool parallel = N > 1 && N * C >= kParallelMin;
  const int64_t D = a.inner;
  const bool strided = D > 1;
#pragma omp parallel if (parallel)
  {
    // Per-thread scratch rows, never [n, c]: a row gathered from a strided layout (and its
    // probability targets), or the capped values of a forward-only soft-capped row.
    std::vector<T> work(strided || (a.softcap > 0 && !grad) ? C : 0);
    std::vector<T> twork(strided && probs ? C : 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const void* trow = probs ? static_cast<const void*>(static_cast<const T*>(a.target) + i * C)
                               : static_cast<const void*>(
                                     a.target_kind == CeTarget::int32
                                         ? static_cast<const char*>(a.target) + 4 * i
                                         : static_cast<const char*>(a.target) + 8 * i);
      const bool ignored = !probs && index_of(i) == a.ignore_index;
      if (!strided) {
        T* g = grad ? grad + i * C : nullptr;
        if (ignored) {
          if (g) std::fill(g, g + C, T(0));
          a.row_loss[i] = 0.0;
          continue;
        }
        a.row_loss[i] = row.run(logits + i * C, g, trow, work.data());
        continue;
      }
      // [N, C, inner]: consecutive rows of one thread read the same cache lines, so the
      // gather and scatter cost about one pass over the row's lines
      const int64_t base = (i / D) * C * D + i % D;
      if (ignored) {
        if (grad)
          for (int64_t j = 0; j < C; ++j) grad[base + j * D] = T(0);
        a.row_loss[i] = 0.0;
        continue;
      }
      T* x = work.data();
      for (int64_t j = 0; j < C; ++j) x[j] = logits[base + j * D];
      if (probs) {
        const T* p = static_cast<const T*>(a.target);
        for (int64_t j = 0; j < C; ++j) twork[j] = p[base + j * D];
        trow = twork.data();
      }
      a.row_loss[i] = row.run(x, grad ? x : nullptr, trow, x);
      if (grad)
        for (int64_t j = 0; j < C; ++j) grad[base + j * D] = x[j];
    }
  }
  std::vector<double> partial(a.row_loss, a.row_loss + N);
  res.loss_sum = pairwise_sum(partial.data(), N);
  return res;
}

}  // namespace

CrossEntropyResult cross_entropy(const CrossEntropyArgs& a, DType dtype) {
  return dtype == DType::f64 ? run<double>(a) : run<float>(a);
}

}  // namespace fastopt::cpu::FASTOPT_ISA
