// fastopt._C.cuda: the CUDA kernels (built when FASTOPT_CUDA finds nvcc). Every launcher takes
// the pointer table, the device index and the stream (an integer cudaStream_t); the optimizers
// their scalar vector, in host memory (fastopt/rule.h).
#if FASTOPT_CUDA
#include <cmath>
#include <stdexcept>

#include "bindings.h"
#include "cuda/ops.h"
#include "fastopt/table_check.h"

namespace fastopt {

namespace {

DType cuda_dtype(int code) {
  if (code < int(DType::f32) || code > int(DType::bf16))
    throw py::type_error("CUDA kernels take float32, float64, float16 or bfloat16 arrays");
  return DType(code);
}

// A float64 scalar in device memory (the clip coefficient): set and 8-byte aligned.
const double* scalar_ptr(uint64_t p, const char* op, const char* name) {
  const std::string why = pointer_problem(p, 1, 8, true);
  if (!why.empty())
    throw py::value_error(std::string("fastopt CUDA ") + op + ": " + name + ": " + why);
  return reinterpret_cast<const double*>(static_cast<uintptr_t>(p));
}

const char* const kGradNames[] = {"grad"};

struct OpSlots {
  const char* op;
  const char* const* names;
  int n_slots;
  unsigned required;  // bit s: slot s must have a pointer for every non-empty tensor
};

template <size_t N>
OpSlots slots(const char* op, const char* const (&names)[N], unsigned required) {
  return OpSlots{op, names, int(N), required};
}

// Validates the table (shape, dtype, every pointer), makes `device` current, releases the GIL
// and launches: nothing is launched for a table with any problem.
template <typename F>
auto launch(const OpSlots& op, const PtrTable& ptrs, const NumelArray& numel, int dtype,
            int device, F&& f) {
  const TensorList tl = tensor_list(ptrs, numel, op.n_slots);
  const DType dt = cuda_dtype(dtype);
  const std::string why = table_problem(tl, element_size(dt), op.names, op.required);
  if (!why.empty()) throw py::value_error(std::string("fastopt CUDA ") + op.op + ": " + why);
  py::gil_scoped_release nogil;
  cuda::DeviceGuard guard(device);
  return f(tl, dt);
}

NormKind norm_kind(int kind) {
  if (kind < 0 || kind > int(NormKind::lp)) throw py::value_error("unknown norm kind");
  return NormKind(kind);
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
  m.def("large_params", [](int device) {
    py::gil_scoped_release nogil;
    return cuda::large_params_supported(device);
  }, "whether launches on `device` may take 32 KiB of kernel parameters", py::arg("device"));
  m.def("set_large_params_allowed", &cuda::set_large_params_allowed,
        "False keeps every launch at 4 KiB of parameters (more launches; for tests)",
        py::arg("allowed"));
  m.def("step",
        [](const std::string& op, const PtrTable& ptrs, const NumelArray& numel, int dtype,
           int device, uint64_t stream, const ScalarVector& scalars, double unscale) {
          const DType dt = cuda_dtype(dtype);
          const OptimizerCall call =
              optimizer_call(op, ptrs, numel, scalars, element_size(dt), "fastopt CUDA ");
          if (!(unscale > 0.0 && std::isfinite(unscale)))
            throw py::value_error("fastopt CUDA: unscale must be a finite number > 0");
          py::gil_scoped_release nogil;
          cuda::DeviceGuard guard(device);
          cuda::step(call.index, call.tl, dt, call.scalars, unscale, stream);
        },
        "one step of optimizer `op` on device arrays (see fastopt._C.step), launched on "
        "`stream` without synchronizing; the scalars are read on the host; unscale != 1: the "
        "grads are unscaled in place in the same pass",
        py::arg("op"), FASTOPT_CUDA_ARGS, py::arg("scalars").noconvert(),
        py::arg("unscale") = 1.0);

  m.def("norm_sum",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           int kind, double p) {
          const NormKind k = norm_kind(kind);
          return launch(slots("norm_sum", kGradNames, 1u), ptrs, numel, dtype, device,
                        [&](const TensorList& tl, DType dt) {
                          return cuda::norm(tl, dt, k, p, stream);
                        });
        },
        FASTOPT_CUDA_ARGS, py::arg("kind"), py::arg("p"));
  m.def("norm_blocks",
        [](const NumelArray& numel) {
          const uint64_t none = 0;
          return cuda::norm_blocks(TensorList{&none, numel.data(), numel.shape(0), 0});
        },
        "partials norm_partials writes for a table of these sizes", py::arg("numel").noconvert());
  m.def("norm_partials",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           int kind, double p, uint64_t partial, int64_t capacity) {
          const NormKind k = norm_kind(kind);
          const TensorList shape = tensor_list(ptrs, numel, 1);
          const int64_t need = cuda::norm_blocks(shape);
          if (capacity < need)
            throw py::value_error("fastopt CUDA norm_partials: the workspace holds " +
                                  std::to_string(capacity) + " partials, the table needs " +
                                  std::to_string(need));
          const std::string why = pointer_problem(partial, need, 8, need > 0);
          if (!why.empty())
            throw py::value_error("fastopt CUDA norm_partials: partial: " + why);
          auto* out = reinterpret_cast<double*>(static_cast<uintptr_t>(partial));
          launch(slots("norm_partials", kGradNames, 1u), ptrs, numel, dtype, device,
                 [&](const TensorList& tl, DType dt) {
                   cuda::norm_partials(tl, dt, k, p, out, stream);
                 });
        },
        "device partial sums of |g|^p per chunk into partial[0 .. norm_blocks) (no sync)",
        FASTOPT_CUDA_ARGS, py::arg("kind"), py::arg("p"), py::arg("partial"),
        py::arg("capacity"));
  m.def("norm_finish",
        [](uint64_t partial, int64_t n, int kind, double p, double max_norm, uint64_t out,
           int device, uint64_t stream) {
          const NormKind k = norm_kind(kind);
          if (n < 0) throw py::value_error("fastopt CUDA norm_finish: n must be >= 0");
          std::string why = pointer_problem(partial, n, 8, n > 0);
          if (why.empty()) why = pointer_problem(out, 2, 8, true);
          if (!why.empty()) throw py::value_error("fastopt CUDA norm_finish: " + why);
          py::gil_scoped_release nogil;
          cuda::DeviceGuard guard(device);
          cuda::norm_finish(reinterpret_cast<double*>(static_cast<uintptr_t>(partial)), n, k, p,
                            max_norm, reinterpret_cast<double*>(static_cast<uintptr_t>(out)),
                            stream);
        },
        "folds n partials on the device: out[0] = norm, out[1] = clip coefficient (no sync)",
        py::arg("partial"), py::arg("n"), py::arg("kind"), py::arg("p"), py::arg("max_norm"),
        py::arg("out"), py::arg("device"), py::arg("stream"));
  m.def("scale",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           double coef) {
          launch(slots("scale", kGradNames, 1u), ptrs, numel, dtype, device,
                 [&](const TensorList& tl, DType dt) { cuda::scale(tl, dt, coef, stream); });
        },
        FASTOPT_CUDA_ARGS, py::arg("coef"));
  m.def("scale_by",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           uint64_t coef_ptr) {
          const double* coef = scalar_ptr(coef_ptr, "scale_by", "coef");
          launch(slots("scale_by", kGradNames, 1u), ptrs, numel, dtype, device,
                 [&](const TensorList& tl, DType dt) { cuda::scale_by(tl, dt, coef, stream); });
        },
        "g *= coef[0], the float64 coefficient read from device memory (no sync)",
        FASTOPT_CUDA_ARGS, py::arg("coef"));
  m.def("clamp",
        [](const PtrTable& ptrs, const NumelArray& numel, int dtype, int device, uint64_t stream,
           double clip_value) {
          launch(slots("clamp", kGradNames, 1u), ptrs, numel, dtype, device,
                 [&](const TensorList& tl, DType dt) {
                   cuda::clamp(tl, dt, clip_value, stream);
                 });
        },
        FASTOPT_CUDA_ARGS, py::arg("clip_value"));
  m.def(
      "cross_entropy",
      [](int dtype, int device, uint64_t stream, uint64_t logits, uint64_t grad, uint64_t target,
         int target_kind, uint64_t weight, uint64_t row_loss, int64_t n, int64_t c,
         int64_t ignore_index, double label_smoothing, double z_loss, double softcap,
         int reduction) {
        if (dtype != int(DType::f32) && dtype != int(DType::f64))
          throw py::type_error("CUDA cross_entropy takes float32 or float64 logits");
        if (target_kind < 0 || target_kind > int(CeTarget::probs))
          throw py::value_error("unknown target kind");
        if (reduction < 0 || reduction > int(Reduction::sum))
          throw py::value_error("unknown reduction");
        if (n < 0 || c < 1) throw py::value_error("cross_entropy needs n >= 0 and c >= 1");
        if (n > 0 && c > INT64_MAX / n) throw py::value_error("cross_entropy: n * c overflows");
        const int64_t nc = n * c;
        const int elem = dtype == int(DType::f64) ? 8 : 4;
        const bool probs = target_kind == int(CeTarget::probs);
        const int target_elem = probs ? elem : (target_kind == int(CeTarget::int32) ? 4 : 8);
        const struct {
          const char* name;
          uint64_t ptr;
          int64_t count;
          int size;
          bool required;
        } pointers[] = {{"logits", logits, nc, elem, nc > 0},
                        {"grad", grad, nc, elem, false},
                        {"target", target, probs ? nc : n, target_elem, n > 0},
                        {"weight", weight, c, elem, false},
                        {"row_loss", row_loss, n, 8, n > 0}};
        for (const auto& q : pointers) {
          const std::string why = pointer_problem(q.ptr, q.count, q.size, q.required);
          if (!why.empty())
            throw py::value_error(std::string("fastopt CUDA cross_entropy: ") + q.name + ": " +
                                  why);
        }
        auto dev_ptr = [](uint64_t p) { return reinterpret_cast<void*>(uintptr_t(p)); };
        const CrossEntropyArgs a{dev_ptr(logits), dev_ptr(grad), dev_ptr(target), dev_ptr(weight),
                                 static_cast<double*>(dev_ptr(row_loss)), n, c,
                                 CeTarget(target_kind), ignore_index, label_smoothing, z_loss,
                                 softcap, Reduction(reduction)};
        CrossEntropyResult r;
        {
          py::gil_scoped_release nogil;
          cuda::DeviceGuard guard(device);
          r = cuda::cross_entropy(a, DType(dtype), stream);
        }
        return py::make_tuple(r.loss_sum, r.denom, r.bad_row);
      },
      "fused softmax cross-entropy over rows of device arrays; row_loss is a host float64 [n] "
      "buffer: (sum of row losses, mean's denominator, first out-of-range row or -1)",
      py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("logits"), py::arg("grad"),
      py::arg("target"), py::arg("target_kind"), py::arg("weight"), py::arg("row_loss"),
      py::arg("n"), py::arg("c"), py::arg("ignore_index"), py::arg("label_smoothing"),
      py::arg("z_loss"), py::arg("softcap"), py::arg("reduction"));
  m.def(
      "elementwise_loss",
      [](int kind, int dtype, int device, uint64_t stream, uint64_t input, uint64_t target,
         uint64_t weight, int64_t weight_period, uint64_t pos_weight, int64_t pos_weight_period,
         uint64_t grad, uint64_t out, int64_t n, double param, double grad_scale) {
        if (dtype != int(DType::f32) && dtype != int(DType::f64))
          throw py::type_error("CUDA element-wise losses take float32 or float64");
        if (kind < 0 || kind > int(PointLoss::kl_div_log_target))
          throw py::value_error("unknown element-wise loss kind");
        if (n < 0) throw py::value_error("elementwise_loss needs n >= 0");
        if ((weight && weight_period < 1) || (pos_weight && pos_weight_period < 1))
          throw py::value_error("elementwise_loss: a weight needs a period >= 1");
        const int elem = dtype == int(DType::f64) ? 8 : 4;
        const struct {
          const char* name;
          uint64_t ptr;
          int64_t count;
          bool required;
        } pointers[] = {{"input", input, n, n > 0},
                        {"target", target, n, n > 0},
                        {"weight", weight, weight_period, false},
                        {"pos_weight", pos_weight, pos_weight_period, false},
                        {"grad", grad, n, false},
                        {"out", out, n, false}};
        for (const auto& q : pointers) {
          const std::string why = pointer_problem(q.ptr, q.count, elem, q.required);
          if (!why.empty())
            throw py::value_error(std::string("fastopt CUDA elementwise_loss: ") + q.name +
                                  ": " + why);
        }
        auto dev_ptr = [](uint64_t p) { return reinterpret_cast<void*>(uintptr_t(p)); };
        const PointLossArgs a{dev_ptr(input), dev_ptr(target), dev_ptr(weight), weight_period,
                              dev_ptr(pos_weight), pos_weight_period, dev_ptr(grad),
                              dev_ptr(out), n, param, grad_scale};
        double total;
        {
          py::gil_scoped_release nogil;
          cuda::DeviceGuard guard(device);
          total = cuda::elementwise_loss(a, DType(dtype), PointLoss(kind), stream);
        }
        return total;
      },
      "element-wise loss and its gradient over n elements of device arrays, in one pass: "
      "the loss sum (grad: scale * weight * dloss/dx, out: weight * loss, either 0 to skip)",
      py::arg("kind"), py::arg("dtype"), py::arg("device"), py::arg("stream"), py::arg("input"),
      py::arg("target"), py::arg("weight"), py::arg("weight_period"), py::arg("pos_weight"),
      py::arg("pos_weight_period"), py::arg("grad"), py::arg("out"), py::arg("n"),
      py::arg("param"), py::arg("grad_scale"));
}

}  // namespace fastopt
#endif  // FASTOPT_CUDA
