// SGD with momentum, dampening, Nesterov momentum and L2 weight decay (torch.optim.SGD).
// Nesterov: Sutskever et al., "On the importance of initialization and momentum in deep
// learning", ICML 2013.
#pragma once
#include "fastopt/common.h"

namespace fastopt {

enum SgdSlot { kSgdParam, kSgdGrad, kSgdMomentumBuffer, kSgdSlots };

struct SgdHyper {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
  bool first_step;  // the momentum buffer starts as a copy of the first update
};

template <typename M> struct SgdConsts {
  M lr, momentum, one_minus_dampening, weight_decay, grad_sign;
  bool nesterov, has_weight_decay, first_step;
  FASTOPT_HD explicit SgdConsts(const SgdHyper& h)
      : lr(M(h.lr)), momentum(M(h.momentum)), one_minus_dampening(M(1.0 - h.dampening)),
        weight_decay(M(h.weight_decay)), grad_sign(h.maximize ? M(-1) : M(1)),
        nesterov(h.nesterov), has_weight_decay(h.weight_decay != 0.0),
        first_step(h.first_step) {}
};

// d = g (+ wd p);  b = first ? d : mu b + (1 - dampening) d;  d = nesterov ? d + mu b : b
// p = p - lr d
template <bool Momentum, typename T, typename M>
FASTOPT_HD void sgd_rule(T& param, T grad, T* buf, const SgdConsts<M>& c) {
  M p = M(param);
  M d = M(grad) * c.grad_sign;
  if (c.has_weight_decay) d = d + c.weight_decay * p;
  if constexpr (Momentum) {
    M b = c.first_step ? d : c.momentum * M(*buf) + c.one_minus_dampening * d;
    *buf = T(b);
    d = c.nesterov ? d + c.momentum * b : b;
  }
  param = T(p - c.lr * d);
}

}  // namespace fastopt
