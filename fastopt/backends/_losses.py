"""What every backend's cross-entropy does with its kernel's results."""

from __future__ import annotations

import math
from typing import Any


def cross_entropy_result(bad: int, target: Any, c: int, ignore_index: int, reduction: str,
                         rows: Any, total: float, denom: float, indices: Any = None) -> Any:
    """Raise for the first out-of-range class index (row `bad`, -1 if none; read from
    `indices`, a host copy of the targets, when given), else the loss: per-row values, their
    sum, or the mean over `denom` (NaN when every row is ignored)."""
    if bad >= 0:
        value = int((target.obj if indices is None else indices).reshape(-1)[bad])
        raise ValueError(f"target: class index {value} at row {bad} is out of range "
                         f"[0, {c}) (and is not ignore_index={ignore_index})")
    if reduction == "none":
        return rows
    if reduction == "sum":
        return total
    return total / denom if denom else math.nan
