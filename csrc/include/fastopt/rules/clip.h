// Per-element pieces of gradient clipping (torch.nn.utils.clip_grad_norm_ / clip_grad_value_).
#pragma once
#include <cmath>

#include "fastopt/common.h"

namespace fastopt {

// The norm of a tensor list is (sum |x|^p)^(1/p); p = inf takes max |x| instead.
enum class NormKind : int { l2 = 0, l1 = 1, linf = 2, lp = 3 };

// One element's contribution to the norm's sum (or, for linf, to the max), in double so a sum
// over 10^9 float elements stays accurate.
template <typename T>
FASTOPT_HD double norm_term(T x, NormKind kind, double p) {
  const double a = std::fabs(double(x));
  switch (kind) {
    case NormKind::l2: return a * a;
    case NormKind::l1:
    case NormKind::linf: return a;
    default: return std::pow(a, p);
  }
}

// g = g * coef, with coef = min(max_norm / (norm + 1e-6), 1) computed on the host.
template <typename T, typename M>
FASTOPT_HD void scale_rule(T& grad, M coef) { grad = T(M(grad) * coef); }

// g = clamp(g, -clip_value, clip_value); NaN stays NaN.
template <typename T, typename M>
FASTOPT_HD void clamp_rule(T& grad, M clip_value) {
  const M g = M(grad);
  grad = T(g < -clip_value ? -clip_value : (g > clip_value ? clip_value : g));
}

}  // namespace fastopt
