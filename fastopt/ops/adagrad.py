"""Adagrad: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
Stochastic Optimization", JMLR 2011."""

import math

from .. import reference
from . import HEAD, Hyper, OpSpec, Slot, common, nonneg, scalar_index

I = scalar_index("clr", "eps")


def check(group):
    common(group, "lr_decay", "weight_decay", "eps")
    nonneg("initial_accumulator_value value", group["initial_accumulator_value"])


def host(group, step, fresh, state):
    return dict(clr=group["lr"] / (1 + (step - 1) * group["lr_decay"]), eps=group["eps"])


def rule(x, i, p, g, c):
    s = x[2][i] + g * g
    x[2][i] = s
    return p - c[I.clr] * (g / (math.sqrt(s) + c[I.eps]))


SPEC = OpSpec(
    name="adagrad", cls="Adagrad", torch="Adagrad", check=check, host=host, rule=rule,
    scalars_order=I._fields[len(HEAD):], reference=reference.adagrad,
    slots=(Slot("state_sum", key="sum", init=lambda h: h["initial_accumulator_value"],
                nonneg=True),),
    hypers=(Hyper("lr", 1e-2), Hyper("lr_decay", 0.0), Hyper("weight_decay", 0.0),
            Hyper("initial_accumulator_value", 0.0), Hyper("eps", 1e-10),
            Hyper("maximize", False, True)),
    doc="""Adagrad with lr decay, L2 weight decay and maximize; defaults, state and results as
    torch.optim.Adagrad.

        g = -g if maximize else g;  g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay);  s = s + g^2;  p = p - clr * g / (sqrt(s) + eps)

    Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011.""",
)
