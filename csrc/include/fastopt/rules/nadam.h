// NAdam (Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop), as
// torch.optim.NAdam: momentum decay schedule, L2 or decoupled weight decay (Loshchilov &
// Hutter, "Decoupled Weight Decay Regularization", ICLR 2019).
//
//   (weight decay, L2 or decoupled, and L1 are the frame's: fastopt/rule.h)
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2;   d = sqrt(v / bc2) + eps
//   p = p - grad_coef g / d - avg_coef m / d
// with, on the host (mu_t = b1 (1 - 0.5 * 0.96^(t psi)), psi the momentum decay):
//   grad_coef = lr (1 - mu_t) / (1 - mu_1 ... mu_t),
//   avg_coef = lr mu_{t+1} / (1 - mu_1 ... mu_t mu_{t+1}),   bc2 = 1 - b2^t
#pragma once
#include <cmath>

#include "fastopt/rules/adam.h"

namespace fastopt {

struct Nadam : Rule {
  static constexpr const char* name = "nadam";
#define FASTOPT_NADAM_STATE(X) X(exp_avg) X(exp_avg_sq)
#define FASTOPT_NADAM_SCALARS(X) FASTOPT_ADAM_MOMENTS(X) X(bias_correction2) X(grad_coef) X(avg_coef)
  FASTOPT_STATE(FASTOPT_NADAM_STATE)
  FASTOPT_SCALARS(FASTOPT_NADAM_SCALARS)

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    const M m = adam_moment(st[exp_avg], g, c.beta1, c.one_minus_beta1);
    const M v = adam_moment(st[exp_avg_sq], g * g, c.beta2, c.one_minus_beta2);
    const M denom = std::sqrt(v / c.bias_correction2) + c.eps;
    return p - c.grad_coef * (g / denom) - c.avg_coef * (m / denom);
  }
};

}  // namespace fastopt
