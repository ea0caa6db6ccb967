// RMSprop (Hinton, Coursera lecture 6e, 2012), centered variant (Graves, "Generating
// Sequences With Recurrent Neural Networks", 2013), with momentum, as torch.optim.RMSprop.
//
//   (weight decay and L1 are the frame's: fastopt/rule.h)
//   s = a s + (1 - a) g^2
//   centered: ga = a ga + (1 - a) g,  avg = sqrt(s - ga^2) + eps;   else avg = sqrt(s) + eps
//   momentum: b = mu b + g / avg,  p = p - lr b;                    else p = p - lr g / avg
#pragma once
#include <cmath>

#include "fastopt/rule.h"

namespace fastopt {

struct Rmsprop : Rule {
  static constexpr const char* name = "rmsprop";
#define FASTOPT_RMSPROP_STATE(X) X(square_avg) X(momentum_buffer) X(grad_avg)
#define FASTOPT_RMSPROP_SCALARS(X)                                                   \
  X(lr) X(alpha) X(one_minus_alpha) X(eps) X(momentum) X(centered) X(has_momentum)
  FASTOPT_STATE(FASTOPT_RMSPROP_STATE)
  FASTOPT_SCALARS(FASTOPT_RMSPROP_SCALARS)
  using Variants = VariantFlags<S::centered, S::has_momentum>;
  static constexpr unsigned kCentered = Variants::bit<S::centered>;
  static constexpr unsigned kMomentum = Variants::bit<S::has_momentum>;

  static constexpr unsigned uses(unsigned v) {
    return ~((v & kMomentum ? 0u : row(momentum_buffer)) | (v & kCentered ? 0u : row(grad_avg)));
  }

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    const M s = c.alpha * st[square_avg] + c.one_minus_alpha * g * g;
    st[square_avg] = s;
    M avg;
    if constexpr (V & kCentered) {
      const M ga = c.alpha * st[grad_avg] + c.one_minus_alpha * g;
      st[grad_avg] = ga;
      avg = std::sqrt(s - ga * ga) + c.eps;
    } else {
      avg = std::sqrt(s) + c.eps;
    }
    if constexpr (V & kMomentum) {
      const M b = c.momentum * st[momentum_buffer] + g / avg;
      st[momentum_buffer] = b;
      return p - c.lr * b;
    } else {
      return p - c.lr * (g / avg);
    }
  }
};

}  // namespace fastopt
