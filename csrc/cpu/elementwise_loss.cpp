// Element-wise losses (mse, l1, huber, smooth_l1, bce, bce_with_logits, kl_div): one pass that
// writes the gradient and sums the loss, over fixed chunks so the sum is deterministic.
#include "fastopt/rules/elementwise_loss.h"

#include <vector>

#include "multi_tensor.h"
#include "ops.h"
#include "reduce.h"

namespace fastopt::cpu::FASTOPT_ISA {
namespace {

template <PointLoss K, typename T>
double chunk_plain(const PointLossArgs& a, int64_t b, int64_t e) {
  using M = math_t<T>;
  const T* __restrict x = static_cast<const T*>(a.input) + b;
  const T* __restrict y = static_cast<const T*>(a.target) + b;
  T* __restrict g = a.grad ? static_cast<T*>(a.grad) + b : nullptr;
  T* __restrict out = a.out ? static_cast<T*>(a.out) + b : nullptr;
  const M param = M(a.param), sc = M(a.grad_scale);
  const int64_t n = e - b;
  double lanes[kSumLanes] = {};
  auto one = [&](int64_t i) -> M {
    M loss, dloss;
    point_loss<K>(M(x[i]), M(y[i]), param, M(1), loss, dloss);
    if (g) g[i] = T(sc * dloss);
    if (out) out[i] = T(loss);
    return loss;
  };
  int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes)
    for (int l = 0; l < kSumLanes; ++l) lanes[l] += double(one(i + l));
  for (int l = 0; i < n; ++i, ++l) lanes[l] += double(one(i));
  return pairwise_sum(lanes, kSumLanes);
}

// With weight / pos_weight broadcast over the leading axes: the index into each repeats with
// its period, tracked by counters rather than a division per element.
template <PointLoss K, typename T>
double chunk_weighted(const PointLossArgs& a, int64_t b, int64_t e) {
  using M = math_t<T>;
  const T* x = static_cast<const T*>(a.input);
  const T* y = static_cast<const T*>(a.target);
  const T* w = static_cast<const T*>(a.weight);
  const T* pw = static_cast<const T*>(a.pos_weight);
  T* g = static_cast<T*>(a.grad);
  T* out = static_cast<T*>(a.out);
  const M param = M(a.param), sc = M(a.grad_scale);
  int64_t wi = w ? b % a.weight_period : 0, pi = pw ? b % a.pos_weight_period : 0;
  double lanes[kSumLanes] = {};
  for (int64_t i = b, l = 0; i < e; ++i) {
    M loss, dloss;
    point_loss<K>(M(x[i]), M(y[i]), param, pw ? M(pw[pi]) : M(1), loss, dloss);
    const M wv = w ? M(w[wi]) : M(1);
    loss *= wv;
    if (g) g[i] = T(sc * wv * dloss);
    if (out) out[i] = T(loss);
    lanes[l] += double(loss);
    if (++l == kSumLanes) l = 0;
    if (w && ++wi == a.weight_period) wi = 0;
    if (pw && ++pi == a.pos_weight_period) pi = 0;
  }
  return pairwise_sum(lanes, kSumLanes);
}

template <PointLoss K, typename T>
double run(const PointLossArgs& a) {
  const uint64_t ptr = 0;
  const int64_t numel = a.n;
  const TensorList tl{&ptr, &numel, 1, 1};
  const Chunks chunks(tl);
  std::vector<double> partial(chunks.count());
  const bool weighted = a.weight || a.pos_weight;
  for_each_chunk(tl, chunks, [&](int64_t c, int64_t, int64_t b, int64_t e) {
    partial[c] = weighted ? chunk_weighted<K, T>(a, b, e) : chunk_plain<K, T>(a, b, e);
  });
  return pairwise_sum(partial.data(), chunks.count());
}

}  // namespace

double elementwise_loss(const PointLossArgs& a, DType dtype, PointLoss kind) {
  return with_point_loss(kind, [&](auto k) {
    constexpr PointLoss K = decltype(k)::value;
    return dtype == DType::f64 ? run<K, double>(a) : run<K, float>(a);
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA
