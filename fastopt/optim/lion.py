from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import functional as F
from .optimizer import Optimizer


class Lion(Optimizer):
    """Lion (EvoLved Sign Momentum) with decoupled weight decay; the paper's defaults
    (lr=1e-4, betas=(0.9, 0.99)). Formula: fastopt.reference.lion.

    Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """

    op = "lion"

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False, backend: str | None = None) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay,
                                      maximize=maximize), backend=backend)

    def _check(self, group: dict[str, Any]) -> None:
        betas = group["betas"]
        if len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas} (expected two values)")
        F.check_lion(group["lr"], betas[0], betas[1], group["weight_decay"])

    def _state_slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg",)

    def _hyper(self, group: dict[str, Any], step: int, fresh: frozenset[str]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(lr=group["lr"], beta1=beta1, beta2=beta2,
                    weight_decay=group["weight_decay"], maximize=group["maximize"])
