"""8-bit blockwise-quantized optimizer state (state_dtype="8bit"): the specification of the
kernels' (csrc/cpu/quant8.h) encoding.

A state row of n elements is stored as one uint8 array of `packed_size(n)` bytes: n codes, zero
bytes up to a multiple of 4, then one float32 absmax per block of BLOCK elements (the last
block may be shorter). Block b holds x[i] = decode(code[i]) * absmax[b], with absmax the
largest |x| of the block when it was stored (Dettmers et al., "8-bit Optimizers via Block-wise
Quantization", ICLR 2022).

Codes are small floats of y = |x| / absmax in [0, 1], rounded to nearest even: nonnegative rows
(second moments: the spec's `Slot.nonneg`) as E5M3 (5 exponent bits, bias 31, so y down to
2^-30 before subnormals: a second moment spans the square of the gradient's range, and the
update divides by its root), signed rows as a sign bit and E4M3 (bias 15, y down to 2^-14).
Exponent field 0 holds subnormals m * 2^(1 - bias - 3). Against bitsandbytes' dynamic tree map
this keeps a constant relative precision (2^-4, halved again by the second moment's square root)
over the whole range instead of more precision near the absmax and less below 1 % of it, and both
directions are a few integer operations that vectorize, where the dynamic map's encoding is a
search.

A block whose absmax is not finite (a NaN or infinite state value) stores NaN as its absmax: the
whole block reads NaN.
"""

from __future__ import annotations

import numpy as np

BLOCK = 256
#: rows smaller than this keep float32 state (the quantization of a few values saves nothing)
MIN_SIZE = 4096
MANTISSA = 3
BIAS = {True: 15, False: 31}  # signed rows: E4M3 and a sign bit; nonnegative rows: E5M3


def packed_size(n: int) -> int:
    """Bytes of an n-element 8-bit state row: the codes, padding to 4, the float32 absmaxes."""
    return (n + 3) // 4 * 4 + 4 * ((n + BLOCK - 1) // BLOCK)


def _magnitudes(signed: bool) -> np.ndarray:
    """The value of every magnitude code (7 bits signed, 8 unsigned), as float64."""
    bias = BIAS[signed]
    codes = np.arange(128 if signed else 256)
    e, m = codes >> MANTISSA, codes & ((1 << MANTISSA) - 1)
    normal = (1.0 + m / 2.0**MANTISSA) * np.exp2(e.astype(np.float64) - bias)
    return np.where(e == 0, m * 2.0 ** (1 - bias - MANTISSA), normal)


def _encode(y: np.ndarray, signed: bool) -> np.ndarray:
    """Nearest magnitude code of y in [0, 1] (ties to the even code)."""
    grid = _magnitudes(signed)
    grid = grid[grid <= 1.0]
    hi = np.clip(np.searchsorted(grid, y), 1, len(grid) - 1)
    lo = hi - 1
    d_lo, d_hi = y - grid[lo], grid[hi] - y
    up = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    return np.where(up, hi, lo).astype(np.uint8)


def split(packed: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes, absmax) views of an n-element packed row."""
    codes = packed[:n]
    start = (n + 3) // 4 * 4
    return codes, packed[start:start + 4 * ((n + BLOCK - 1) // BLOCK)].view(np.float32)


def dequantize(packed: np.ndarray, n: int, signed: bool) -> np.ndarray:
    """The n float64 values a packed row holds."""
    codes, absmax = split(packed, n)
    mag = _magnitudes(signed)[codes & (0x7F if signed else 0xFF)]
    if signed:
        mag = np.where(codes & 0x80, -mag, mag)
    return mag * np.repeat(absmax.astype(np.float64), BLOCK)[:n]


def quantize(x: np.ndarray, packed: np.ndarray, signed: bool) -> None:
    """Store the values x (any float dtype, flat) into the packed row, block by block."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    n = x.size
    codes, absmax = split(packed, n)
    blocks = (n + BLOCK - 1) // BLOCK
    padded = np.zeros(blocks * BLOCK)
    padded[:n] = np.abs(x)
    amax = padded.reshape(blocks, BLOCK).max(axis=1).astype(np.float32)
    bad = ~np.isfinite(amax) | np.isnan(padded.reshape(blocks, BLOCK)).any(axis=1)
    amax[bad] = np.nan
    scale = np.repeat(amax.astype(np.float64), BLOCK)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(scale > 0, np.abs(x) / scale, 0.0)
    y = np.clip(np.nan_to_num(y, nan=0.0), 0.0, 1.0)
    c = _encode(y, signed)
    if signed:
        c = c | np.where(x < 0, 0x80, 0).astype(np.uint8)
    codes[...] = c
    absmax[...] = amax


def full(n: int, value: float, signed: bool) -> np.ndarray:
    """A packed row of n elements all equal to value (a state's initial value)."""
    packed = np.zeros(packed_size(n), np.uint8)
    quantize(np.full(n, value), packed, signed)
    return packed
