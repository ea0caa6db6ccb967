from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import functional as F
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """RMSprop, optionally centered and with momentum; defaults and results as
    torch.optim.RMSprop. Formula: fastopt.reference.rmsprop.

    Hinton, "Neural Networks for Machine Learning", lecture 6e, 2012; centered: Graves,
    "Generating Sequences With Recurrent Neural Networks", 2013.
    """

    op = "rmsprop"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False,
                 backend: str | None = None) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize),
                         backend=backend)

    def _check(self, group: dict[str, Any]) -> None:
        F.check_rmsprop(**group)

    def _state_slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        slots = ("square_avg",)
        if group["momentum"] > 0:
            slots += ("momentum_buffer",)
        if group["centered"]:
            slots += ("grad_avg",)
        return slots

    def _hyper(self, group: dict[str, Any], step: int, fresh: frozenset[str]) -> dict[str, Any]:
        return dict(lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                    weight_decay=group["weight_decay"], momentum=group["momentum"],
                    centered=group["centered"], maximize=group["maximize"])
