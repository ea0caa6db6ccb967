#include "fastopt/rules/clip.h"

#include <cmath>
#include <vector>

#include "half.h"
#include "multi_tensor.h"
#include "ops.h"
#include "reduce.h"

namespace fastopt::cpu::FASTOPT_ISA {

// A fixed number of accumulator lanes keeps the summation order independent of the ISA's
// vector width and of the thread count, while still letting the compiler vectorize.
constexpr int kLanes = kSumLanes;

// Pairwise fold in a fixed order: the same bits for any thread count.
static double fold(NormKind kind, double* x, int64_t n) {
  if (kind == NormKind::linf) return pairwise_fold(x, n, nan_max<double>);
  return pairwise_sum(x, n);
}

template <NormKind Kind, typename T>
static double chunk_norm(int64_t n, const T* __restrict x, double p) {
  double lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double term = norm_term(x[i + j], Kind, p);
      lanes[j] = Kind == NormKind::linf ? nan_max(lanes[j], term) : lanes[j] + term;
    }
  for (int j = 0; i < n; ++i, ++j) {
    const double term = norm_term(x[i], Kind, p);
    lanes[j] = Kind == NormKind::linf ? nan_max(lanes[j], term) : lanes[j] + term;
  }
  return fold(Kind, lanes, kLanes);
}

// Returns the sum of |x|^p over every element (the max |x| for linf); the caller takes the root.
double norm(const TensorList& tl, DType dtype, NormKind kind, double p) {
  double result = 0.0;
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    const Chunks chunks(tl);
    std::vector<double> partial(chunks.count());
    auto run = [&](auto kind_c) {
      for_each_chunk(tl, chunks, [&](int64_t c, int64_t t, int64_t b, int64_t e) {
        partial[c] = chunk_norm<decltype(kind_c)::value>(e - b, tl.slot<T>(0, t) + b, p);
      });
    };
    switch (kind) {
      case NormKind::l2: run(std::integral_constant<NormKind, NormKind::l2>{}); break;
      case NormKind::l1: run(std::integral_constant<NormKind, NormKind::l1>{}); break;
      case NormKind::linf: run(std::integral_constant<NormKind, NormKind::linf>{}); break;
      default: run(std::integral_constant<NormKind, NormKind::lp>{}); break;
    }
    result = fold(kind, partial.data(), chunks.count());
  });
  return result;
}

template <typename T, typename M>
static void scale_chunk(int64_t n, T* __restrict g, M coef) {
  for (int64_t i = 0; i < n; ++i) scale_rule(g[i], coef);
}

template <typename T, typename M>
static void clamp_chunk(int64_t n, T* __restrict g, M clip_value) {
  for (int64_t i = 0; i < n; ++i) clamp_rule(g[i], clip_value);
}

void scale(const TensorList& tl, DType dtype, double coef) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_chunk(tl, [&](int64_t, int64_t t, int64_t b, int64_t e) {
      scale_chunk(e - b, tl.slot<T>(0, t) + b, math_t<T>(coef));
    });
  });
}

void clamp(const TensorList& tl, DType dtype, double clip_value) {
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    for_each_chunk(tl, [&](int64_t, int64_t t, int64_t b, int64_t e) {
      clamp_chunk(e - b, tl.slot<T>(0, t) + b, math_t<T>(clip_value));
    });
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA
