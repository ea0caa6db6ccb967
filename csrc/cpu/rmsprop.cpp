#include "fastopt/rules/rmsprop.h"

#include "multi_tensor.h"
#include "ops.h"

namespace fastopt::cpu::FASTOPT_ISA {

template <bool Centered, bool Momentum, typename T, typename M>
static void rmsprop_chunk(int64_t n, T* __restrict p, const T* __restrict g,
                          T* __restrict square_avg, T* __restrict buf, T* __restrict grad_avg,
                          const RmspropConsts<M>& c) {
  for (int64_t i = 0; i < n; ++i)
    rmsprop_rule<Centered, Momentum>(p[i], g[i], square_avg[i], Momentum ? buf + i : nullptr,
                                     Centered ? grad_avg + i : nullptr, c);
}

void rmsprop(const TensorList& tl, DType dtype, const RmspropHyper& h) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const RmspropConsts<math_t<T>> c(h);
    with_flag(h.centered, [&](auto centered) {
      with_flag(h.momentum > 0.0, [&](auto momentum) {
        for_each_chunk(tl, [&](int64_t, int64_t t, int64_t b, int64_t e) {
          rmsprop_chunk<centered, momentum>(
              e - b, tl.slot<T>(kRmspropParam, t) + b, tl.slot<T>(kRmspropGrad, t) + b,
              tl.slot<T>(kRmspropSquareAvg, t) + b,
              momentum ? tl.slot<T>(kRmspropMomentumBuffer, t) + b : nullptr,
              centered ? tl.slot<T>(kRmspropGradAvg, t) + b : nullptr, c);
        });
      });
    });
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA
