from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import functional as F
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """Adagrad with lr decay and L2 weight decay; defaults and results as torch.optim.Adagrad.
    Formula: fastopt.reference.adagrad.

    Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011.
    """

    op = "adagrad"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False,
                 backend: str | None = None) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize), backend=backend)

    def _check(self, group: dict[str, Any]) -> None:
        F.check_adagrad(**group)
        value = group["initial_accumulator_value"]
        if not 0.0 <= value < float("inf"):
            raise ValueError(f"Invalid initial_accumulator_value value: {value}")

    def _state_slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("state_sum",)

    def _init_value(self, slot: str, group: dict[str, Any]) -> float:
        return group["initial_accumulator_value"]

    def _hyper(self, group: dict[str, Any], step: int, fresh: frozenset[str]) -> dict[str, Any]:
        return dict(step=step, lr=group["lr"], lr_decay=group["lr_decay"],
                    weight_decay=group["weight_decay"], eps=group["eps"],
                    maximize=group["maximize"])
