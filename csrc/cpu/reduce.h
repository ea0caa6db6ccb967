// Deterministic summation shared by the loss kernels: per-chunk (or per-row) partial sums in a
// fixed number of lanes, folded pairwise in a fixed order, so a loss is bitwise the same for
// any thread count and any ISA (the lane count does not follow the vector width).
#pragma once
#include <cstdint>

namespace fastopt::cpu {

constexpr int kSumLanes = 8;

// op(x[0], ..., x[n-1]) folded as a balanced tree in a fixed order; overwrites x.
template <typename Op>
inline double pairwise_fold(double* x, int64_t n, Op op) {
  if (n == 0) return 0.0;
  for (int64_t width = 1; width < n; width *= 2)
    for (int64_t i = 0; i + width < n; i += 2 * width) x[i] = op(x[i], x[i + width]);
  return x[0];
}

// x[0] + ... + x[n-1] as a balanced tree (error O(log n) ulp); overwrites x.
inline double pairwise_sum(double* x, int64_t n) {
  return pairwise_fold(x, n, [](double a, double b) { return a + b; });
}

}  // namespace fastopt::cpu
