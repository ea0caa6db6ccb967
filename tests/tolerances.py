"""The one tolerance table every backend is held to against fastopt.reference (DESIGN.md:
no looser than rtol 1e-5 for float32 and 1e-12 for float64).

atol covers elements that pass near zero, where a relative bound means nothing. It is taken
relative to the largest magnitude the array reached (`reach`, else its final values): a
trajectory whose values reach 10 carries rounding errors of order ulp(10) into every element
that crosses zero on the way. fp32 math over 100 steps carries a few ulp of that magnitude
(atol 1e-6: about 8 ulp(1)); a 16-bit state re-rounded every step carries about two of its
own ulps (2^-10 for fp16, 2^-7 for bf16) from where its values were largest."""

import numpy as np

TOL = {
    "float64": dict(rtol=1e-12, atol=1e-14),
    "float32": dict(rtol=1e-5, atol=1e-6),
    "float16": dict(rtol=1e-3, atol=2e-3),
    "bfloat16": dict(rtol=1e-2, atol=1.6e-2),
}


def tol(dtype) -> dict:
    return TOL[np.dtype(dtype).name if not isinstance(dtype, str) else dtype]


def assert_close(actual, expected, dtype=None, what: str = "", reach: float = 0.0) -> None:
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    t = dict(tol(dtype or expected.dtype))
    finite = np.abs(expected[np.isfinite(expected)].astype(np.float64))
    t["atol"] *= max(1.0, float(finite.max()) if finite.size else 1.0, reach)
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               err_msg=what, equal_nan=True, **t)
