"""Adadelta: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012."""

import math

from .. import reference
from . import HEAD, Hyper, OpSpec, Slot, beta, common, scalar_index

I = scalar_index("lr", "rho", "one_minus_rho", "eps")


def check(group):
    common(group, "eps", "weight_decay")
    beta("rho value", group["rho"], closed=True)


def host(group, step, fresh, state):
    return dict(lr=group["lr"], rho=group["rho"], one_minus_rho=1.0 - group["rho"],
                eps=group["eps"])


def rule(x, i, p, g, c):
    s = c[I.rho] * x[2][i] + c[I.one_minus_rho] * g * g
    delta = math.sqrt(x[3][i] + c[I.eps]) / math.sqrt(s + c[I.eps]) * g
    x[2][i] = s
    x[3][i] = c[I.rho] * x[3][i] + c[I.one_minus_rho] * delta * delta
    return p - c[I.lr] * delta


SPEC = OpSpec(
    name="adadelta", cls="Adadelta", torch="Adadelta", check=check, host=host, rule=rule,
    scalars_order=I._fields[len(HEAD):], reference=reference.adadelta, uses_step=False,
    slots=(Slot("square_avg", nonneg=True), Slot("acc_delta", nonneg=True)),
    hypers=(Hyper("lr", 1.0), Hyper("rho", 0.9), Hyper("eps", 1e-6), Hyper("weight_decay", 0.0),
            Hyper("maximize", False, True)),
    doc="""Adadelta; defaults, state and results as torch.optim.Adadelta.

        g = -g if maximize else g;  g = g + weight_decay * p
        s = rho * s + (1 - rho) * g^2
        d = sqrt(a + eps) / sqrt(s + eps) * g;  a = rho * a + (1 - rho) * d^2
        p = p - lr * d

    Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012.""",
)
