"""float64 in, storage dtype out: the two halves of every reference function."""

import numpy as np


def f64(*arrays):
    return tuple(None if a is None else np.asarray(a, dtype=np.float64) for a in arrays)


def store(dst: np.ndarray, value: np.ndarray) -> None:
    dst[...] = value.astype(dst.dtype)
