from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import functional as F
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam with L2 weight decay, AMSGrad and maximize; defaults and results as
    torch.optim.Adam. Extras (keyword-only): bias_correction=False drops the 1 - beta^t
    corrections; eps_inside_sqrt=True uses m / sqrt(v + eps) (older Apex, some textbooks).
    Formula: fastopt.reference.adam.

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; AMSGrad: Reddi et
    al., "On the Convergence of Adam and Beyond", ICLR 2018.
    """

    op = "adam"
    decoupled = False
    torch_keys = frozenset({"decoupled_weight_decay"})

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 bias_correction: bool = True, eps_inside_sqrt: bool = False,
                 backend: str | None = None) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, bias_correction=bias_correction,
                                      eps_inside_sqrt=eps_inside_sqrt), backend=backend)

    def _check(self, group: dict[str, Any]) -> None:
        betas = group["betas"]
        if len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas} (expected two values)")
        F.check_adam(group["lr"], betas[0], betas[1], group["eps"], group["weight_decay"])
        # torch.optim.Adam's checkpoints carry this flag: refuse one for the other variant
        if bool(group.get("decoupled_weight_decay", self.decoupled)) != self.decoupled:
            raise ValueError(f"decoupled_weight_decay={group['decoupled_weight_decay']} does "
                             f"not match {type(self).__name__} (use "
                             f"{'AdamW' if not self.decoupled else 'Adam'})")

    def _state_slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        base = ("exp_avg", "exp_avg_sq")
        return (*base, "max_exp_avg_sq") if group["amsgrad"] else base

    def _hyper(self, group: dict[str, Any], step: int, fresh: frozenset[str]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(step=step, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                    weight_decay=group["weight_decay"], decoupled=self.decoupled,
                    amsgrad=group["amsgrad"], maximize=group["maximize"],
                    bias_correction=group["bias_correction"],
                    eps_inside_sqrt=group["eps_inside_sqrt"])


class AdamW(Adam):
    """Adam with decoupled weight decay, p = p * (1 - lr * weight_decay), default 1e-2; results
    as torch.optim.AdamW. Loshchilov & Hutter, "Decoupled Weight Decay Regularization",
    ICLR 2019."""

    decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, **kwargs: Any) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **kwargs)
