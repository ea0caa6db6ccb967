// The per-step hot path of the optimizers: reading the data pointers of a list of NumPy
// gradient arrays and checking them against the cached parameter shapes, in C++, so a step
// over 20,000 tensors costs microseconds, not a Python loop.
#include "bindings.h"

namespace fastopt {

// Fills out[i] with the data pointer of arrays[i]. Returns -1 when every entry is a C-contiguous
// native-order ndarray of dtype type_num with the expected shape (and writeable, if asked);
// otherwise the index of the first entry that is not, for the Python layer to explain.
static int64_t gather_pointers(const py::list& arrays, py::array_t<uint64_t>& out, int type_num,
                               const NumelArray& shapes, const NumelArray& shape_offsets,
                               bool writeable) {
  const int64_t n = static_cast<int64_t>(arrays.size());
  if (out.ndim() != 1 || out.shape(0) != n || shape_offsets.shape(0) != n + 1)
    throw py::value_error("gather_pointers: table sizes do not match the list");
  auto dst = out.mutable_unchecked<1>();
  const int64_t* dims = shapes.data();
  const int64_t* offsets = shape_offsets.data();
  for (int64_t i = 0; i < n; ++i) {
    PyObject* obj = PyList_GET_ITEM(arrays.ptr(), i);
    if (!py::isinstance<py::array>(obj)) return i;
    auto a = py::reinterpret_borrow<py::array>(obj);
    const int flags = a.flags();
    if (!(flags & py::array::c_style) || (writeable && !(flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_)))
      return i;
    const py::dtype dt = a.dtype();
    if (dt.num() != type_num || dt.byteorder() == '>') return i;
    const int64_t nd = offsets[i + 1] - offsets[i];
    if (a.ndim() != nd) return i;
    for (int64_t d = 0; d < nd; ++d)
      if (a.shape(d) != dims[offsets[i] + d]) return i;
    dst(i) = reinterpret_cast<uint64_t>(a.data());
  }
  return -1;
}

void bind_arrays(py::module_& m) {
  m.def("gather_pointers", &gather_pointers, py::arg("arrays"), py::arg("out").noconvert(),
        py::arg("type_num"), py::arg("shapes").noconvert(), py::arg("shape_offsets").noconvert(),
        py::arg("writeable"));
}

}  // namespace fastopt
