// Per-element losses and their derivatives with respect to the input, as torch.nn.functional
// defines them (d = x - y):
//   mse        d^2                                   2 d
//   l1         |d|                                   sign(d)
//   huber      |d| < delta ? d^2 / 2 : delta (|d| - delta / 2)       clamp(d, -delta, delta)
//   smooth_l1  |d| < beta ? d^2 / (2 beta) : |d| - beta / 2          |d| < beta ? d / beta : sign(d)
//   bce        -(y max(log x, -100) + (1 - y) max(log(1 - x), -100))   (x - y) / max(x (1 - x), 1e-12f)
//              (NaN loss where x or y is outside [0, 1]: the caller raises, as torch)
//   bce_logits (1 - y) x + l (log(1 + e^-|x|) + max(-x, 0)),  l = (p - 1) y + 1
//                                                    l sigmoid(x) - p y      (p = pos_weight)
//   kl_div     xlogy(y, y) - y x                     -y
//   kl_div_log_target  e^y (y - x)                   -e^y
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "fastopt/common.h"
#include "fastopt/vmath.h"

namespace fastopt {

enum class PointLoss : int {
  mse = 0, l1 = 1, huber = 2, smooth_l1 = 3, bce = 4, bce_logits = 5, kl_div = 6,
  kl_div_log_target = 7
};

// f(std::integral_constant<PointLoss, kind>{}): the runtime kind as the compile-time one that
// the CPU and CUDA drivers are instantiated on (any kind past the others is the last).
template <int K = 0, typename F>
decltype(auto) with_point_loss(PointLoss kind, F&& f) {
  constexpr std::integral_constant<PointLoss, PointLoss(K)> k{};
  if constexpr (k.value == PointLoss::kl_div_log_target) return f(k);
  else return int(kind) == K ? f(k) : with_point_loss<K + 1>(kind, f);
}

struct PointLossArgs {
  const void* input;       // [n]
  const void* target;      // [n], the input's dtype
  const void* weight;      // nullptr, or values repeating every weight_period elements
  int64_t weight_period;
  const void* pos_weight;  // bce_logits only: nullptr, or repeating every pos_weight_period
  int64_t pos_weight_period;
  void* grad;              // [n] out (nullptr: forward only): scale * weight * dloss/dx
  void* out;               // [n] out (nullptr unless reduction='none'): weight * loss
  int64_t n;
  double param;            // delta (huber) or beta (smooth_l1)
  double grad_scale;       // 1/n for mean, 1/batch for batchmean, else 1
};

// loss and dloss/dx of one element; pw is the positive-class weight (1 when absent).
template <PointLoss K, typename M>
FASTOPT_HD void point_loss(M x, M y, M param, M pw, M& loss, M& dloss) {
  if constexpr (K == PointLoss::mse) {
    const M d = x - y;
    loss = d * d;
    dloss = M(2) * d;
  } else if constexpr (K == PointLoss::l1) {
    const M d = x - y;
    loss = std::fabs(d);
    dloss = nan_sign(d);
  } else if constexpr (K == PointLoss::huber) {
    const M d = x - y, ad = std::fabs(d);
    loss = ad < param ? M(0.5) * d * d : param * (ad - M(0.5) * param);
    dloss = d < -param ? -param : (d > param ? param : d);
  } else if constexpr (K == PointLoss::smooth_l1) {
    const M d = x - y, ad = std::fabs(d);
    loss = ad < param ? M(0.5) * d * d / param : ad - M(0.5) * param;
    dloss = d < -param ? M(-1) : (d > param ? M(1) : d / param);
  } else if constexpr (K == PointLoss::bce) {
    const M lx = log_f(x), l1x = log1p_f(-x);
    loss = -(y * (lx < M(-100) ? M(-100) : lx) + (M(1) - y) * (l1x < M(-100) ? M(-100) : l1x));
    // torch refuses an x or y outside [0, 1] (NaN included): a NaN loss, hence a NaN sum,
    // tells the caller to look for the offending element
    if (!(x >= M(0) && x <= M(1) && y >= M(0) && y <= M(1)))
      loss = M(NAN);
    const M v = x * (M(1) - x), tiny = M(1e-12f);  // torch's clamp is the float 1e-12
    dloss = (x - y) / (v < tiny ? tiny : v);
  } else if constexpr (K == PointLoss::bce_logits) {
    const M e = exp_nonpos_f(-std::fabs(x));
    const M lw = (pw - M(1)) * y + M(1);
    // one division gives both 1 / (1 + e) and s = e / (2 + e), log(1 + e) = 2 atanh(s)
    const M r = M(1) / ((M(1) + e) * (M(2) + e));
    const M inv = (M(2) + e) * r, s = e * (M(1) + e) * r;
    // (1 - y) x + l max(-x, 0) regrouped so that nothing cancels for x < 0: -p y x
    loss = (x >= M(0) ? (M(1) - y) * x : -pw * y * x) + lw * two_atanh_f(s);
    const M sig = x >= M(0) ? inv : e * inv;
    dloss = lw * sig - pw * y;
  } else if constexpr (K == PointLoss::kl_div) {
    loss = (y == M(0) ? M(0) : y * log_f(y)) - y * x;
    dloss = -y;
  } else {
    const M ey = exp_f(y);
    loss = ey * (y - x);
    dloss = -ey;
  }
}

}  // namespace fastopt
