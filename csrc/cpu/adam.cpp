#include "fastopt/rules/adam.h"

#include "multi_tensor.h"
#include "ops.h"

namespace fastopt::cpu::FASTOPT_ISA {

template <bool Amsgrad, typename T, typename M>
static void adam_chunk(int64_t n, T* __restrict p, const T* __restrict g, T* __restrict m,
                       T* __restrict v, T* __restrict vmax, const AdamConsts<M>& c) {
  for (int64_t i = 0; i < n; ++i)
    adam_rule<Amsgrad>(p[i], g[i], m[i], v[i], Amsgrad ? vmax + i : nullptr, c);
}

void adam(const TensorList& tl, DType dtype, const AdamHyper& h) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const AdamConsts<math_t<T>> c(h);
    with_flag(h.amsgrad, [&](auto amsgrad) {
      for_each_chunk(tl, [&](int64_t, int64_t t, int64_t b, int64_t e) {
        adam_chunk<amsgrad>(e - b, tl.slot<T>(kAdamParam, t) + b, tl.slot<T>(kAdamGrad, t) + b,
                            tl.slot<T>(kAdamExpAvg, t) + b, tl.slot<T>(kAdamExpAvgSq, t) + b,
                            amsgrad ? tl.slot<T>(kAdamMaxExpAvgSq, t) + b : nullptr, c);
      });
    });
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA
