#include "bindings.h"

namespace fastopt {

namespace {

// Runs kernel(tl, dtype, hyper) with the GIL released.
template <typename Hyper, typename Kernel>
void run(const PtrTable& ptrs, const NumelArray& numel, int dtype, int n_slots, const Hyper& h,
         Kernel kernel) {
  const TensorList tl = tensor_list(ptrs, numel, n_slots);
  const DType dt = cpu_dtype(dtype);
  py::gil_scoped_release nogil;
  kernel(tl, dt, h);
}

#define FASTOPT_KERNEL(name) \
  [](const TensorList& tl, DType dt, const auto& h) { FASTOPT_CPU_CALL(name, tl, dt, h) }

}  // namespace

void bind_optim(py::module_& m) {
  m.def(
      "sgd",
      [](const PtrTable& ptrs, const NumelArray& numel, int dtype, double lr, double momentum,
         double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step) {
        run(ptrs, numel, dtype, kSgdSlots,
            SgdHyper{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step},
            FASTOPT_KERNEL(sgd));
      },
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"), py::arg("lr"),
      py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"),
      py::arg("maximize"), py::arg("first_step"));

  m.def(
      "adam",
      [](const PtrTable& ptrs, const NumelArray& numel, int dtype, double lr, double beta1,
         double beta2, double eps, double weight_decay, double bias_correction1,
         double bias_correction2, bool decoupled, bool amsgrad, bool maximize,
         bool eps_inside_sqrt) {
        run(ptrs, numel, dtype, kAdamSlots,
            AdamHyper{lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2,
                      decoupled, amsgrad, maximize, eps_inside_sqrt},
            FASTOPT_KERNEL(adam));
      },
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"), py::arg("lr"),
      py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
      py::arg("bias_correction1"), py::arg("bias_correction2"), py::arg("decoupled"),
      py::arg("amsgrad"), py::arg("maximize"), py::arg("eps_inside_sqrt"));

  m.def(
      "adagrad",
      [](const PtrTable& ptrs, const NumelArray& numel, int dtype, double clr,
         double weight_decay, double eps, bool maximize) {
        run(ptrs, numel, dtype, kAdagradSlots, AdagradHyper{clr, weight_decay, eps, maximize},
            FASTOPT_KERNEL(adagrad));
      },
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"), py::arg("clr"),
      py::arg("weight_decay"), py::arg("eps"), py::arg("maximize"));

  m.def(
      "rmsprop",
      [](const PtrTable& ptrs, const NumelArray& numel, int dtype, double lr, double alpha,
         double eps, double weight_decay, double momentum, bool centered, bool maximize) {
        run(ptrs, numel, dtype, kRmspropSlots,
            RmspropHyper{lr, alpha, eps, weight_decay, momentum, centered, maximize},
            FASTOPT_KERNEL(rmsprop));
      },
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"), py::arg("lr"),
      py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"),
      py::arg("centered"), py::arg("maximize"));

  m.def(
      "lion",
      [](const PtrTable& ptrs, const NumelArray& numel, int dtype, double lr, double beta1,
         double beta2, double weight_decay, bool maximize) {
        run(ptrs, numel, dtype, kLionSlots, LionHyper{lr, beta1, beta2, weight_decay, maximize},
            FASTOPT_KERNEL(lion));
      },
      py::arg("ptrs").noconvert(), py::arg("numel").noconvert(), py::arg("dtype"), py::arg("lr"),
      py::arg("beta1"), py::arg("beta2"), py::arg("weight_decay"), py::arg("maximize"));
}

}  // namespace fastopt
