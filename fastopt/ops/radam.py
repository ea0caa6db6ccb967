"""RAdam: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020."""

import math

from .. import reference
from . import HEAD, MOMENTS, Hyper, OpSpec, Slot, betas, common, moment, moments, scalar_index

I = scalar_index(*MOMENTS, "step_size", "rectify", "rect_coef")


def check(group):
    common(group, "eps", "weight_decay")
    betas(group)


def host(group, step, fresh, state):
    b1, b2 = betas(group)
    bc1, bc2 = 1.0 - b1**step, 1.0 - b2**step
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho_t = rho_inf - 2.0 * step * b2**step / bc2
    rectify = rho_t > 5.0
    rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                     / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) if rectify else 0.0
    lr = group["lr"]
    return dict(**moments(group), step_size=lr / bc1, rectify=rectify,
                rect_coef=lr * rect * math.sqrt(bc2) / bc1)


def rule(x, i, p, g, c):
    m = moment(x[2], i, g, c[I.beta1], c[I.one_minus_beta1])
    v = moment(x[3], i, g * g, c[I.beta2], c[I.one_minus_beta2])
    if c[I.rectify] != 0:
        return p - c[I.rect_coef] * (m / (math.sqrt(v) + c[I.eps]))
    return p - c[I.step_size] * m


SPEC = OpSpec(
    name="radam", cls="RAdam", torch="RAdam", check=check, host=host, rule=rule,
    scalars_order=I._fields[len(HEAD):], reference=reference.radam,
    slots=(Slot("exp_avg"), Slot("exp_avg_sq", nonneg=True)),
    hypers=(Hyper("lr", 1e-3), Hyper("betas", (0.9, 0.999)), Hyper("eps", 1e-8),
            Hyper("weight_decay", 0.0), Hyper("decoupled_weight_decay", False),
            Hyper("maximize", False, True)),
    doc="""RAdam: Adam whose adaptive learning rate is rectified (and skipped while its variance
    is intractable, rho_t <= 5); defaults, state and results as torch.optim.RAdam.

        g = -g if maximize else g;  g = g + weight_decay * p  (L2)  or
        p = p * (1 - lr * weight_decay)  (decoupled_weight_decay)
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
        rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
        r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        p = p - lr r sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)  (rho_t > 5)
        p = p - lr / (1 - beta1^t) * m                                        (otherwise)

    Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.""",
)
