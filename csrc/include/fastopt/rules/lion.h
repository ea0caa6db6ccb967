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

// Lion is computed in double whatever the storage: the sign of the interpolation flips the
// whole update, so the momentum it is formed from must round exactly as the float64
// specification's does, or a one-ulp difference in m later flips a sign.
struct LionConsts {
  double lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay_factor, grad_sign;
  FASTOPT_HD explicit LionConsts(const LionHyper& h)
      : lr(h.lr), beta1(h.beta1), one_minus_beta1(1.0 - h.beta1), beta2(h.beta2),
        one_minus_beta2(1.0 - h.beta2), decay_factor(1.0 - h.lr * h.weight_decay),
        grad_sign(h.maximize ? -1.0 : 1.0) {}
};

// p = p (1 - lr wd);  p = p - lr sign(b1 m + (1 - b1) g);  m = b2 m + (1 - b2) g
template <typename T>
FASTOPT_HD void lion_rule(T& param, T grad, T& exp_avg, const LionConsts& c) {
  const double g = double(grad) * c.grad_sign;
  const double m = double(exp_avg);
  const double p = double(param) * c.decay_factor;
  param = T(p - c.lr * nan_sign(c.beta1 * m + c.one_minus_beta1 * g));
  exp_avg = T(c.beta2 * m + c.one_minus_beta2 * g);
}

}  // namespace fastopt
