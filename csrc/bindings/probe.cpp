#include <string>

#include "bindings.h"

namespace fastopt {

void bind_probe(py::module_& m) {
  m.def(
      "probe",
      [](const PtrTable& ptrs, const NumelArray& numel, int n_rw, int n_ro, int n_wo) {
        if (n_rw < 0 || n_rw > cpu::kProbeMaxRw || n_ro < 0 || n_ro > cpu::kProbeMaxRo ||
            n_wo < 0 || n_wo > cpu::kProbeMaxWo || n_rw + n_wo == 0)
          throw py::value_error(
              "probe streams: n_rw <= " + std::to_string(cpu::kProbeMaxRw) + ", n_ro <= " +
              std::to_string(cpu::kProbeMaxRo) + ", n_wo <= " + std::to_string(cpu::kProbeMaxWo) +
              ", and at least one written stream");
        const TensorList tl = tensor_list(ptrs, numel, n_rw + n_ro + n_wo);
        py::gil_scoped_release nogil;
        [&] { FASTOPT_CPU_CALL(probe, tl, n_rw, n_ro, n_wo) }();
      },
      "one-pass float32 bandwidth probe over n_rw read-modify-write, n_ro read-only and n_wo "
      "write-only streams (rows of ptrs in that order)",
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("n_rw"),
      py::arg("n_ro"), py::arg("n_wo"));
}

}  // namespace fastopt
