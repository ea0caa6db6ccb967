#include "bindings.h"

namespace fastopt {

// scale and clamp: one value applied in place to every element of a tensor list.
template <typename Kernel>
static void def_in_place(py::module_& m, const char* name, const char* value, Kernel kernel) {
  m.def(
      name,
      [kernel](const PtrTable& ptrs, const NumelArray& numel, int dtype, double v) {
        const TensorList tl = tensor_list(ptrs, numel, 1);
        const DType dt = cpu_storage_dtype(dtype);
        py::gil_scoped_release nogil;
        kernel(tl, dt, v);
      },
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"),
      py::arg(value));
}

void bind_clip(py::module_& m) {
  m.def(
      "norm_sum",
      [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int kind, double p) {
        const TensorList tl = tensor_list(ptrs, numel, 1);
        const DType dt = cpu_storage_dtype(dtype);
        if (kind < 0 || kind > int(NormKind::lp)) throw py::value_error("unknown norm kind");
        py::gil_scoped_release nogil;
        return [&]() -> double { FASTOPT_CPU_CALL(norm, tl, dt, NormKind(kind), p) }();
      },
      "sum of |x|^p over a tensor list (max |x| for kind linf), fixed-order and deterministic",
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"),
      py::arg("kind"), py::arg("p"));
  def_in_place(m, "scale", "coef", [](const TensorList& tl, DType dt, double coef) {
    FASTOPT_CPU_CALL(scale, tl, dt, coef)
  });
  def_in_place(m, "clamp", "clip_value", [](const TensorList& tl, DType dt, double clip_value) {
    FASTOPT_CPU_CALL(clamp, tl, dt, clip_value)
  });
}

}  // namespace fastopt
