// RAdam (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020),
// as torch.optim.RAdam: L2 or decoupled weight decay (Loshchilov & Hutter, ICLR 2019).
//
//   g = g + wd p  (l2);   p = p (1 - lr wd)  (decoupled)
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   rectify:  p = p - rect_coef m / (sqrt(v) + eps);   else  p = p - step_size m
// with, on the host (t the step): bc_i = 1 - b_i^t, rho_inf = 2 / (1 - b2) - 1,
//   rho_t = rho_inf - 2 t b2^t / bc2, rectify = rho_t > 5, step_size = lr / bc1,
//   rect_coef = lr / bc1 sqrt(bc2) sqrt((rho_t - 4)(rho_t - 2) rho_inf /
//                                       ((rho_inf - 4)(rho_inf - 2) rho_t))
#pragma once
#include <cmath>

#include "fastopt/rule.h"

namespace fastopt {

struct Radam : Rule {
  static constexpr const char* name = "radam";
#define FASTOPT_RADAM_STATE(X) X(exp_avg) X(exp_avg_sq)
#define FASTOPT_RADAM_SCALARS(X)                                                         \
  X(beta1) X(one_minus_beta1) X(beta2) X(one_minus_beta2) X(eps) X(weight_decay) X(l2)   \
  X(decay_factor) X(decoupled) X(step_size) X(rectify) X(rect_coef)
  FASTOPT_STATE(FASTOPT_RADAM_STATE)
  FASTOPT_SCALARS(FASTOPT_RADAM_SCALARS)

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    if (c.l2 != M(0)) g = g + c.weight_decay * p;
    if (c.decoupled != M(0)) p = p * c.decay_factor;
    const M m = c.beta1 * st[exp_avg] + c.one_minus_beta1 * g;
    const M v = c.beta2 * st[exp_avg_sq] + c.one_minus_beta2 * g * g;
    st[exp_avg] = m;
    st[exp_avg_sq] = v;
    return c.rectify != M(0) ? p - c.rect_coef * (m / (std::sqrt(v) + c.eps))
                             : p - c.step_size * m;
  }
};

}  // namespace fastopt
