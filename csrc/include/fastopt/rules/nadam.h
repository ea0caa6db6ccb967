// NAdam (Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop), as
// torch.optim.NAdam: momentum decay schedule, L2 or decoupled weight decay (Loshchilov &
// Hutter, "Decoupled Weight Decay Regularization", ICLR 2019).
//
//   g = g + wd p  (l2);   p = p (1 - lr wd)  (decoupled)
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2;   d = sqrt(v / bc2) + eps
//   p = p - grad_coef g / d - avg_coef m / d
// with, on the host (mu_t = b1 (1 - 0.5 * 0.96^(t psi)), psi the momentum decay):
//   grad_coef = lr (1 - mu_t) / (1 - mu_1 ... mu_t),
//   avg_coef = lr mu_{t+1} / (1 - mu_1 ... mu_t mu_{t+1}),   bc2 = 1 - b2^t
#pragma once
#include <cmath>

#include "fastopt/rule.h"

namespace fastopt {

struct Nadam : Rule {
  static constexpr const char* name = "nadam";
#define FASTOPT_NADAM_STATE(X) X(exp_avg) X(exp_avg_sq)
#define FASTOPT_NADAM_SCALARS(X)                                                         \
  X(beta1) X(one_minus_beta1) X(beta2) X(one_minus_beta2) X(eps) X(weight_decay) X(l2)   \
  X(decay_factor) X(decoupled) X(bias_correction2) X(grad_coef) X(avg_coef)
  FASTOPT_STATE(FASTOPT_NADAM_STATE)
  FASTOPT_SCALARS(FASTOPT_NADAM_SCALARS)

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    if (c.l2 != M(0)) g = g + c.weight_decay * p;
    if (c.decoupled != M(0)) p = p * c.decay_factor;
    const M m = c.beta1 * st[exp_avg] + c.one_minus_beta1 * g;
    const M v = c.beta2 * st[exp_avg_sq] + c.one_minus_beta2 * g * g;
    st[exp_avg] = m;
    st[exp_avg_sq] = v;
    const M denom = std::sqrt(v / c.bias_correction2) + c.eps;
    return p - c.grad_coef * (g / denom) - c.avg_coef * (m / denom);
  }
};

}  // namespace fastopt
