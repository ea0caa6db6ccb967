// Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015) with L2 weight
// decay, and AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019)
// with decoupled weight decay; AMSGrad (Reddi et al., ICLR 2018). Extras: bias correction off,
// and eps inside the square root.
#pragma once
#include <cmath>

#include "fastopt/common.h"

namespace fastopt {

enum AdamSlot { kAdamParam, kAdamGrad, kAdamExpAvg, kAdamExpAvgSq, kAdamMaxExpAvgSq, kAdamSlots };

struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  double bias_correction1, bias_correction2;  // 1 - beta^step on the host, in float64
  bool decoupled, amsgrad, maximize, eps_inside_sqrt;
};

template <typename M> struct AdamConsts {
  M beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay_factor;
  M step_size, bias_correction2, bias_correction2_sqrt, grad_sign;
  bool l2, decoupled, eps_inside_sqrt;
  FASTOPT_HD explicit AdamConsts(const AdamHyper& h)
      : beta1(M(h.beta1)), one_minus_beta1(M(1.0 - h.beta1)), beta2(M(h.beta2)),
        one_minus_beta2(M(1.0 - h.beta2)), eps(M(h.eps)), weight_decay(M(h.weight_decay)),
        decay_factor(M(1.0 - h.lr * h.weight_decay)), step_size(M(h.lr / h.bias_correction1)),
        bias_correction2(M(h.bias_correction2)),
        bias_correction2_sqrt(M(std::sqrt(h.bias_correction2))),
        grad_sign(h.maximize ? M(-1) : M(1)), l2(!h.decoupled && h.weight_decay != 0.0),
        decoupled(h.decoupled && h.weight_decay != 0.0), eps_inside_sqrt(h.eps_inside_sqrt) {}
};

// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  vmax = max(vmax, v) (AMSGrad)
// p = p - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)      or, eps inside the root,
// p = p - lr / bc1 * m / sqrt(v / bc2 + eps)
template <bool Amsgrad, typename T, typename M>
FASTOPT_HD void adam_rule(T& param, T grad, T& exp_avg, T& exp_avg_sq, T* max_exp_avg_sq,
                          const AdamConsts<M>& c) {
  M p = M(param);
  M g = M(grad) * c.grad_sign;
  if (c.l2) g = g + c.weight_decay * p;
  if (c.decoupled) p = p * c.decay_factor;
  const M m = c.beta1 * M(exp_avg) + c.one_minus_beta1 * g;
  const M v = c.beta2 * M(exp_avg_sq) + c.one_minus_beta2 * g * g;
  exp_avg = T(m);
  exp_avg_sq = T(v);
  M v_used = v;
  if constexpr (Amsgrad) {
    v_used = nan_max(M(*max_exp_avg_sq), v);
    *max_exp_avg_sq = T(v_used);
  }
  const M denom = c.eps_inside_sqrt ? std::sqrt(v_used / c.bias_correction2 + c.eps)
                                    : std::sqrt(v_used) / c.bias_correction2_sqrt + c.eps;
  param = T(p - c.step_size * (m / denom));
}

}  // namespace fastopt
