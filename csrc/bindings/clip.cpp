#include "bindings.h"

namespace fastopt {

void bind_clip(py::module_& m) {
  m.def(
      "norm_sum",
      [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int kind, double p) {
        const TensorList tl = tensor_list(ptrs, numel, 1);
        const DType dt = cpu_dtype(dtype);
        if (kind < 0 || kind > int(NormKind::lp)) throw py::value_error("unknown norm kind");
        py::gil_scoped_release nogil;
        return [&]() -> double { FASTOPT_CPU_CALL(norm, tl, dt, NormKind(kind), p) }();
      },
      "sum of |x|^p over a tensor list (max |x| for kind linf), fixed-order and deterministic",
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"),
      py::arg("kind"), py::arg("p"));
  m.def(
      "scale",
      [](const PtrTable& ptrs, const NumelArray& numel, int dtype, double coef) {
        const TensorList tl = tensor_list(ptrs, numel, 1);
        const DType dt = cpu_dtype(dtype);
        py::gil_scoped_release nogil;
        [&] { FASTOPT_CPU_CALL(scale, tl, dt, coef) }();
      },
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"),
      py::arg("coef"));
  m.def(
      "clamp",
      [](const PtrTable& ptrs, const NumelArray& numel, int dtype, double clip_value) {
        const TensorList tl = tensor_list(ptrs, numel, 1);
        const DType dt = cpu_dtype(dtype);
        py::gil_scoped_release nogil;
        [&] { FASTOPT_CPU_CALL(clamp, tl, dt, clip_value) }();
      },
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"),
      py::arg("clip_value"));
}

}  // namespace fastopt
