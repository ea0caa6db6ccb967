#include "fastopt/rules/adagrad.h"

#include "cuda/multi_tensor_apply.cuh"

namespace fastopt::cuda {

template <typename T>
struct AdagradOp {
  static constexpr unsigned kWrite = 0b101u;  // param, state sum
  AdagradHyper h;  // h.clr from the host lr and step
  AdagradSchedule s;
  DeviceScalars dev;
  AdagradConsts<math_t<T>> c{AdagradHyper{}};

  // capturable: clr = lr / (1 + (step - 1) lr_decay), each of lr and step taken from the
  // device where its pointer is given and from the host otherwise
  FASTOPT_HD bool prepare() {
    AdagradHyper hh = h;
    if (dev.lr || dev.step) {
      const double lr = dev.lr ? *dev.lr : s.lr;
      const double step = dev.step ? *dev.step : s.step;
      if (dev.step && !dev.counted(step)) return false;
      hh.clr = lr / (1.0 + (step - 1.0) * s.lr_decay);
    }
    c = AdagradConsts<math_t<T>>(hh);
    return true;
  }
  FASTOPT_HD void operator()(T (&x)[kAdagradSlots]) const {
    adagrad_rule(x[kAdagradParam], x[kAdagradGrad], x[kAdagradStateSum], c);
  }
};

void adagrad(const TensorList& tl, DType dtype, const AdagradHyper& h, const AdagradSchedule& s,
             DeviceScalars dev, uintptr_t stream) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    multi_tensor_apply<kAdagradSlots, T>(tl, AdagradOp<T>{h, s, dev}, stream);
  });
}

}  // namespace fastopt::cuda
