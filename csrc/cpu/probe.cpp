// The bandwidth probe behind `fastopt bench`'s "% of limit": the cheapest one-pass loop over
// the same streams an op moves (read-modify-write, read-only and write-only float32 streams),
// through the same chunked OpenMP driver as the kernels, so the only difference left between
// an op and its probe is the op's arithmetic and its own memory-access code.
#include <type_traits>

#include "multi_tensor.h"
#include "ops.h"

namespace fastopt::cpu::FASTOPT_ISA {

namespace {

// s - x keeps every value bounded and never shrinks it toward denormals (which would slow
// the probe down), however many times the probe runs over the same buffers.
template <int RW, int RO, int WO>
void probe_chunk(int64_t n, float* const* rw_in, const float* const* ro_in,
                 float* const* wo_in) {
  float* rw[RW > 0 ? RW : 1];
  const float* ro[RO > 0 ? RO : 1];
  float* wo[WO > 0 ? WO : 1];
  for (int k = 0; k < RW; ++k) rw[k] = rw_in[k];
  for (int k = 0; k < RO; ++k) ro[k] = ro_in[k];
  for (int k = 0; k < WO; ++k) wo[k] = wo_in[k];
  // the streams are distinct buffers (the Python side allocates them), so no dependence
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float s = 0.f;
    for (int k = 0; k < RO; ++k) s += ro[k][i];
    for (int k = 0; k < RW; ++k) rw[k][i] = s - rw[k][i];
    for (int k = 0; k < WO; ++k) wo[k][i] = s;
  }
}

// f(std::integral_constant<int, v>{}) for v in [0, Max]
template <int Max, typename F>
void with_count(int v, F&& f) {
  if constexpr (Max >= 0) {
    if (v == Max) f(std::integral_constant<int, Max>{});
    else with_count<Max - 1>(v, std::forward<F>(f));
  }
}

}  // namespace

void probe(const TensorList& tl, int n_rw, int n_ro, int n_wo) {
  with_count<kProbeMaxRw>(n_rw, [&](auto rw_c) {
    with_count<kProbeMaxRo>(n_ro, [&](auto ro_c) {
      with_count<kProbeMaxWo>(n_wo, [&](auto wo_c) {
        constexpr int RW = decltype(rw_c)::value, RO = decltype(ro_c)::value,
                      WO = decltype(wo_c)::value;
        for_each_chunk(tl, [&](int64_t, int64_t t, int64_t b, int64_t e) {
          float* rw[RW > 0 ? RW : 1];
          const float* ro[RO > 0 ? RO : 1];
          float* wo[WO > 0 ? WO : 1];
          for (int k = 0; k < RW; ++k) rw[k] = tl.slot<float>(k, t) + b;
          for (int k = 0; k < RO; ++k) ro[k] = tl.slot<float>(RW + k, t) + b;
          for (int k = 0; k < WO; ++k) wo[k] = tl.slot<float>(RW + RO + k, t) + b;
          probe_chunk<RW, RO, WO>(e - b, rw, ro, wo);
        });
      });
    });
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA
