// Entry points of the CPU kernels. Every csrc/cpu/*.cpp is compiled once per ISA into its own
// namespace (baseline, avx2, avx512); FASTOPT_CPU_CALL picks the one chosen at start-up.
#pragma once
#include "fastopt/common.h"
#include "fastopt/rules/clip.h"
#include "fastopt/rules/cross_entropy.h"
#include "fastopt/rules/elementwise_loss.h"
#include "fastopt/tensor_list.h"

namespace fastopt::cpu {

enum class Isa : int { baseline = 0, avx2 = 1, avx512 = 2 };
Isa active_isa();  // runtime.cpp: the widest supported, unless FASTOPT_ISA or set_active_isa narrowed it
Isa widest_supported_isa();
void set_active_isa(Isa isa);  // for tests and benchmarks; never wider than supported
const char* isa_name(Isa isa);

// Streams the bandwidth probe (probe.cpp) takes: read-modify-write, read-only, write-only.
constexpr int kProbeMaxRw = 4, kProbeMaxRo = 2, kProbeMaxWo = 1;

// How an optimizer table's rows are stored beyond the table's dtype (the params' and grads'):
// each state row's own storage (null: all in the params' dtype; else a DType code, float32,
// float16 or bfloat16 for 32- and 16-bit params, or a RowKind), and float32 master copies of 16-bit params (null: none; else
// one address per tensor), which the step reads and writes in place of the params, rounding
// its result into the params.
// A state row's storage: a DType's code, or an 8-bit quantized row (quant8.h: codes and block
// absmax packed in one byte row) of signed or nonnegative values.
enum RowKind : int { kQuant8Signed = 4, kQuant8Unsigned = 5 };
struct RowStorage {
  const int* state = nullptr;
  const uint64_t* master = nullptr;
};

// One declaration per kernel; each ISA namespace gets the same list. step: the optimizer at
// index `op` of fastopt/optimizers.h, with its full scalar vector (fastopt/rule.h); unscale != 1:
// the gradients are first unscaled in place (g = g * unscale: GradScaler's 1 / scale);
// stochastic_ids (one id per tensor, or null): 16-bit params rounded stochastically with the
// keys of (stochastic_base, id) (half.h); RowStorage: mixed-precision state and master weights.
#define FASTOPT_CPU_KERNELS                                                    \
  void step(int op, const TensorList&, DType, const RowStorage&, const double* scalars, \
            double unscale, const int64_t* stochastic_ids, uint32_t stochastic_base);  \
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
