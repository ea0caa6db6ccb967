// SGD with momentum, dampening, Nesterov momentum and L2 weight decay (torch.optim.SGD).
// Nesterov: Sutskever et al., "On the importance of initialization and momentum in deep
// learning", ICML 2013.
//
//   (weight decay and L1 are the frame's: fastopt/rule.h)
//   b = first_step ? g : mu b + (1 - dampening) g   (has_momentum; the buffer starts as a
//   g = nesterov ? g + mu b : b                      copy of the first update)
//   p = p - lr g
#pragma once
#include "fastopt/rule.h"

namespace fastopt {

struct Sgd : Rule {
  static constexpr const char* name = "sgd";
#define FASTOPT_SGD_STATE(X) X(momentum_buffer)
#define FASTOPT_SGD_SCALARS(X)                                                     \
  X(lr) X(momentum) X(one_minus_dampening) X(nesterov) X(first_step) X(has_momentum)
  FASTOPT_STATE(FASTOPT_SGD_STATE)
  FASTOPT_SCALARS(FASTOPT_SGD_SCALARS)
  using Variants = VariantFlags<S::has_momentum>;
  static constexpr unsigned kMomentum = Variants::bit<S::has_momentum>;

  static constexpr unsigned uses(unsigned v) {
    return v & kMomentum ? ~0u : ~row(momentum_buffer);
  }

  template <unsigned V, typename M>
  static FASTOPT_HD M update(M p, M g, M (&st)[kState], const Consts<M>& c) {
    if constexpr (V & kMomentum) {
      const M b = c.first_step != M(0) ? g : c.momentum * st[momentum_buffer] +
                                                 c.one_minus_dampening * g;
      st[momentum_buffer] = b;
      g = c.nesterov != M(0) ? g + c.momentum * b : b;
    }
    return p - c.lr * g;
  }
};

}  // namespace fastopt
