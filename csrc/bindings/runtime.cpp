#include <omp.h>

#include "bindings.h"

namespace fastopt {

void bind_runtime(py::module_& m) {
  using cpu::Isa;
  m.def("isa", [] { return cpu::isa_name(cpu::active_isa()); },
        "ISA of the CPU kernels in use");
  m.def("widest_isa", [] { return cpu::isa_name(cpu::widest_supported_isa()); },
        "widest ISA this CPU supports among those compiled in");
  m.def("compiled_isas", [] {
#if FASTOPT_X86_ISAS
    return py::make_tuple("baseline", "avx2", "avx512");
#else
    return py::make_tuple("baseline");
#endif
  });
  m.def("set_isa", [](const std::string& name) {
    for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512})
      if (name == cpu::isa_name(isa)) {
        if (isa > cpu::widest_supported_isa())
          throw py::value_error("ISA '" + name + "' is not supported by this CPU");
        cpu::set_active_isa(isa);
        return;
      }
    throw py::value_error("unknown ISA '" + name + "' (baseline, avx2, avx512)");
  });
  m.def("num_threads", [] { return omp_get_max_threads(); });
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("number of threads must be >= 1");
    omp_set_num_threads(n);
  });
  m.attr("openmp_version") = _OPENMP;
}

}  // namespace fastopt
