// Adagrad (Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
// Stochastic Optimization", JMLR 2011), with torch.optim.Adagrad's lr decay.
//
//   (weight decay and L1 are the frame's: fastopt/rule.h)
//   s = s + g^2;   p = p - clr g / (sqrt(s) + eps)     (clr = lr / (1 + (step - 1) lr_decay))
#pragma once
#include <cmath>

#include "fastopt/rule.h"

namespace fastopt {

struct Adagrad : Rule {
  static constexpr const char* name = "adagrad";
#define FASTOPT_ADAGRAD_STATE(X) X(state_sum)
#define FASTOPT_ADAGRAD_SCALARS(X) X(clr) X(eps)
  FASTOPT_STATE(FASTOPT_ADAGRAD_STATE)
  FASTOPT_SCALARS(FASTOPT_ADAGRAD_SCALARS)

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    const M s = st[state_sum] + g * g;
    st[state_sum] = s;
    return p - c.clr * (g / (std::sqrt(s) + c.eps));
  }
};

}  // namespace fastopt
