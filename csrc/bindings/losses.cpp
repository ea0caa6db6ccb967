// Loss kernels take raw pointers: the Python layer (fastopt/losses.py) has already checked
// every array's shape, dtype, contiguity and writability, and allocated the outputs.
#include "bindings.h"

namespace fastopt {

namespace {
template <typename T> T* ptr(uint64_t p) { return reinterpret_cast<T*>(static_cast<uintptr_t>(p)); }
}  // namespace

void bind_losses(py::module_& m) {
  m.def(
      "cross_entropy",
      [](int dtype, uint64_t logits, uint64_t grad, uint64_t target, int target_kind,
         uint64_t weight, uint64_t row_loss, int64_t n, int64_t c, int64_t ignore_index,
         double label_smoothing, double z_loss, double softcap, int reduction, int64_t inner) {
        const DType dt = cpu_dtype(dtype);
        if (target_kind < 0 || target_kind > int(CeTarget::probs))
          throw py::value_error("unknown target kind");
        if (reduction < 0 || reduction > int(Reduction::sum))
          throw py::value_error("unknown reduction");
        if (n < 0 || c < 1) throw py::value_error("cross_entropy needs n >= 0 and c >= 1");
        if (inner < 1 || n % inner != 0)
          throw py::value_error("cross_entropy needs inner >= 1 dividing n");
        const CrossEntropyArgs a{ptr<const void>(logits), ptr<void>(grad),
                                 ptr<const void>(target), ptr<const void>(weight),
                                 ptr<double>(row_loss), n, c, CeTarget(target_kind),
                                 ignore_index, label_smoothing, z_loss, softcap,
                                 Reduction(reduction), inner};
        CrossEntropyResult r;
        {
          py::gil_scoped_release nogil;
          r = [&]() -> CrossEntropyResult { FASTOPT_CPU_CALL(cross_entropy, a, dt) }();
        }
        return py::make_tuple(r.loss_sum, r.denom, r.bad_row);
      },
      "fused softmax cross-entropy over rows (of [n, c] logits, or [n / inner, c, inner] ones): "
      "(sum of row losses, mean's denominator, first out-of-range row or -1)",
      py::arg("dtype"), py::arg("logits"), py::arg("grad"), py::arg("target"),
      py::arg("target_kind"), py::arg("weight"), py::arg("row_loss"), py::arg("n"), py::arg("c"),
      py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("z_loss"), py::arg("softcap"),
      py::arg("reduction"), py::arg("inner") = 1);
  m.def(
      "elementwise_loss",
      [](int kind, int dtype, uint64_t input, uint64_t target, uint64_t weight,
         int64_t weight_period, uint64_t pos_weight, int64_t pos_weight_period, uint64_t grad,
         uint64_t out, int64_t n, double param, double grad_scale) {
        const DType dt = cpu_dtype(dtype);
        if (kind < 0 || kind > int(PointLoss::kl_div_log_target))
          throw py::value_error("unknown element-wise loss");
        if ((weight && weight_period < 1) || (pos_weight && pos_weight_period < 1) || n < 0)
          throw py::value_error("bad sizes for elementwise_loss");
        const PointLossArgs a{ptr<const void>(input), ptr<const void>(target),
                              ptr<const void>(weight), weight_period,
                              ptr<const void>(pos_weight), pos_weight_period, ptr<void>(grad),
                              ptr<void>(out), n, param, grad_scale};
        py::gil_scoped_release nogil;
        return [&]() -> double { FASTOPT_CPU_CALL(elementwise_loss, a, dt, PointLoss(kind)) }();
      },
      "one fused pass of an element-wise loss: writes the gradient (and per-element losses) and "
      "returns the fixed-order sum of the losses",
      py::arg("kind"), py::arg("dtype"), py::arg("input"), py::arg("target"), py::arg("weight"),
      py::arg("weight_period"), py::arg("pos_weight"), py::arg("pos_weight_period"),
      py::arg("grad"), py::arg("out"), py::arg("n"), py::arg("param"), py::arg("grad_scale"));
}

}  // namespace fastopt
