// Softmax cross-entropy over the last axis: the arguments of one fused forward + gradient
// call and the per-row algebra shared by the CPU and GPU drivers.
//
// Every variant is written as one target distribution t over the classes:
//   class index y:   t_c = (1 - eps) w_y [c == y] + (eps / C) w_c      (torch's smoothing)
//   probabilities p: t_c = w_c ((1 - eps) p_c + eps / C)
// (w = 1 without class weights). With A = sum_c t_c and lse = logsumexp(x):
//   loss = A lse - sum_c t_c x_c + z lse^2 = A log(S) - sum_c t_c (x_c - max) + z lse^2
//   (S = sum_c exp(x_c - max); the second form has no cancellation)
//   dloss/dx_j = softmax_j (A + 2 z lse) - t_j
// and soft-capping x -> cap tanh(x / cap) multiplies the gradient by 1 - tanh^2.
#pragma once
#include <cstdint>

#include "fastopt/common.h"

namespace fastopt {

enum class CeTarget : int { int32 = 0, int64 = 1, probs = 2 };
enum class Reduction : int { none = 0, mean = 1, sum = 2 };

// Rows are the n positions of the logits outside the class axis. With inner == 1 the logits
// are [n, c] and a row is contiguous; otherwise they are [n / inner, c, inner] (torch's
// [N, C, d1, ...] with inner = d1 * ...), row i = (i / inner, :, i % inner) has stride inner,
// and probability targets share that layout. Class indices are always [n], row order.
struct CrossEntropyArgs {
  const void* logits;      // read only (unless grad == logits)
  void* grad;              // the logits' layout, or nullptr for forward only; may equal logits
  const void* target;      // [n] class indices, or probabilities in the logits' dtype and layout
  const void* weight;      // [c] class weights in the logits' dtype, or nullptr
  double* row_loss;        // [n] out: each row's loss (0 for ignored rows)
  int64_t n, c;
  CeTarget target_kind;
  int64_t ignore_index;
  double label_smoothing;  // eps
  double z_loss;           // z (PaLM's auxiliary loss coefficient); 0 disables
  double softcap;          // cap; 0 disables
  Reduction reduction;     // mean scales the gradient by 1 / (sum of weights of counted rows)
  int64_t inner = 1;       // the class axis' stride in elements (see above); CPU driver only
};

struct CrossEntropyResult {
  double loss_sum;   // sum of row losses, fixed-order pairwise
  double denom;      // what 'mean' divides by: sum of w_y over counted rows (N for probs)
  int64_t bad_row;   // first row whose class index is out of range, or -1
};

// The derivative of cap * tanh(x / cap) in terms of its value s: 1 - (s / cap)^2.
template <typename M>
FASTOPT_HD M softcap_slope(M capped, M inv_cap) {
  const M r = capped * inv_cap;
  return M(1) - r * r;
}

}  // namespace fastopt
