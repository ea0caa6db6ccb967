#include "fastopt/rules/lion.h"

#include "multi_tensor.h"
#include "ops.h"

namespace fastopt::cpu::FASTOPT_ISA {

template <typename T>
static void lion_chunk(int64_t n, T* __restrict p, const T* __restrict g, T* __restrict m,
                       const LionConsts& c) {
  for (int64_t i = 0; i < n; ++i) lion_rule(p[i], g[i], m[i], c);
}

void lion(const TensorList& tl, DType dtype, const LionHyper& h) {
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const LionConsts c(h);
    for_each_chunk(tl, [&](int64_t, int64_t t, int64_t b, int64_t e) {
      lion_chunk(e - b, tl.slot<T>(kLionParam, t) + b, tl.slot<T>(kLionGrad, t) + b,
                 tl.slot<T>(kLionExpAvg, t) + b, c);
    });
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA
