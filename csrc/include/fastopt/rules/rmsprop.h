// RMSprop (Hinton, Coursera lecture 6e, 2012), centered variant (Graves, "Generating
// Sequences With Recurrent Neural Networks", 2013), with momentum, as torch.optim.RMSprop.
#pragma once
#include <cmath>

#include "fastopt/common.h"

namespace fastopt {

enum RmspropSlot {
  kRmspropParam, kRmspropGrad, kRmspropSquareAvg, kRmspropMomentumBuffer, kRmspropGradAvg,
  kRmspropSlots
};

struct RmspropHyper {
  double lr, alpha, eps, weight_decay, momentum;
  bool centered, maximize;
};

template <typename M> struct RmspropConsts {
  M lr, alpha, one_minus_alpha, eps, weight_decay, momentum, grad_sign;
  bool has_weight_decay;
  FASTOPT_HD explicit RmspropConsts(const RmspropHyper& h)
      : lr(M(h.lr)), alpha(M(h.alpha)), one_minus_alpha(M(1.0 - h.alpha)), eps(M(h.eps)),
        weight_decay(M(h.weight_decay)), momentum(M(h.momentum)),
        grad_sign(h.maximize ? M(-1) : M(1)), has_weight_decay(h.weight_decay != 0.0) {}
};

// s = a s + (1 - a) g^2;  centered: ga = a ga + (1 - a) g, avg = sqrt(s - ga^2) + eps,
// else avg = sqrt(s) + eps;  momentum: b = mu b + g / avg, p = p - lr b;  else p = p - lr g / avg
template <bool Centered, bool Momentum, typename T, typename M>
FASTOPT_HD void rmsprop_rule(T& param, T grad, T& square_avg, T* momentum_buffer, T* grad_avg,
                             const RmspropConsts<M>& c) {
  const M p = M(param);
  M g = M(grad) * c.grad_sign;
  if (c.has_weight_decay) g = g + c.weight_decay * p;
  const M s = c.alpha * M(square_avg) + c.one_minus_alpha * g * g;
  square_avg = T(s);
  M avg;
  if constexpr (Centered) {
    const M ga = c.alpha * M(*grad_avg) + c.one_minus_alpha * g;
    *grad_avg = T(ga);
    avg = std::sqrt(s - ga * ga) + c.eps;
  } else {
    avg = std::sqrt(s) + c.eps;
  }
  if constexpr (Momentum) {
    const M b = c.momentum * M(*momentum_buffer) + g / avg;
    *momentum_buffer = T(b);
    param = T(p - c.lr * b);
  } else {
    param = T(p - c.lr * (g / avg));
  }
}

}  // namespace fastopt
