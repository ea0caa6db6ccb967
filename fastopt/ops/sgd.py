"""SGD with momentum (torch.optim.SGD); Nesterov: Sutskever et al., "On the importance of
initialization and momentum in deep learning", ICML 2013."""

import math

from .. import reference
from . import HEAD, Hyper, OpSpec, Slot, common, scalar_index

I = scalar_index("lr", "momentum", "one_minus_dampening", "nesterov", "first_step",
                 "has_momentum")


def check(group):
    common(group, "momentum", "weight_decay")
    if not math.isfinite(group["dampening"]):
        raise ValueError(f"Invalid dampening value: {group['dampening']}")
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def host(group, step, fresh, state):
    return dict(lr=group["lr"], momentum=group["momentum"],
                one_minus_dampening=1.0 - group["dampening"], nesterov=group["nesterov"],
                first_step=fresh, has_momentum=group["momentum"] != 0)


def rule(x, i, p, g, c):
    if c[I.has_momentum] != 0:
        if c[I.first_step] != 0:
            b = g
        else:
            b = c[I.momentum] * x[2][i] + c[I.one_minus_dampening] * g
        x[2][i] = b
        if c[I.nesterov] != 0:
            g = g + c[I.momentum] * b
        else:
            g = b
    return p - c[I.lr] * g


SPEC = OpSpec(
    name="sgd", cls="SGD", torch="SGD", check=check, host=host, rule=rule,
    scalars_order=I._fields[len(HEAD):], reference=reference.sgd, has_step=False,
    uses_step=False, fresh_flag=True,
    slots=(Slot("momentum_buffer", when=lambda h: h["momentum"] != 0),),
    hypers=(Hyper("lr", 1e-3), Hyper("momentum", 0.0), Hyper("dampening", 0.0),
            Hyper("weight_decay", 0.0), Hyper("nesterov", False),
            Hyper("maximize", False, True)),
    doc="""Stochastic gradient descent with momentum, dampening, Nesterov momentum, L2 weight
    decay and maximize; defaults, state and results as torch.optim.SGD.

        d = -g if maximize else g;  d = d + weight_decay * p
        b = d (first step) or momentum * b + (1 - dampening) * d
        d = d + momentum * b if nesterov else b;  p = p - lr * d

    Nesterov momentum: Sutskever et al., "On the importance of initialization and momentum in
    deep learning", ICML 2013.""",
)
