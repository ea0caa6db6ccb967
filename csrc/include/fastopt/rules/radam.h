// RAdam (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020),
// as torch.optim.RAdam: L2 or decoupled weight decay (Loshchilov & Hutter, ICLR 2019).
//
//   (weight decay, L2 or decoupled, and L1 are the frame's: fastopt/rule.h)
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   rectify:  p = p - rect_coef m / (sqrt(v) + eps);   else  p = p - step_size m
// with, on the host (t the step): bc_i = 1 - b_i^t, rho_inf = 2 / (1 - b2) - 1,
//   rho_t = rho_inf - 2 t b2^t / bc2, rectify = rho_t > 5, step_size = lr / bc1,
//   rect_coef = lr / bc1 sqrt(bc2) sqrt((rho_t - 4)(rho_t - 2) rho_inf /
//                                       ((rho_inf - 4)(rho_inf - 2) rho_t))
#pragma once
#include <cmath>

#include "fastopt/rules/adam.h"

namespace fastopt {

struct Radam : Rule {
  static constexpr const char* name = "radam";
#define FASTOPT_RADAM_STATE(X) X(exp_avg) X(exp_avg_sq)
#define FASTOPT_RADAM_SCALARS(X) FASTOPT_ADAM_MOMENTS(X) X(step_size) X(rectify) X(rect_coef)
  FASTOPT_STATE(FASTOPT_RADAM_STATE)
  FASTOPT_SCALARS(FASTOPT_RADAM_SCALARS)

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    const M m = adam_moment(st[exp_avg], g, c.beta1, c.one_minus_beta1);
    const M v = adam_moment(st[exp_avg_sq], g * g, c.beta2, c.one_minus_beta2);
    return c.rectify != M(0) ? p - c.rect_coef * (m / (std::sqrt(v) + c.eps))
                             : p - c.step_size * m;
  }
};

}  // namespace fastopt
