#include "fastopt/rules/sgd.h"

#include "cuda/multi_tensor_apply.cuh"

namespace fastopt::cuda {

template <bool Momentum, typename T>
struct SgdOp {
  static constexpr unsigned kWrite = 0b101u;  // param, momentum buffer
  SgdHyper h;
  DeviceScalars dev;
  SgdConsts<math_t<T>> c{SgdHyper{}};

  FASTOPT_HD bool prepare() {
    SgdHyper hh = h;
    if (dev.lr) hh.lr = *dev.lr;
    if (dev.step) {
      if (!dev.counted(*dev.step)) return false;
      hh.first_step = *dev.step == 1.0;
    }
    c = SgdConsts<math_t<T>>(hh);
    return true;
  }
  FASTOPT_HD void operator()(T (&x)[kSgdSlots]) const {
    sgd_rule<Momentum>(x[kSgdParam], x[kSgdGrad], &x[kSgdMomentumBuffer], c);
  }
};

void sgd(const TensorList& tl, DType dtype, const SgdHyper& h, DeviceScalars dev,
         uintptr_t stream) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_flag(h.momentum != 0.0, [&](auto momentum) {
      multi_tensor_apply<kSgdSlots, T>(tl, SgdOp<decltype(momentum)::value, T>{h, dev}, stream);
    });
  });
}

}  // namespace fastopt::cuda
