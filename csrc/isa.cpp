// Run-time choice of the CPU kernels' ISA. The portable build carries every ISA; the CPU's
// own support picks the widest, and FASTOPT_ISA (environment) may ask for a narrower one.
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "cpu/ops.h"

namespace fastopt::cpu {

static Isa supported_isa() {
#if FASTOPT_X86_ISAS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::baseline;
}

static Isa initial_isa() {
  const Isa best = supported_isa();
  if (const char* want = std::getenv("FASTOPT_ISA")) {
    for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512})
      if (std::strcmp(want, isa_name(isa)) == 0 && isa <= best) return isa;
  }
  return best;
}

static Isa g_isa = initial_isa();

Isa active_isa() { return g_isa; }
Isa widest_supported_isa() { return supported_isa(); }
void set_active_isa(Isa isa) { g_isa = isa <= supported_isa() ? isa : supported_isa(); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "baseline";
  }
}

}  // namespace fastopt::cpu
