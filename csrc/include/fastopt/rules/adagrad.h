// Adagrad (Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
// Stochastic Optimization", JMLR 2011), with torch.optim.Adagrad's lr decay.
#pragma once
#include <cmath>

#include "fastopt/common.h"

namespace fastopt {

enum AdagradSlot { kAdagradParam, kAdagradGrad, kAdagradStateSum, kAdagradSlots };

struct AdagradHyper {
  double clr;  // lr / (1 + (step - 1) lr_decay), on the host in float64
  double weight_decay, eps;
  bool maximize;
};

template <typename M> struct AdagradConsts {
  M clr, weight_decay, eps, grad_sign;
  bool has_weight_decay;
  FASTOPT_HD explicit AdagradConsts(const AdagradHyper& h)
      : clr(M(h.clr)), weight_decay(M(h.weight_decay)), eps(M(h.eps)),
        grad_sign(h.maximize ? M(-1) : M(1)), has_weight_decay(h.weight_decay != 0.0) {}
};

// s = s + g^2;  p = p - clr g / (sqrt(s) + eps)
template <typename T, typename M>
FASTOPT_HD void adagrad_rule(T& param, T grad, T& state_sum, const AdagradConsts<M>& c) {
  const M p = M(param);
  M g = M(grad) * c.grad_sign;
  if (c.has_weight_decay) g = g + c.weight_decay * p;
  const M s = M(state_sum) + g * g;
  state_sum = T(s);
  param = T(p - c.clr * (g / (std::sqrt(s) + c.eps)));
}

}  // namespace fastopt
