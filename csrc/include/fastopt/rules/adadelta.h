// Adadelta (Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012), as
// torch.optim.Adadelta (with its lr factor).
//
//   (weight decay and L1 are the frame's: fastopt/rule.h)
//   s = rho s + (1 - rho) g^2;   d = sqrt(a + eps) / sqrt(s + eps) g
//   a = rho a + (1 - rho) d^2;   p = p - lr d
#pragma once
#include <cmath>

#include "fastopt/rule.h"

namespace fastopt {

struct Adadelta : Rule {
  static constexpr const char* name = "adadelta";
#define FASTOPT_ADADELTA_STATE(X) X(square_avg) X(acc_delta)
#define FASTOPT_ADADELTA_SCALARS(X)                                                      \
  X(lr) X(rho) X(one_minus_rho) X(eps)
  FASTOPT_STATE(FASTOPT_ADADELTA_STATE)
  FASTOPT_SCALARS(FASTOPT_ADADELTA_SCALARS)

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    const M s = c.rho * st[square_avg] + c.one_minus_rho * g * g;
    const M std_dev = std::sqrt(s + c.eps);
    const M delta = std::sqrt(st[acc_delta] + c.eps) / std_dev * g;
    st[square_avg] = s;
    st[acc_delta] = c.rho * st[acc_delta] + c.one_minus_rho * delta * delta;
    return p - c.lr * delta;
  }
};

}  // namespace fastopt
