// Entry points of the CUDA kernels, callable from plain C++ (the pybind11 bindings are compiled
// by the host compiler and never see a CUDA header). Every launcher takes the host-side pointer
// table, the op's hyperparameters and the stream to launch on, and returns without
// synchronizing (except norm_sum, whose result is a host value).
#pragma once
#include <cstdint>
#include <string>

#include "fastopt/rules/adagrad.h"
#include "fastopt/rules/adam.h"
#include "fastopt/rules/clip.h"
#include "fastopt/rules/lion.h"
#include "fastopt/rules/rmsprop.h"
#include "fastopt/rules/sgd.h"
#include "fastopt/tensor_list.h"

namespace fastopt::cuda {

// Device-resident scalars for CUDA-graph capture: when non-null, lr is read from lr[0] and the
// step count from step[0] (both float64 in device memory) inside the kernel, so a captured
// graph replays with the values of the moment, and step() never waits on the host.
struct DeviceScalars {
  const double* lr = nullptr;
  const double* step = nullptr;
};

// Number of usable devices, or -1 with `why` set when the driver/runtime cannot be used (no
// driver, no device, driver too old). Never throws; safe on machines without a GPU.
int device_count(std::string* why);
std::string device_name(int device);
int runtime_version();
int driver_version();

// Launchers. `stream` is a cudaStream_t passed as an integer (0: the legacy default stream);
// the caller has made `device` current. Errors are thrown as std::runtime_error.
void sgd(const TensorList&, DType, const SgdHyper&, DeviceScalars, uintptr_t stream);
void adam(const TensorList&, DType, const AdamHyper&, DeviceScalars, uintptr_t stream);
void adagrad(const TensorList&, DType, const AdagradHyper&, double lr_decay, DeviceScalars,
             uintptr_t stream);
void rmsprop(const TensorList&, DType, const RmspropHyper&, DeviceScalars, uintptr_t stream);
void lion(const TensorList&, DType, const LionHyper&, DeviceScalars, uintptr_t stream);
double norm(const TensorList&, DType, NormKind, double p, uintptr_t stream);
void scale(const TensorList&, DType, double coef, uintptr_t stream);
void clamp(const TensorList&, DType, double clip_value, uintptr_t stream);
// x[0] += value on the device (the step counter of a capturable optimizer).
void add_scalar(double* x, double value, uintptr_t stream);

// Makes `device` current for the lifetime of the guard, restoring the previous one after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace fastopt::cuda
