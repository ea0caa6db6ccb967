// Element-wise losses (mse, l1, huber, smooth_l1, bce, bce_with_logits, kl_div): one pass that
// writes the gradient and sums the loss, over fixed chunks so the sum is deterministic.
#include "fastopt/rules/elementwise_loss.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "multi_tensor.h"
#include "ops.h"
#include "reduce.h"

namespace fastopt::cpu::FASTOPT_ISA {
namespace {

// Losses are computed a block at a time into a buffer by a loop with no reduction in it (so it
// vectorizes), then folded into the sum's lanes. A multiple of kLanes.
constexpr int64_t kBlock = 512;

// Lanes of the sum: 32 doubles are 8 AVX2 registers, 8 independent chains of additions; with
// 8 lanes (2 chains) the fold waited on the adds' latency, a third of mse's time. The count
// is fixed, not the vector width, so the bits do not depend on the ISA.
constexpr int kLanes = 32;

// What a call needs, as compile-time flags: the inner loop then has no branch on them.
template <bool Grad, bool Out, bool Weighted>
struct Flags {
  static constexpr bool grad = Grad, out = Out, weighted = Weighted;
};

// Losses of elements [i, i + n) into loss[0, n), their gradients and per-element losses
// written on the way; w[0, n) and pw[0, n) are the weights of those elements.
template <PointLoss K, typename T, typename F>
void span(const PointLossArgs& a, int64_t i, int64_t n, const T* __restrict w,
          const T* __restrict pw, math_t<T>* __restrict loss) {
  using M = math_t<T>;
  const T* __restrict x = static_cast<const T*>(a.input) + i;
  const T* __restrict y = static_cast<const T*>(a.target) + i;
  T* __restrict g = F::grad ? static_cast<T*>(a.grad) + i : nullptr;
  T* __restrict out = F::out ? static_cast<T*>(a.out) + i : nullptr;
  const M param = M(a.param), sc = M(a.grad_scale);
  for (int64_t j = 0; j < n; ++j) {
    M l, dl;
    point_loss<K>(M(x[j]), M(y[j]), param, F::weighted ? M(pw[j]) : M(1), l, dl);
    if constexpr (F::weighted) {
      const M wv = M(w[j]);
      l *= wv;
      dl = sc * wv * dl;  // sc * 1 * dl == sc * dl: an absent weight changes no bit
    } else {
      dl = sc * dl;
    }
    if constexpr (F::grad) g[j] = T(dl);
    if constexpr (F::out) out[j] = T(l);
    loss[j] = l;
  }
}

// Sum of the losses of chunk [b, e): element b + k goes to lane k mod kLanes, each lane
// summed in order in double, the lanes folded pairwise.
template <PointLoss K, typename T, typename F>
double chunk(const PointLossArgs& a, int64_t b, int64_t e) {
  using M = math_t<T>;
  // weight and pos_weight repeat with their periods (broadcast over the leading axes); an
  // absent one reads ones with a period of one block
  static const std::vector<T> ones(kBlock, T(1));
  const T* w = F::weighted && a.weight ? static_cast<const T*>(a.weight) : ones.data();
  const T* pw = F::weighted && a.pos_weight ? static_cast<const T*>(a.pos_weight) : ones.data();
  const int64_t wp = F::weighted && a.weight ? a.weight_period : kBlock;
  const int64_t pp = F::weighted && a.pos_weight ? a.pos_weight_period : kBlock;
  int64_t wi = F::weighted ? b % wp : 0, pi = F::weighted ? b % pp : 0;
  double lanes[kLanes] = {};
  alignas(64) M loss[kBlock];
  for (int64_t i = b; i < e; i += kBlock) {
    const int64_t n = std::min(kBlock, e - i);
    if constexpr (F::weighted) {
      // spans in which neither weight index wraps
      for (int64_t j = 0; j < n;) {
        const int64_t len = std::min({n - j, wp - wi, pp - pi});
        span<K, T, F>(a, i + j, len, w + wi, pw + pi, loss + j);
        j += len;
        wi = wi + len == wp ? 0 : wi + len;
        pi = pi + len == pp ? 0 : pi + len;
      }
    } else {
      span<K, T, F>(a, i, n, nullptr, nullptr, loss);
    }
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes)
      for (int l = 0; l < kLanes; ++l) lanes[l] += double(loss[j + l]);
    for (int l = 0; j < n; ++j, ++l) lanes[l] += double(loss[j]);
  }
  return pairwise_sum(lanes, kLanes);
}

template <PointLoss K, typename T, typename F>
double run(const PointLossArgs& a) {
  const uint64_t ptr = 0;
  const int64_t numel = a.n;
  const TensorList tl{&ptr, &numel, 1, 1};
  const Chunks chunks(tl);
  std::vector<double> partial(chunks.count());
  for_each_chunk(tl, chunks, [&](int64_t c, int64_t, int64_t b, int64_t e) {
    partial[c] = chunk<K, T, F>(a, b, e);
  });
  return pairwise_sum(partial.data(), chunks.count());
}

template <PointLoss K, typename T>
double run_flags(const PointLossArgs& a) {
  // only the two binary cross-entropies take weights
  constexpr bool takes_weights = K == PointLoss::bce || K == PointLoss::bce_logits;
  const bool weighted = takes_weights && (a.weight || a.pos_weight);
  double total = 0;
  with_flag(a.grad != nullptr, [&](auto grad) {
    with_flag(a.out != nullptr, [&](auto out) {
      with_flag(weighted, [&](auto wt) {
        using G = std::decay_t<decltype(grad)>;
        using O = std::decay_t<decltype(out)>;
        using W = std::decay_t<decltype(wt)>;
        if constexpr (takes_weights || !W::value)
          total = run<K, T, Flags<G::value, O::value, W::value>>(a);
      });
    });
  });
  return total;
}

}  // namespace

double elementwise_loss(const PointLossArgs& a, DType dtype, PointLoss kind) {
  return with_point_loss(kind, [&](auto k) {
    constexpr PointLoss K = decltype(k)::value;
    return dtype == DType::f64 ? run_flags<K, double>(a) : run_flags<K, float>(a);
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA
