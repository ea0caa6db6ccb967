// The (pointer, numel) table every multi-tensor kernel walks: one row per slot (param,
// grad, state...), one column per tensor. Built once by the Python layer and cached.
#pragma once
#include <cstdint>

namespace fastopt {

struct TensorList {
  const uint64_t* ptrs;   // [n_slots][n_tensors]; 0 where a slot is unused
  const int64_t* numel;   // [n_tensors]
  int64_t n_tensors;
  int n_slots;

  template <typename T> T* slot(int s, int64_t t) const {
    return reinterpret_cast<T*>(static_cast<uintptr_t>(ptrs[s * n_tensors + t]));
  }
};

}  // namespace fastopt
