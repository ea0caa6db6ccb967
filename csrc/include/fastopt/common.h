// Shared definitions for the per-element rules (host and device) and the drivers.
#pragma once
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define FASTOPT_HD __host__ __device__ __forceinline__
#elif defined(_MSC_VER)
#define FASTOPT_HD __forceinline
#else
#define FASTOPT_HD inline __attribute__((always_inline))
#endif

namespace fastopt {

// Storage dtypes as numbered by the Python layer (fastopt/_arrays.py: DTYPE_CODES).
enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

// Arithmetic type for a storage type: float math for float and narrower, double for double.
template <typename T> struct math_type { using type = float; };
template <> struct math_type<double> { using type = double; };
template <typename T> using math_t = typename math_type<T>::type;

// max() that propagates NaN from either side, like np.maximum / torch.maximum.
template <typename M> FASTOPT_HD M nan_max(M a, M b) { return (a > b || a != a) ? a : b; }

// sign() with np.sign's results for 0 (0) and NaN (NaN).
template <typename M> FASTOPT_HD M nan_sign(M x) { return x > M(0) ? M(1) : (x < M(0) ? M(-1) : x); }

// Calls f(std::true_type{}) or f(std::false_type{}) so a run-time flag becomes a
// compile-time one: the inner loops then carry no branch and vectorize.
template <typename F> inline void with_flag(bool b, F&& f) {
  if (b) f(std::true_type{});
  else f(std::false_type{});
}

}  // namespace fastopt
