#include "fastopt/rules/adagrad.h"

#include "cuda/multi_tensor_apply.cuh"

namespace fastopt::cuda {

template <typename T>
struct AdagradOp {
  static constexpr unsigned kWrite = 0b101u;  // param, state sum
  AdagradHyper h;
  double lr_decay;
  DeviceScalars dev;
  AdagradConsts<math_t<T>> c{AdagradHyper{}};

  FASTOPT_HD void prepare() {
    AdagradHyper hh = h;
    // capturable: clr = lr / (1 + (step - 1) lr_decay) from the device values
    if (dev.lr || dev.step) {
      const double lr = dev.lr ? *dev.lr : h.clr;
      const double step = dev.step ? *dev.step : 1.0;
      hh.clr = lr / (1.0 + (step - 1.0) * lr_decay);
    }
    c = AdagradConsts<math_t<T>>(hh);
  }
  FASTOPT_HD void operator()(T (&x)[kAdagradSlots]) const {
    adagrad_rule(x[kAdagradParam], x[kAdagradGrad], x[kAdagradStateSum], c);
  }
};

void adagrad(const TensorList& tl, DType dtype, const AdagradHyper& h, double lr_decay,
             DeviceScalars dev, uintptr_t stream) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    multi_tensor_apply<kAdagradSlots, T>(tl, AdagradOp<T>{h, lr_decay, dev}, stream);
  });
}

}  // namespace fastopt::cuda
