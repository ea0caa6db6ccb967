// Adamax (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1:
// Adam with the infinity norm), as torch.optim.Adamax.
//
//   (weight decay and L1 are the frame's: fastopt/rule.h)
//   m = b1 m + (1 - b1) g;   u = max(b2 u, |g| + eps)  (NaN propagates)
//   p = p - clr m / u                                   (clr = lr / (1 - b1^step), on the host)
#pragma once
#include <cmath>

#include "fastopt/rule.h"

namespace fastopt {

struct Adamax : Rule {
  static constexpr const char* name = "adamax";
#define FASTOPT_ADAMAX_STATE(X) X(exp_avg) X(exp_inf)
#define FASTOPT_ADAMAX_SCALARS(X)                                                        \
  X(beta1) X(one_minus_beta1) X(beta2) X(eps) X(clr)
  FASTOPT_STATE(FASTOPT_ADAMAX_STATE)
  FASTOPT_SCALARS(FASTOPT_ADAMAX_SCALARS)

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    const M m = c.beta1 * st[exp_avg] + c.one_minus_beta1 * g;
    const M u = nan_max(c.beta2 * st[exp_inf], std::fabs(g) + c.eps);
    st[exp_avg] = m;
    st[exp_inf] = u;
    return p - c.clr * (m / u);
  }
};

}  // namespace fastopt
