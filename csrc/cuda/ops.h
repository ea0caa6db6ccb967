// Entry points of the CUDA kernels, callable from plain C++ (the pybind11 bindings are compiled
// by the host compiler and never see a CUDA header). Every launcher takes the host-side pointer
// table, the op's scalars and the stream to launch on, and returns without synchronizing
// (except norm_sum, whose result is a host value).
#pragma once
#include <cstdint>
#include <string>

#include "fastopt/common.h"
#include "fastopt/rules/clip.h"
#include "fastopt/rules/cross_entropy.h"
#include "fastopt/rules/elementwise_loss.h"
#include "fastopt/tensor_list.h"

namespace fastopt::cuda {

// Number of usable devices, or -1 with `why` set when the driver/runtime cannot be used (no
// driver, no device, driver too old). Never throws; safe on machines without a GPU.
int device_count(std::string* why);
std::string device_name(int device);
int runtime_version();
int driver_version();
// Whether the current device takes 32 KiB of kernel parameters (this build, its driver and
// its compute capability), and the switch that keeps every launch at 4 KiB (tests).
bool large_params();
bool large_params_supported(int device);
void set_large_params_allowed(bool allowed);

// Launchers. `stream` is a cudaStream_t passed as an integer (0: the legacy default stream);
// the caller has made `device` current. Errors are thrown as std::runtime_error.
// The optimizer at index `op` of fastopt/optimizers.h, with its full scalar vector (host
// memory, fastopt/rule.h).
void step(int op, const TensorList&, DType, const double* scalars, double unscale,
          uintptr_t stream);
double norm(const TensorList&, DType, NormKind, double p, uintptr_t stream);
// The capturable clip_grad_norm_, in three launches that never synchronize nor allocate:
//   norm_partials: one partial (sum of |x|^p, or max |x|) per kChunk-element chunk of the list,
//     into partial[0 .. norm_blocks(list)) on the device;
//   norm_finish: folds n partials in place in norm()'s fixed order (one block) and writes
//     out[0] = the norm and out[1] = min(max_norm / (norm + 1e-6), 1) (NaN for a NaN norm);
//   scale_by: g = g * coef[0], coef read from device memory.
int64_t norm_blocks(const TensorList&);
void norm_partials(const TensorList&, DType, NormKind, double p, double* partial,
                   uintptr_t stream);
void norm_finish(double* partial, int64_t n, NormKind, double p, double max_norm, double* out,
                 uintptr_t stream);
void scale_by(const TensorList&, DType, const double* coef, uintptr_t stream);
void scale(const TensorList&, DType, double coef, uintptr_t stream);
void clamp(const TensorList&, DType, double clip_value, uintptr_t stream);
// Fused softmax cross-entropy (forward + gradient), one block per row; row losses are copied
// into a.row_loss (host memory) and summed on the host in a fixed order. Synchronizes (the
// loss is a host value), once when the targets need no validation on the host (probabilities
// without class weights), twice otherwise; host copies go through pinned staging memory.
CrossEntropyResult cross_entropy(const CrossEntropyArgs& a, DType, uintptr_t stream);
// Element-wise loss (forward + gradient) over a.n elements of device arrays in one pass;
// returns the loss sum (fixed-order: per-thread, per-block tree, host pairwise fold).
// Synchronizes (the sum is a host value).
double elementwise_loss(const PointLossArgs& a, DType, PointLoss, uintptr_t stream);

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
