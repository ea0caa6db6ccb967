#include "fastopt/rules/lion.h"

#include "cuda/multi_tensor_apply.cuh"

namespace fastopt::cuda {

template <typename T>
struct LionOp {
  static constexpr unsigned kWrite = 0b101u;  // param, exp_avg
  LionHyper h;
  DeviceScalars dev;
  LionConsts c{LionHyper{}};

  FASTOPT_HD bool prepare() {
    LionHyper hh = h;
    if (dev.lr) hh.lr = *dev.lr;
    c = LionConsts(hh);
    return true;
  }
  FASTOPT_HD void operator()(T (&x)[kLionSlots]) const {
    lion_rule(x[kLionParam], x[kLionGrad], x[kLionExpAvg], c);
  }
};

void lion(const TensorList& tl, DType dtype, const LionHyper& h, DeviceScalars dev,
          uintptr_t stream) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    multi_tensor_apply<kLionSlots, T>(tl, LionOp<T>{h, dev}, stream);
  });
}

}  // namespace fastopt::cuda
