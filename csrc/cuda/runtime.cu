// Device queries and helpers. The CUDA runtime is linked statically and loads the driver
// (libcuda) only at the first call, so importing fastopt works on machines without one.
#include <cuda_runtime.h>

#include <atomic>

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

namespace {

constexpr int kMaxDevices = 64;
// per device: 0 not yet queried, 1 no, 2 yes
std::atomic<signed char> g_large[kMaxDevices];
std::atomic<bool> g_large_allowed{true};

}  // namespace

// Large kernel parameters need the 12.1 runtime (this build), a 12.1 driver and sm_70+.
bool large_params_supported(int device) {
  if (!FASTOPT_LARGE_PARAMS) return false;
  if (device < 0 || device >= kMaxDevices) return false;
  signed char known = g_large[device].load(std::memory_order_relaxed);
  if (known == 0) {
    int major = 0;
    const bool ok = driver_version() >= 12010 &&
                    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) ==
                        cudaSuccess &&
                    major >= 7;
    cudaGetLastError();  // a failed query is a "no", not an error for the next call
    known = ok ? 2 : 1;
    g_large[device].store(known, std::memory_order_relaxed);
  }
  return known == 2;
}

bool large_params() {
  if (!g_large_allowed.load(std::memory_order_relaxed)) return false;
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return large_params_supported(device);
}

void set_large_params_allowed(bool allowed) { g_large_allowed.store(allowed); }

DeviceGuard::DeviceGuard(int device) {
  check(cudaGetDevice(&previous_), "device query");
  if (previous_ != device) check(cudaSetDevice(device), "set device");
}

DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

}  // namespace fastopt::cuda
