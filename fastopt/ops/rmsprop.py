"""RMSprop: Hinton, "Neural Networks for Machine Learning", lecture 6e, 2012; centered:
Graves, "Generating Sequences With Recurrent Neural Networks", 2013."""

import math

from .. import reference
from . import HEAD, Hyper, OpSpec, Slot, beta, common, scalar_index

I = scalar_index("lr", "alpha", "one_minus_alpha", "eps", "momentum", "centered",
                 "has_momentum")


def check(group):
    common(group, "eps", "momentum", "weight_decay")
    beta("alpha value", group["alpha"], closed=True)


def host(group, step, fresh, state):
    return dict(lr=group["lr"], alpha=group["alpha"], one_minus_alpha=1.0 - group["alpha"],
                eps=group["eps"], momentum=group["momentum"], centered=group["centered"],
                has_momentum=group["momentum"] > 0)


def rule(x, i, p, g, c):
    s = c[I.alpha] * x[2][i] + c[I.one_minus_alpha] * g * g
    x[2][i] = s
    if c[I.centered] != 0:
        ga = c[I.alpha] * x[4][i] + c[I.one_minus_alpha] * g
        x[4][i] = ga
        avg = math.sqrt(s - ga * ga) + c[I.eps]
    else:
        avg = math.sqrt(s) + c[I.eps]
    if c[I.has_momentum] != 0:
        b = c[I.momentum] * x[3][i] + g / avg
        x[3][i] = b
        return p - c[I.lr] * b
    return p - c[I.lr] * (g / avg)


SPEC = OpSpec(
    name="rmsprop", cls="RMSprop", torch="RMSprop", check=check, host=host, rule=rule,
    scalars_order=I._fields[len(HEAD):], reference=reference.rmsprop, uses_step=False,
    slots=(Slot("square_avg", nonneg=True),
           Slot("momentum_buffer", when=lambda h: h["momentum"] > 0),
           Slot("grad_avg", when=lambda h: bool(h["centered"]))),
    hypers=(Hyper("lr", 1e-2), Hyper("alpha", 0.99), Hyper("eps", 1e-8),
            Hyper("weight_decay", 0.0), Hyper("momentum", 0.0), Hyper("centered", False),
            Hyper("maximize", False, True)),
    doc="""RMSprop, optionally centered and with momentum; defaults, state and results as
    torch.optim.RMSprop.

        g = -g if maximize else g;  g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g^2;  ga = alpha * ga + (1 - alpha) * g  (centered)
        avg = sqrt(s - ga^2) + eps (centered) or sqrt(s) + eps
        b = momentum * b + g / avg; p = p - lr * b  (momentum > 0), else p = p - lr * g / avg

    Hinton, "Neural Networks for Machine Learning", lecture 6e, 2012; centered: Graves,
    "Generating Sequences With Recurrent Neural Networks", 2013.""",
)
