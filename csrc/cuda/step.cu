// The CUDA driver of every optimizer in fastopt/optimizers.h: one multi-tensor-apply launch
// sequence per step, each element's rows loaded into registers, stepped by step_element (the
// CPU driver's per-element step, fastopt/rule.h) and the rows the rule writes stored back.
// The scalar vector is read on the host into the op's Consts, passed in the kernel arguments.
#include "cuda/multi_tensor_apply.cuh"
#include "fastopt/optimizers.h"

namespace fastopt::cuda {

// unscale != 1: the grad is unscaled in place first (g = g * unscale, GradScaler's 1 / scale)
// and the step takes the unrounded product, as the CPU driver and torch's fused steps do.
template <class Op, unsigned V, bool L1, typename T>
struct StepOp {
  using M = typename Op::template Math<T>;
  static constexpr unsigned kUse = Op::uses(V);
  static constexpr unsigned kWrite = Op::kWritten & kUse;
  typename Op::template Consts<M> c;
  M unscale = M(1);

  FASTOPT_HD unsigned writes() const { return kWrite | (unscale != M(1) ? 0b10u : 0u); }
  FASTOPT_HD void prepare() {}
  FASTOPT_HD void operator()(T (&x)[Op::kSlots]) const {
    M st[Op::kState];
#pragma unroll
    for (int k = 0; k < Op::kState; ++k) st[k] = (kUse >> (2 + k) & 1u) ? M(x[2 + k]) : M(0);
    M g = M(x[1]);
    if (unscale != M(1)) {
      g = g * unscale;
      x[1] = T(g);
    }
    x[0] = T(step_element<Op, V, L1>(M(x[0]), g, st, c));
#pragma unroll
    for (int k = 0; k < Op::kState; ++k)
      if (kWrite >> (2 + k) & 1u) x[2 + k] = T(st[k]);
  }
};

template <class Op>
void step_op(const TensorList& tl, DType dtype, const double* s, double unscale,
             uintptr_t stream) {
  const unsigned variant = rule_info<Op>().variant(s);
  const bool l1 = s[kL1] != 0.0 || s[kProx] != 0.0;
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    using M = typename Op::template Math<T>;
    using Consts = typename Op::template Consts<M>;
    with_variant<Op::Variants::count>(variant, [&](auto v) {
      with_flag(l1, [&](auto l1_on) {
        using Step = StepOp<Op, decltype(v)::value, decltype(l1_on)::value, T>;
        multi_tensor_apply<Op::kSlots, T>(tl, Step{Consts(s), M(unscale)}, stream);
      });
    });
  });
}

void step(int op, const TensorList& tl, DType dtype, const double* scalars, double unscale,
          uintptr_t stream) {
  visit(Optimizers{}, op, [&](auto tag) {
    step_op<typename decltype(tag)::type>(tl, dtype, scalars, unscale, stream);
  });
}

}  // namespace fastopt::cuda
