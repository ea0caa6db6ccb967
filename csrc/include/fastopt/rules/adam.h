// Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015) with L2 weight
// decay, and AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019)
// with decoupled weight decay; AMSGrad (Reddi et al., "On the Convergence of Adam and Beyond",
// ICLR 2018). Extras: bias correction off (bias corrections 1), eps inside the square root.
//
//   (weight decay, L2 or decoupled, and L1 are the frame's: fastopt/rule.h)
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2;   vmax = max(vmax, v)  (AMSGrad: v = vmax)
//   p = p - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)      or, eps inside the root,
//   p = p - lr / bc1 * m / sqrt(v / bc2 + eps)             (bc_i = 1 - b_i^step, on the host)
#pragma once
#include <cmath>

#include "fastopt/rule.h"

namespace fastopt {

// The moments every Adam variant keeps (Adam, NAdam, RAdam): their scalars, first in the op's
// list, and their update in place, m = b m + (1 - b) x (x = g for the first, g^2 for the second).
#define FASTOPT_ADAM_MOMENTS(X) X(beta1) X(one_minus_beta1) X(beta2) X(one_minus_beta2) X(eps)
template <typename M>
FASTOPT_HD M adam_moment(M& m, M x, M beta, M one_minus_beta) {
  m = beta * m + one_minus_beta * x;
  return m;
}

struct Adam : Rule {
  static constexpr const char* name = "adam";
#define FASTOPT_ADAM_STATE(X) X(exp_avg) X(exp_avg_sq) X(max_exp_avg_sq)
#define FASTOPT_ADAM_SCALARS(X)                                                          \
  FASTOPT_ADAM_MOMENTS(X) X(step_size) X(bias_correction2) X(bias_correction2_sqrt)      \
  X(eps_inside_sqrt) X(amsgrad)
  FASTOPT_STATE(FASTOPT_ADAM_STATE)
  FASTOPT_SCALARS(FASTOPT_ADAM_SCALARS)
  using Variants = VariantFlags<S::amsgrad>;
  static constexpr unsigned kAmsgrad = Variants::bit<S::amsgrad>;

  static constexpr unsigned uses(unsigned v) {
    return v & kAmsgrad ? ~0u : ~row(max_exp_avg_sq);
  }

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    const M m = adam_moment(st[exp_avg], g, c.beta1, c.one_minus_beta1);
    const M v = adam_moment(st[exp_avg_sq], g * g, c.beta2, c.one_minus_beta2);
    M v_used = v;
    if constexpr (V & kAmsgrad) {
      v_used = nan_max(st[max_exp_avg_sq], v);
      st[max_exp_avg_sq] = v_used;
    }
    const M denom = c.eps_inside_sqrt != M(0)
                        ? std::sqrt(v_used / c.bias_correction2 + c.eps)
                        : std::sqrt(v_used) / c.bias_correction2_sqrt + c.eps;
    return p - c.step_size * (m / denom);
  }
};

}  // namespace fastopt
