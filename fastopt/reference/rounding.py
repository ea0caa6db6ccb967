"""Stochastic rounding of float16 and bfloat16 params: the specification of the kernels'
(csrc/cpu/half.h) bit for bit.

A 16-bit param updated by less than half its ulp never moves under round to nearest: the
update is lost, every step. Rounding stochastically, away from zero with probability equal to
the fraction of an ulp by which the value lies beyond its 16-bit neighbour toward zero, keeps
the expected stored value equal to the computed one, so small updates accumulate on average
(Gupta et al., "Deep Learning with Limited Numerical Precision", ICML 2015; Zamirai et al.,
"Revisiting BFloat16 Training", 2020).

The value rounded is the update's result rounded to nearest float32 (the kernels' math type).
Its random bits come from a counter-based generator, so that they depend on nothing but the key
and the element's index (not on threads or chunking):

    base   = mix32(mix32(seed) ^ step)            per step   (fastopt.ops.stochastic_base)
    key    = mix32(base ^ tensor id)              per tensor (its position in the call's list)
    r[i]   = mix32(mix32(key ^ hi(i)) ^ lo(i))    per element (i's upper and lower 32 bits)

mix32 is C. Wellons' lowbias32 integer hash. With the float32 value's bits u:

    bfloat16   16 dropped bits: (u + (r >> 16)) >> 16      (a carry rounds away from zero)
    float16    normal results: 13 dropped bits, (|u| + (r >> 19)) >> 13, exponent rebiased;
               subnormal results (|x| < 2^-14): trunc(|x| * 2^24 + (r >> 19) / 2^13)
    NaN, infinity (and float16 overflow, |x| >= 65536): as round to nearest
"""

from __future__ import annotations

import numpy as np

from ._io import f64


def mix32(x):
    """lowbias32 (C. Wellons): a bijection of uint32 words with low bias, elementwise."""
    x = np.asarray(x, dtype=np.uint32)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint32(16))
        x = x * np.uint32(0x7FEB352D)
        x = x ^ (x >> np.uint32(15))
        x = x * np.uint32(0x846CA68B)
        x = x ^ (x >> np.uint32(16))
    return x


def random_bits(key: int, n: int, first: int = 0) -> np.ndarray:
    """The 32 random bits of elements first .. first + n - 1 of a tensor keyed `key`."""
    i = np.arange(first, first + n, dtype=np.uint64)
    hi = (i >> np.uint64(32)).astype(np.uint32)
    lo = (i & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return mix32(mix32(np.uint32(key) ^ hi) ^ lo)


def tensor_key(base: int, tensor_id: int) -> int:
    return int(mix32(np.uint32(base) ^ np.uint32(tensor_id & 0xFFFFFFFF)))


def stochastic_round(dst: np.ndarray, value, key: int) -> None:
    """dst (float16 or bfloat16, any shape) = value rounded stochastically with the random bits
    of `key` (see the module docstring), elementwise in C order."""
    if not dst.flags.c_contiguous:
        raise ValueError("stochastic_round: dst must be C-contiguous (elements in C order)")
    f = np.ascontiguousarray(f64(value)[0].astype(np.float32)).reshape(-1)
    u = f.view(np.uint32)
    r = random_bits(key, f.size)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to infinity, as specified
        nearest = f.astype(dst.dtype).view(np.uint16).astype(np.uint32)
    if dst.dtype == np.float16:
        sign = u & np.uint32(0x80000000)
        a = u ^ sign
        with np.errstate(over="ignore"):
            normal = ((a + (r >> np.uint32(19))) >> np.uint32(13)) - np.uint32((127 - 15) << 10)
        tiny = np.where(a < np.uint32(113 << 23), a, np.uint32(0)).view(np.float32)
        y = tiny * np.float32(2.0**24) \
            + (r >> np.uint32(19)).astype(np.float32) * np.float32(2.0**-13)
        small = y.astype(np.int32).astype(np.uint32)
        out = np.where(a >= np.uint32((127 + 16) << 23), nearest & np.uint32(0x7FFF),
                       np.where(a < np.uint32(113 << 23), small, normal))
        bits = out | (sign >> np.uint32(16))
    elif str(dst.dtype) == "bfloat16":
        finite = (u & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
        bits = np.where(finite, (u + (r >> np.uint32(16))) >> np.uint32(16), nearest)
    else:
        raise TypeError(f"stochastic rounding takes float16 or bfloat16, not {dst.dtype}")
    out = dst.view(np.uint16)
    out[...] = bits.astype(np.uint16).reshape(out.shape)
