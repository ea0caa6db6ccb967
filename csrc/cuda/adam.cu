#include "fastopt/rules/adam.h"

#include "cuda/multi_tensor_apply.cuh"

namespace fastopt::cuda {

template <bool Amsgrad, typename T>
struct AdamOp {
  static constexpr unsigned kWrite = 0b11101u;  // everything but the gradient
  AdamHyper h;
  DeviceScalars dev;
  // constructed per thread: from the device scalars when capturable
  AdamConsts<math_t<T>> c{AdamHyper{}};

  FASTOPT_HD bool prepare() {
    AdamHyper hh = h;
    if (dev.lr) hh.lr = *dev.lr;
    if (dev.step) {
      const double step = *dev.step;
      if (!dev.counted(step)) return false;
      // a host value of exactly 1 means no bias correction (or beta == 0)
      if (hh.bias_correction1 != 1.0) hh.bias_correction1 = 1.0 - std::pow(hh.beta1, step);
      if (hh.bias_correction2 != 1.0) hh.bias_correction2 = 1.0 - std::pow(hh.beta2, step);
    }
    c = AdamConsts<math_t<T>>(hh);
    return true;
  }
  FASTOPT_HD void operator()(T (&x)[kAdamSlots]) const {
    adam_rule<Amsgrad>(x[kAdamParam], x[kAdamGrad], x[kAdamExpAvg], x[kAdamExpAvgSq],
                       &x[kAdamMaxExpAvgSq], c);
  }
};

void adam(const TensorList& tl, DType dtype, const AdamHyper& h, DeviceScalars dev,
          uintptr_t stream) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_flag(h.amsgrad, [&](auto amsgrad) {
      AdamOp<decltype(amsgrad)::value, T> op{h, dev};
      multi_tensor_apply<kAdamSlots, T>(tl, op, stream);
    });
  });
}

}  // namespace fastopt::cuda
