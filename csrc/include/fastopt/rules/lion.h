// Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023) with
// decoupled weight decay.
#pragma once
#include "fastopt/common.h"

namespace fastopt {

enum LionSlot { kLionParam, kLionGrad, kLionExpAvg, kLionSlots };

struct LionHyper {
  double lr, beta1, beta2, weight_decay;
  bool maximize;
};

template <typename M> struct LionConsts {
  M lr, beta2, one_minus_beta2, decay_factor, grad_sign;
  double beta1, one_minus_beta1;
  FASTOPT_HD explicit LionConsts(const LionHyper& h)
      : lr(M(h.lr)), beta2(M(h.beta2)), one_minus_beta2(M(1.0 - h.beta2)),
        decay_factor(M(1.0 - h.lr * h.weight_decay)), grad_sign(h.maximize ? M(-1) : M(1)),
        beta1(h.beta1), one_minus_beta1(1.0 - h.beta1) {}
};

// p = p (1 - lr wd);  p = p - lr sign(b1 m + (1 - b1) g);  m = b2 m + (1 - b2) g
// The interpolation that is signed is formed in double even for float storage: its sign flips
// the whole update, and double makes it agree with the float64 specification.
template <typename T, typename M>
FASTOPT_HD void lion_rule(T& param, T grad, T& exp_avg, const LionConsts<M>& c) {
  const M g = M(grad) * c.grad_sign;
  const M m = M(exp_avg);
  const double interp = c.beta1 * double(m) + c.one_minus_beta1 * double(g);
  const M p = M(param) * c.decay_factor;
  param = T(p - c.lr * M(nan_sign(interp)));
  exp_avg = T(c.beta2 * m + c.one_minus_beta2 * g);
}

}  // namespace fastopt
