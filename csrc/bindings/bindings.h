// Helpers shared by the binding files. Bindings turn Python tables of pointers and sizes into
// TensorLists, release the GIL and call the kernels; they do nothing else.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <initializer_list>
#include <string>

#include "cpu/ops.h"
#include "fastopt/rule.h"
#include "fastopt/tensor_list.h"

namespace fastopt {
namespace py = pybind11;

// c_style + noconvert (at each py::arg) so a wrong table raises instead of being copied.
using PtrTable = py::array_t<uint64_t, py::array::c_style>;
using NumelArray = py::array_t<int64_t, py::array::c_style>;

inline TensorList tensor_list(const PtrTable& ptrs, const NumelArray& numel, int n_slots) {
  if (ptrs.ndim() != 2 || numel.ndim() != 1 || ptrs.shape(0) != n_slots ||
      ptrs.shape(1) != numel.shape(0))
    throw py::value_error("pointer table must have shape (" + std::to_string(n_slots) +
                          ", n_tensors) matching numel");
  return TensorList{ptrs.data(), numel.data(), numel.shape(0), n_slots};
}

// An optimizer's scalar vector (fastopt/rule.h): float64, C-contiguous, 1-D, never converted.
using ScalarVector = py::array_t<double, py::array::c_style>;

// An optimizer step as the drivers take it, checked against the op's rule.
struct OptimizerCall {
  int index;  // in fastopt/optimizers.h
  const RuleInfo* rule;
  TensorList tl;
  const double* scalars;
};

// Looks the op up by name and checks the table's shape, the scalar vector's length and head,
// and every pointer of the table (the rows the selected variant uses must be set; pointers
// aligned to `elem` bytes). Throws ValueError naming the op (after `prefix`), and the slot
// and tensor for a bad pointer.
OptimizerCall optimizer_call(const std::string& op, const PtrTable& ptrs,
                             const NumelArray& numel, const ScalarVector& scalars, int elem,
                             const std::string& prefix);

inline DType cpu_dtype(int code) {
  if (code != int(DType::f32) && code != int(DType::f64))
    throw py::type_error("CPU kernels take float32 or float64 arrays");
  return DType(code);
}

// The optimizer and clipping kernels also store float16 and bfloat16 (math in float).
inline DType cpu_storage_dtype(int code) {
  if (code < int(DType::f32) || code > int(DType::bf16))
    throw py::type_error("CPU optimizer and clipping kernels take float32, float64, float16 "
                         "or bfloat16 arrays");
  return DType(code);
}

void bind_runtime(py::module_& m);
void bind_arrays(py::module_& m);
void bind_optim(py::module_& m);
void bind_clip(py::module_& m);
void bind_losses(py::module_& m);
void bind_probe(py::module_& m);
#if FASTOPT_CUDA
void bind_cuda(py::module_& m);
#endif

}  // namespace fastopt
