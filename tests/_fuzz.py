"""Shared pieces of the property-based fuzz tests (tests/test_fuzz_*.py): the hypothesis
profiles, strategies for shapes, dtypes and non-finite placements, and array helpers.

Profiles (environment variable FASTOPT_FUZZ):
  ci    (default) bounded and derandomized: the same examples on every run, so a CI failure
        reproduces locally; the whole fuzz suite takes about a minute on two cores.
  long  many more examples from fresh random seeds, failures kept in hypothesis' example
        database for replay:  FASTOPT_FUZZ=long python -m pytest tests/test_fuzz_*.py
Either prints a @reproduce_failure blob with a failing example.

Hypothesis draws the structure of each example (shapes, dtypes, options, where NaNs go, which
argument is broken) and a seed; the bulk values come from NumPy's generator under that seed, so
large arrays cost no shrinking effort.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from tolerances import tol

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", deadline=None, derandomize=True, database=None,
                          print_blob=True, suppress_health_check=_HEALTH)
settings.register_profile("long", deadline=None, print_blob=True,
                          suppress_health_check=_HEALTH)
PROFILE = os.environ.get("FASTOPT_FUZZ", "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"FASTOPT_FUZZ: expected 'ci' or 'long', got {PROFILE!r}")
#: Examples of the long profile per example of the ci one.
LONG_FACTOR = 20


def fuzz(examples: int) -> settings:
    """Settings of one fuzz test: `examples` in the ci profile, LONG_FACTOR times as many in
    the long one."""
    n = examples if PROFILE == "ci" else examples * LONG_FACTOR
    return settings(settings.get_profile(PROFILE), max_examples=n)


# --- shapes and dtypes ------------------------------------------------------------------------

#: 1-D sizes: empty, one, primes and odd counts around the SIMD widths and chunk boundaries.
SIZES = (0, 1, 2, 3, 5, 7, 8, 13, 31, 64, 127, 257, 1021, 4097)
#: Sizes past 65536 (the 16-bit boundary), drawn rarely: they cost time in the reference.
BIG_SIZES = (65537, 131071)
#: Axis lengths of 2-D and 3-D shapes.
DIMS = (0, 1, 2, 3, 5, 7, 17)
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(DTYPES)


@st.composite
def shapes(draw: Any, big_one_in: int = 20, max_rank: int = 3) -> tuple[int, ...]:
    """A shape of rank 0 to max_rank; one draw in `big_one_in` is 1-D and past 65536."""
    if big_one_in and draw(st.sampled_from((False,) * (big_one_in - 1) + (True,))):
        return (draw(st.sampled_from(BIG_SIZES)),)
    rank = draw(st.sampled_from([r for r in (1, 1, 1, 2, 2, 0, 3) if r <= max_rank]))
    if rank == 1:
        return (draw(st.sampled_from(SIZES)),)
    return tuple(draw(st.sampled_from(DIMS)) for _ in range(rank))


@st.composite
def dtype_lists(draw: Any, n: int) -> list[np.dtype]:
    """n dtypes: usually one for the whole list, sometimes float32 and float64 mixed."""
    if draw(st.booleans()):
        return [draw(dtypes)] * n
    return [draw(dtypes) for _ in range(n)]


def numel(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def note(shape_list: Sequence[tuple[int, ...]], dtype_list: Sequence[Any] = (),
         nonfinite: bool = False) -> None:
    """Hypothesis events for what an example covers (shown by --hypothesis-show-statistics)."""
    if any(numel(s) > 65536 for s in shape_list):
        event("a tensor past 65536 elements")
    if any(numel(s) == 0 for s in shape_list):
        event("an empty tensor")
    if any(len(s) == 0 for s in shape_list):
        event("a 0-d tensor")
    if len(set(map(str, dtype_list))) > 1:
        event("float32 and float64 mixed")
    if nonfinite:
        event("NaN/inf placed")


# --- values ---------------------------------------------------------------------------------

NONFINITE = (np.nan, np.inf, -np.inf)


def nonfinite_spots(max_spots: int = 4, tensors: int = 5, steps: int = 1) -> st.SearchStrategy:
    """Where NaN/inf go: (step, tensor, position in [0, 1), value). Usually none."""
    spot = st.tuples(st.integers(0, steps - 1), st.integers(0, tensors - 1),
                     st.floats(0, 1, exclude_max=True), st.sampled_from(NONFINITE))
    return st.one_of(st.just([]), st.lists(spot, min_size=1, max_size=max_spots))


def place(arrays: Sequence[np.ndarray], spots: Sequence[tuple], step: int = 0) -> None:
    """Write the spots of `step` into arrays (tensor index modulo the list length)."""
    for s, k, where, value in spots:
        a = arrays[k % len(arrays)]
        if s == step and a.size:
            a.reshape(-1)[int(where * a.size)] = value


def normal(rng: np.random.Generator, shape: Sequence[int], dtype: Any,
           zeros: bool = False) -> np.ndarray:
    """Standard normal values times a magnitude in [1e-2, 1e2] (kept where float32 math
    neither overflows nor underflows, so float32 kernels and the float64 reference can agree
    to the tolerance table); with `zeros`, about one element in eight is exactly 0."""
    x = np.asarray(rng.standard_normal(tuple(shape)) * 10.0 ** rng.uniform(-2, 2))
    if zeros:
        x[rng.random(x.shape) < 0.125] = 0.0
    return x.astype(dtype)


def carve(specs: Sequence[tuple[tuple[int, ...], np.dtype]],
          rng: np.random.Generator) -> list[np.ndarray]:
    """Zero-filled arrays of the given (shape, dtype) as adjacent, non-overlapping views of
    one shared buffer, in a random order: flat parameter buffers (FSDP, DeepSpeed) look like
    this, and touching arrays must not be taken for aliased ones."""
    order = rng.permutation(len(specs))
    offsets, total = {}, 0
    for k in order:
        shape, dtype = specs[k]
        total += -total % dtype.itemsize  # each view aligned to its own itemsize
        offsets[k] = total
        total += numel(shape) * dtype.itemsize
    buf = np.zeros(total + 8, np.uint8)
    return [buf[offsets[k]:offsets[k] + numel(shape) * dtype.itemsize].view(dtype).reshape(shape)
            for k, (shape, dtype) in enumerate(specs)]


def snapshot(arrays: Sequence[Any]) -> list[np.ndarray]:
    return [np.array(a, copy=True) for a in arrays]


def assert_unchanged(before: Sequence[np.ndarray], arrays: Sequence[Any], what: str) -> None:
    for k, (b, a) in enumerate(zip(before, arrays, strict=True)):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg=f"{what}: array {k} changed")


# --- comparing with the reference, allowing for its own sensitivity ----------------------------

Move = Callable[[np.ndarray], np.ndarray]


def jitter(rng: np.random.Generator | None, sign: float = 0.0, ulps: int = 4) -> Move:
    """A function that copies an array with every element moved by `ulps` units in the last
    place of its dtype: up (sign 1), down (-1), or up or down at random per element (0, with
    `rng`). Zeros, NaN and inf stay."""

    def move(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        s = rng.choice((-1.0, 1.0), a.shape) if sign == 0 else sign
        with np.errstate(invalid="ignore", over="ignore"):
            return np.asarray(a * (1 + ulps * np.finfo(a.dtype).eps * s), a.dtype)

    return move


def copy(a: np.ndarray) -> np.ndarray:
    return np.array(a, copy=True)


def reference_moves(seed: int) -> list[tuple[Move, Move, Move]]:
    """(param, grad, state) moves for runs of the reference: first the exact inputs, then
    inputs moved by a few ulps. Params and state move against the gradients in two of them,
    so that a gradient cancelling its weight decay (g + wd p ~ 0) or its running average
    always shows; two more move every element at random."""
    rng = np.random.default_rng(seed)
    up, down = jitter(None, 1.0), jitter(None, -1.0)
    return [(copy, copy, copy), (up, down, up), (down, up, down),
            (jitter(rng), jitter(rng), jitter(rng)), (jitter(rng), jitter(rng), jitter(rng))]


def peak(previous: np.ndarray | None, a: np.ndarray) -> np.ndarray:
    """The element-wise largest finite magnitude of a along a trajectory so far."""
    m = np.abs(np.asarray(a, np.float64))
    m = np.where(np.isfinite(m), m, 0.0)
    return m if previous is None else np.maximum(previous, m)


def assert_close_within_sensitivity(actual: Any, expected: np.ndarray,
                                    jittered: Sequence[np.ndarray], dtype: Any, what: str,
                                    peaks: np.ndarray | None = None) -> None:
    """assert_close of the tolerance table, element by element, with two allowances that
    random trajectories need and fixed test data never meets:

    - atol relative to the largest magnitude the element reached on its way (`peaks`), not
      only to the final array's (the table's own rule, per element): a param that went to
      2000 and came back to 0.6 carries rounding errors of order ulp(2000);
    - plus twice the reference's own sensitivity: the largest change of its result when its
      inputs move by a few ulps (`jittered`). Where the problem is ill-conditioned at the
      storage precision (a gradient cancelling its weight decay, centered RMSprop's
      s - ga^2) a rounding in the last place of an input moves the exact result further than
      the table allows, and no float32 kernel can be held to it; elsewhere this is far below
      the tolerance.

    NaN and inf must match, except where the moves themselves change them."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    t = tol(dtype)
    finite = np.isfinite(e)
    mag = np.where(finite, np.abs(e), 0.0)
    spread = np.zeros(e.shape)
    same_kind = np.ones(e.shape, bool)
    with np.errstate(invalid="ignore"):
        for j in jittered:
            j = np.asarray(j, np.float64)
            same_kind &= np.where(finite, np.isfinite(j), (j == e) | np.isnan(j) & np.isnan(e))
            spread = np.maximum(spread, np.where(finite & np.isfinite(j), np.abs(j - e), 0.0))
        scale = np.maximum(max(1.0, float(mag.max()) if mag.size else 1.0),
                           0.0 if peaks is None else peaks)
        limit = t["atol"] * scale + t["rtol"] * mag + 2 * spread
        ok = np.where(finite, np.abs(a - e) <= limit, (a == e) | np.isnan(a) & np.isnan(e))
    bad = np.nonzero(~(ok | ~same_kind).reshape(-1))[0]
    assert bad.size == 0, (
        f"{what}: {bad.size} of {e.size} elements differ; first at flat indices "
        f"{bad[:5].tolist()}: actual {a.reshape(-1)[bad[:5]].tolist()}, expected "
        f"{e.reshape(-1)[bad[:5]].tolist()}, allowed difference "
        f"{np.broadcast_to(limit, e.shape).reshape(-1)[bad[:5]].tolist()}")
