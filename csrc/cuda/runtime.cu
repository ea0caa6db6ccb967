// Device queries and helpers. The CUDA runtime is linked statically and loads the driver
// (libcuda) only at the first call, so importing fastopt works on machines without one.
#include <cuda_runtime.h>

#include "cuda/multi_tensor_apply.cuh"

namespace fastopt::cuda {

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later queries start clean
    return -1;
  }
  if (n == 0 && why) *why = "no CUDA device";
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, device), "device query");
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + ", " + std::to_string(prop.totalGlobalMem >> 20) + " MiB)";
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) return 0;
  return v;
}

__global__ void add_scalar_kernel(double* x, double value) { x[0] += value; }

void add_scalar(double* x, double value, uintptr_t stream) {
  add_scalar_kernel<<<1, 1, 0, reinterpret_cast<cudaStream_t>(stream)>>>(x, value);
  check(cudaGetLastError(), "kernel launch");
}

DeviceGuard::DeviceGuard(int device) {
  check(cudaGetDevice(&previous_), "device query");
  if (previous_ != device) check(cudaSetDevice(device), "set device");
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

}  // namespace fastopt::cuda
