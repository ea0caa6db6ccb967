// The checks the bindings make on a pointer table before the first launch. On CUDA a kernel
// cannot raise, and a null or misaligned pointer there is a sticky device fault that ends the
// process's CUDA context; on the CPU a null row is a crash. So each is refused on the host,
// with the slot and the tensor named. (The Python layer has already checked dtypes, shapes,
// devices and aliasing when it built the table; this is the C++ side's own guard, for every
// caller.) Plain C++: the bindings include it, and tests/cuda_kernel_emulation.cu tests it.
#pragma once
#include <cstdint>
#include <string>

#include "fastopt/common.h"
#include "fastopt/tensor_list.h"

namespace fastopt {

inline int element_size(DType dtype) {
  return dtype == DType::f64 ? 8 : (dtype == DType::f32 ? 4 : 2);
}

inline std::string hex_address(uint64_t p) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  do {
    s.insert(s.begin(), digits[p & 15u]);
    p >>= 4;
  } while (p);
  return "0x" + s;
}

// The problem of one pointer to `numel` elements of `elem` bytes ("" if none); a null pointer
// is a problem only when `required`.
inline std::string pointer_problem(uint64_t p, int64_t numel, int elem, bool required) {
  if (p == 0) {
    return required ? "null pointer for " + std::to_string(numel) + " elements" : "";
  }
  if (p % uint64_t(elem) != 0)
    return "address " + hex_address(p) + " is not aligned to its " + std::to_string(elem) +
           "-byte elements";
  if (numel > 0 && uint64_t(numel) > (UINT64_MAX - p) / uint64_t(elem))
    return "address " + hex_address(p) + " + " + std::to_string(numel) +
           " elements wraps around the address space";
  return "";
}

// The first problem of a table ("" if none), as "slot[tensor]: what": numel must be >= 0; for
// every non-empty tensor, each slot set in `required` (bit s) needs a pointer, and every
// pointer given must be aligned to `elem` bytes and not wrap around. names[s] names slot s.
// (Vector accesses need 16-byte alignment; the kernels check it per chunk and take the scalar
// path where it fails, so it is no error.)
inline std::string table_problem(const TensorList& tl, int elem, const char* const* names,
                                 unsigned required) {
  auto at = [&](int s, int64_t t) {
    return std::string(names[s]) + "[" + std::to_string(t) + "]: ";
  };
  for (int64_t t = 0; t < tl.n_tensors; ++t) {
    const int64_t numel = tl.numel[t];
    if (numel < 0) return at(0, t) + "negative numel " + std::to_string(numel);
    if (numel == 0) continue;
    for (int s = 0; s < tl.n_slots; ++s) {
      const uint64_t p = tl.ptrs[s * tl.n_tensors + t];
      // the common case, a valid pointer, without building a string (tables of 20,000 tensors)
      const bool fine = p != 0 ? p % uint64_t(elem) == 0 &&
                                     uint64_t(numel) <= (UINT64_MAX - p) / uint64_t(elem)
                               : !((required >> s) & 1u);
      if (!fine) return at(s, t) + pointer_problem(p, numel, elem, (required >> s) & 1u);
    }
  }
  return "";
}

}  // namespace fastopt
