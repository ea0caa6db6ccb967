// exp and log for float written as straight-line arithmetic, so loops that call them vectorize
// (glibc's expf/logf do not without -ffast-math). exp: Cephes' polynomial, about 1 ulp; log:
// an atanh form, within 2 ulp (log1p 3); the float32 tolerance (rtol 1e-5) leaves ample room
// for both. Double math keeps using <cmath>.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastopt/common.h"

namespace fastopt {

FASTOPT_HD float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

FASTOPT_HD int32_t float_to_bits(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// e^x = e^r 2^fx for a finite x (never NaN: fx goes to an int conversion): returns e^r,
// Cephes' polynomial on r = x - fx ln 2, |r| <= ln(2) / 2, and sets fx = round(x / ln 2).
FASTOPT_HD float exp_reduced_f(float x, float& fx) {
  fx = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  return y * z + r + 1.0f;
}

// e^x: 0 for x = -inf and anything below the normal range, +inf past ln(FLT_MAX), NaN for
// NaN; about 1 ulp in between.
FASTOPT_HD float exp_f(float x) {
  const float lo = -87.33654f, hi = 88.72283f;
  // written so NaN clamps to lo: the int conversion below must never see NaN (UB)
  const float xc = x > lo ? (x < hi ? x : hi) : lo;
  float fx;
  float y = exp_reduced_f(xc, fx);
  // 2^fx as 2^(fx - top) * 2^top: fx reaches 128 for x in (88.38, 88.72], one past the largest
  // float exponent, where e^x itself (y < 1 there) is still finite
  const int32_t e = int32_t(fx);
  const int32_t top = e > 127 ? 1 : 0;
  const float scale = bits_to_float((e - top + 127) << 23);
  y = top ? y + y : y;
  const float inf = bits_to_float(0x7f800000);
  // x - x is 0, or NaN for a NaN x: one expression for both, not a third select (a select
  // whose arm is x itself gets the caller's arithmetic compiled twice, once for that arm)
  return x < lo ? 0.0f : (x > hi ? inf : y * scale + (x - x));
}

// e^x for x <= 0 (and NaN): exp_f without the overflow end, for arguments known not to be
// positive (e^-|x| in the logistic losses), a quarter fewer instructions.
FASTOPT_HD float exp_nonpos_f(float x) {
  const float lo = -87.33654f;
  const float xc = x > lo ? x : lo;  // NaN clamps to lo: the int conversion must not see it
  float fx;
  const float y = exp_reduced_f(xc, fx);
  const float scale = bits_to_float((int32_t(fx) + 127) << 23);
  return x < lo ? 0.0f : y * scale + (x - x);
}

// v = m 2^e with m in [sqrt(1/2), sqrt(2)), for a positive normal v.
FASTOPT_HD void split_f(float v, float& m, float& e) {
  const int32_t bits = float_to_bits(v);
  e = float(((bits >> 23) & 0xff) - 126);
  m = bits_to_float((bits & 0x807fffff) | 0x3f000000);  // v = m * 2^e, m in [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m : m;
}

// log(m 2^e) = e ln 2 + 2 atanh(s), given s = (m - 1) / (m + 1), |s| <= 0.172: a degree-2
// polynomial in s^2 (fitted to 8e-10 relative), e ln 2 in two parts (0.693359375 has few bits,
// so e times it is exact).
FASTOPT_HD float log_atanh_f(float s, float e) {
  const float z = s * s;
  float q = 1.49376512e-1f;
  q = q * z + 1.99886888e-1f;
  q = q * z + 3.33333880e-1f;
  const float t = s + s;
  return t + (t * z * q + e * -2.12194440e-4f) + e * 0.693359375f;
}

// log(v) for any float, as std::log: -inf at 0, NaN below 0 and for NaN, +inf at +inf;
// subnormals are scaled by 2^23 into the normal range first. One division and a short
// polynomial, which beats Cephes' degree-8 one in time; within 2 ulp.
FASTOPT_HD float log_f(float v) {
  const float inf = bits_to_float(0x7f800000);
  const bool sub = v < 1.17549435e-38f;  // below the smallest normal (0 and negatives too)
  float m, e;
  split_f(sub ? v * 8388608.0f : v, m, e);
  e = sub ? e - 23.0f : e;
  const float r = log_atanh_f((m - 1.0f) / (m + 1.0f), e);  // m - 1 is exact
  return v > 0.0f ? (v < inf ? r : inf) : (v == 0.0f ? -inf : bits_to_float(0x7fc00000));
}

// log(1 + u) for any float (NaN below -1), accurate for tiny u: where 1 + u = m 2^0, s is
// u / (2 + u) from u itself, not from the rounded 1 + u. Costs what log_f costs; within 3 ulp.
FASTOPT_HD float log1p_f(float u) {
  const float inf = bits_to_float(0x7f800000);
  const float w = 1.0f + u;  // 0 or >= 2^-24 for u >= -1: never subnormal
  float m, e;
  split_f(w, m, e);
  const bool near = e == 0.0f;
  const float r = log_atanh_f((near ? u : m - 1.0f) / (near ? 2.0f + u : m + 1.0f), e);
  return w > 0.0f ? (w < inf ? r : inf) : (w == 0.0f ? -inf : bits_to_float(0x7fc00000));
}

// 2 atanh(s) = log((1 + s) / (1 - s)) for |s| <= 1/3, that is log(1 + e) for e in [0, 1] with
// s = e / (2 + e): an odd polynomial (1 + s^2 Q(s^2) fitted to 5e-9 relative on [0, 1/9]) with
// no exponent arithmetic, so a loss that already divides by 1 + e gets its log1p for a few FMAs.
FASTOPT_HD float two_atanh_f(float s) {
  const float z = s * s;
  float q = 1.40075624e-1f;
  q = q * z + 1.40004233e-1f;
  q = q * z + 2.00108096e-1f;
  q = q * z + 3.33332062e-1f;
  const float t = s + s;
  return t + t * (z * q);
}

// The same names for double, through <cmath>, so templated kernels call one spelling.
FASTOPT_HD double exp_f(double x) { return std::exp(x); }
FASTOPT_HD double exp_nonpos_f(double x) { return std::exp(x); }
FASTOPT_HD double log_f(double x) { return std::log(x); }
FASTOPT_HD double log1p_f(double x) { return std::log1p(x); }
FASTOPT_HD double two_atanh_f(double s) { return 2.0 * std::atanh(s); }

}  // namespace fastopt
