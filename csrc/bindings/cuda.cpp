// fastopt._C.cuda: the CUDA kernels (built when FASTOPT_CUDA finds nvcc). Every launcher takes
// the pointer table, the device index, the stream (an integer cudaStream_t) and, for the
// optimizers, optional device pointers to float64 lr and step (CUDA-graph capture).
#if FASTOPT_CUDA
#include <stdexcept>

#include "bindings.h"
#include "cuda/ops.h"

namespace fastopt {

namespace {

DType cuda_dtype(int code) {
  if (code < int(DType::f32) || code > int(DType::bf16))
    throw py::type_error("CUDA kernels take float32, float64, float16 or bfloat16 arrays");
  return DType(code);
}

cuda::DeviceScalars scalars(uint64_t lr_ptr, uint64_t step_ptr) {
  cuda::DeviceScalars d;
  d.lr = reinterpret_cast<const double*>(static_cast<uintptr_t>(lr_ptr));
  d.step = reinterpret_cast<const double*>(static_cast<uintptr_t>(step_ptr));
  return d;
}

// Validates the table, makes `device` current, releases the GIL and launches.
template <typename F>
auto launch(const PtrTable& ptrs, const NumelArray& numel, int n_slots, int dtype, int device,
            F&& f) {
  const TensorList tl = tensor_list(ptrs, numel, n_slots);
  const DType dt = cuda_dtype(dtype);
  py::gil_scoped_release nogil;
  cuda::DeviceGuard guard(device);
  return f(tl, dt);
}

#define FASTOPT_CUDA_ARGS                                                              \
  py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"),         \
      py::arg("device"), py::arg("stream")

}  // namespace

void bind_cuda(py::module_& parent) {
  py::module_ m = parent.def_submodule("cuda", "CUDA kernels (private: use the fastopt package)");

  m.def("device_count", [] {
    std::string why;
    const int n = cuda::device_count(&why);
    return py::make_tuple(n, why);
  }, "(count, reason): count is -1 when the driver cannot be used, 0 without devices");
  m.def("device_name", &cuda::device_name);
  m.def("runtime_version", &cuda::runtime_version);
  m.def("driver_version", &cuda::driver_version);
  m.def("add_scalar", [](uint64_t ptr, double value, int device, uint64_t stream) {
    py::gil_scoped_release nogil;
    cuda::DeviceGuard guard(device);
    cuda::add_scalar(reinterpret_cast<double*>(static_cast<uintptr_t>(ptr)), value, stream);
  }, py::arg("ptr"), py::arg("value"), py::arg("device"), py::arg("stream"));

  m.def("sgd",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           double lr, double momentum, double dampening, double weight_decay, bool nesterov,
           bool maximize, bool first_step, uint64_t lr_ptr, uint64_t step_ptr) {
          const SgdHyper h{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
          launch(ptrs, numel, kSgdSlots, dtype, device, [&](const TensorList& tl, DType dt) {
            cuda::sgd(tl, dt, h, scalars(lr_ptr, step_ptr), stream);
          });
        },
        FASTOPT_CUDA_ARGS, py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
        py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"),
        py::arg("first_step"), py::arg("lr_ptr") = 0, py::arg("step_ptr") = 0);

  m.def("adam",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           double lr, double beta1, double beta2, double eps, double weight_decay,
           double bias_correction1, double bias_correction2, bool decoupled, bool amsgrad,
           bool maximize, bool eps_inside_sqrt, uint64_t lr_ptr, uint64_t step_ptr) {
          const AdamHyper h{lr, beta1, beta2, eps, weight_decay, bias_correction1,
                            bias_correction2, decoupled, amsgrad, maximize, eps_inside_sqrt};
          launch(ptrs, numel, kAdamSlots, dtype, device, [&](const TensorList& tl, DType dt) {
            cuda::adam(tl, dt, h, scalars(lr_ptr, step_ptr), stream);
          });
        },
        FASTOPT_CUDA_ARGS, py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::arg("weight_decay"), py::arg("bias_correction1"), py::arg("bias_correction2"),
        py::arg("decoupled"), py::arg("amsgrad"), py::arg("maximize"),
        py::arg("eps_inside_sqrt"), py::arg("lr_ptr") = 0, py::arg("step_ptr") = 0);

  m.def("adagrad",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           double clr, double lr_decay, double weight_decay, double eps, bool maximize,
           uint64_t lr_ptr, uint64_t step_ptr) {
          const AdagradHyper h{clr, weight_decay, eps, maximize};
          launch(ptrs, numel, kAdagradSlots, dtype, device, [&](const TensorList& tl, DType dt) {
            cuda::adagrad(tl, dt, h, lr_decay, scalars(lr_ptr, step_ptr), stream);
          });
        },
        FASTOPT_CUDA_ARGS, py::arg("clr"), py::arg("lr_decay"), py::arg("weight_decay"),
        py::arg("eps"), py::arg("maximize"), py::arg("lr_ptr") = 0, py::arg("step_ptr") = 0);

  m.def("rmsprop",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           double lr, double alpha, double eps, double weight_decay, double momentum,
           bool centered, bool maximize, uint64_t lr_ptr, uint64_t step_ptr) {
          const RmspropHyper h{lr, alpha, eps, weight_decay, momentum, centered, maximize};
          launch(ptrs, numel, kRmspropSlots, dtype, device, [&](const TensorList& tl, DType dt) {
            cuda::rmsprop(tl, dt, h, scalars(lr_ptr, step_ptr), stream);
          });
        },
        FASTOPT_CUDA_ARGS, py::arg("lr"), py::arg("alpha"), py::arg("eps"),
        py::arg("weight_decay"), py::arg("momentum"), py::arg("centered"), py::arg("maximize"),
        py::arg("lr_ptr") = 0, py::arg("step_ptr") = 0);

  m.def("lion",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           double lr, double beta1, double beta2, double weight_decay, bool maximize,
           uint64_t lr_ptr, uint64_t step_ptr) {
          const LionHyper h{lr, beta1, beta2, weight_decay, maximize};
          launch(ptrs, numel, kLionSlots, dtype, device, [&](const TensorList& tl, DType dt) {
            cuda::lion(tl, dt, h, scalars(lr_ptr, step_ptr), stream);
          });
        },
        FASTOPT_CUDA_ARGS, py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
        py::arg("weight_decay"), py::arg("maximize"), py::arg("lr_ptr") = 0,
        py::arg("step_ptr") = 0);

  m.def("norm_sum",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           int kind, double p) {
          if (kind < 0 || kind > int(NormKind::lp)) throw py::value_error("unknown norm kind");
          return launch(ptrs, numel, 1, dtype, device, [&](const TensorList& tl, DType dt) {
            return cuda::norm(tl, dt, NormKind(kind), p, stream);
          });
        },
        FASTOPT_CUDA_ARGS, py::arg("kind"), py::arg("p"));
  m.def("scale",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           double coef) {
          launch(ptrs, numel, 1, dtype, device, [&](const TensorList& tl, DType dt) {
            cuda::scale(tl, dt, coef, stream);
          });
        },
        FASTOPT_CUDA_ARGS, py::arg("coef"));
  m.def("clamp",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           double clip_value) {
          launch(ptrs, numel, 1, dtype, device, [&](const TensorList& tl, DType dt) {
            cuda::clamp(tl, dt, clip_value, stream);
          });
        },
        FASTOPT_CUDA_ARGS, py::arg("clip_value"));
}

}  // namespace fastopt
#endif  // FASTOPT_CUDA
