#include "fastopt/rules/rmsprop.h"

#include "cuda/multi_tensor_apply.cuh"

namespace fastopt::cuda {

template <bool Centered, bool Momentum, typename T>
struct RmspropOp {
  static constexpr unsigned kWrite = 0b11101u;  // everything but the gradient
  RmspropHyper h;
  DeviceScalars dev;
  RmspropConsts<math_t<T>> c{RmspropHyper{}};

  FASTOPT_HD bool prepare() {
    RmspropHyper hh = h;
    if (dev.lr) hh.lr = *dev.lr;
    c = RmspropConsts<math_t<T>>(hh);
    return true;
  }
  FASTOPT_HD void operator()(T (&x)[kRmspropSlots]) const {
    rmsprop_rule<Centered, Momentum>(x[kRmspropParam], x[kRmspropGrad], x[kRmspropSquareAvg],
                                     &x[kRmspropMomentumBuffer], &x[kRmspropGradAvg], c);
  }
};

void rmsprop(const TensorList& tl, DType dtype, const RmspropHyper& h, DeviceScalars dev,
             uintptr_t stream) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_flag(h.centered, [&](auto centered) {
      with_flag(h.momentum > 0.0, [&](auto momentum) {
        multi_tensor_apply<kRmspropSlots, T>(
            tl, RmspropOp<decltype(centered)::value, decltype(momentum)::value, T>{h, dev},
            stream);
      });
    });
  });
}

}  // namespace fastopt::cuda
