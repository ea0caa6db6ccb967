// Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023) with
// decoupled weight decay.
//
//   p = p (1 - lr wd);   p = p - lr sign(b1 m + (1 - b1) g);   m = b2 m + (1 - b2) g
#pragma once
#include "fastopt/rule.h"

namespace fastopt {

struct Lion : Rule {
  static constexpr const char* name = "lion";
#define FASTOPT_LION_STATE(X) X(exp_avg)
#define FASTOPT_LION_SCALARS(X)                                                      \
  X(lr) X(beta1) X(one_minus_beta1) X(beta2) X(one_minus_beta2)
  FASTOPT_STATE(FASTOPT_LION_STATE)
  FASTOPT_SCALARS(FASTOPT_LION_SCALARS)
  // double whatever the storage: the sign of the interpolation flips the whole update, so the
  // momentum it is formed from must round exactly as the float64 specification's does, or a
  // one-ulp difference in m later flips a sign
  template <typename T> using Math = double;

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    const M m = st[exp_avg];
    p = p - c.lr * nan_sign(c.beta1 * m + c.one_minus_beta1 * g);
    st[exp_avg] = c.beta2 * m + c.one_minus_beta2 * g;
    return p;
  }
};

}  // namespace fastopt
