#include "fastopt/rules/adagrad.h"

#include "multi_tensor.h"
#include "ops.h"

namespace fastopt::cpu::FASTOPT_ISA {

template <typename T, typename M>
static void adagrad_chunk(int64_t n, T* __restrict p, const T* __restrict g,
                          T* __restrict state_sum, const AdagradConsts<M>& c) {
  for (int64_t i = 0; i < n; ++i) adagrad_rule(p[i], g[i], state_sum[i], c);
}

void adagrad(const TensorList& tl, DType dtype, const AdagradHyper& h) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const AdagradConsts<math_t<T>> c(h);
    for_each_chunk(tl, [&](int64_t, int64_t t, int64_t b, int64_t e) {
      adagrad_chunk(e - b, tl.slot<T>(kAdagradParam, t) + b, tl.slot<T>(kAdagradGrad, t) + b,
                    tl.slot<T>(kAdagradStateSum, t) + b, c);
    });
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA
