// Entry points of the CPU kernels. Every csrc/cpu/<op>.cpp is compiled once per ISA into its
// own namespace (baseline, avx2, avx512); FASTOPT_CPU_CALL picks the one chosen at start-up.
#pragma once
#include "fastopt/rules/adagrad.h"
#include "fastopt/rules/adam.h"
#include "fastopt/rules/clip.h"
#include "fastopt/rules/cross_entropy.h"
#include "fastopt/rules/elementwise_loss.h"
#include "fastopt/rules/lion.h"
#include "fastopt/rules/rmsprop.h"
#include "fastopt/rules/sgd.h"
#include "fastopt/tensor_list.h"

namespace fastopt::cpu {

enum class Isa : int { baseline = 0, avx2 = 1, avx512 = 2 };
Isa active_isa();  // runtime.cpp: the widest supported, unless FASTOPT_ISA or set_active_isa narrowed it
Isa widest_supported_isa();
void set_active_isa(Isa isa);  // for tests and benchmarks; never wider than supported
const char* isa_name(Isa isa);

// Streams the bandwidth probe (probe.cpp) takes: read-modify-write, read-only, write-only.
constexpr int kProbeMaxRw = 4, kProbeMaxRo = 2, kProbeMaxWo = 1;

// One declaration per kernel; each ISA namespace gets the same list.
#define FASTOPT_CPU_KERNELS                                                    \
  void sgd(const TensorList&, DType, const SgdHyper&);                         \
  void adam(const TensorList&, DType, const AdamHyper&);                       \
  void adagrad(const TensorList&, DType, const AdagradHyper&);                 \
  void rmsprop(const TensorList&, DType, const RmspropHyper&);                 \
  void lion(const TensorList&, DType, const LionHyper&);                       \
  void probe(const TensorList&, int n_rw, int n_ro, int n_wo);                 \
  double norm(const TensorList&, DType, NormKind, double p);                   \
  void scale(const TensorList&, DType, double coef);                           \
  void clamp(const TensorList&, DType, double clip_value);                     \
  CrossEntropyResult cross_entropy(const CrossEntropyArgs&, DType);            \
  double elementwise_loss(const PointLossArgs&, DType, PointLoss);

namespace baseline { FASTOPT_CPU_KERNELS }
#if FASTOPT_X86_ISAS
namespace avx2 { FASTOPT_CPU_KERNELS }
namespace avx512 { FASTOPT_CPU_KERNELS }
#define FASTOPT_CPU_CALL(fn, ...)                                              \
  switch (::fastopt::cpu::active_isa()) {                                      \
    case ::fastopt::cpu::Isa::avx512: return ::fastopt::cpu::avx512::fn(__VA_ARGS__); \
    case ::fastopt::cpu::Isa::avx2: return ::fastopt::cpu::avx2::fn(__VA_ARGS__);     \
    default: return ::fastopt::cpu::baseline::fn(__VA_ARGS__);                 \
  }
#else
#define FASTOPT_CPU_CALL(fn, ...) return ::fastopt::cpu::baseline::fn(__VA_ARGS__);
#endif

}  // namespace fastopt::cpu
