#include "fastopt/rules/sgd.h"

#include "multi_tensor.h"
#include "ops.h"

namespace fastopt::cpu::FASTOPT_ISA {

template <bool Momentum, typename T, typename M>
static void sgd_chunk(int64_t n, T* __restrict p, const T* __restrict g, T* __restrict buf,
                      const SgdConsts<M>& c) {
  for (int64_t i = 0; i < n; ++i) sgd_rule<Momentum>(p[i], g[i], Momentum ? buf + i : nullptr, c);
}

void sgd(const TensorList& tl, DType dtype, const SgdHyper& h) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const SgdConsts<math_t<T>> c(h);
    with_flag(h.momentum != 0.0, [&](auto momentum) {
      for_each_chunk(tl, [&](int64_t, int64_t t, int64_t b, int64_t e) {
        sgd_chunk<momentum>(e - b, tl.slot<T>(kSgdParam, t) + b, tl.slot<T>(kSgdGrad, t) + b,
                            momentum ? tl.slot<T>(kSgdMomentumBuffer, t) + b : nullptr, c);
      });
    });
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA
