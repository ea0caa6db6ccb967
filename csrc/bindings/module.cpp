#include "bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastopt's compiled CPU kernels (private: use the fastopt package)";
  fastopt::bind_runtime(m);
  fastopt::bind_arrays(m);
  fastopt::bind_optim(m);
  fastopt::bind_clip(m);
  fastopt::bind_losses(m);
  fastopt::bind_probe(m);
#if FASTOPT_CUDA
  fastopt::bind_cuda(m);
#endif
  m.attr("cuda_compiled") = bool(FASTOPT_CUDA);
}
