"""Adam and AdamW: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019; AMSGrad: Reddi et
al., "On the Convergence of Adam and Beyond", ICLR 2018."""

import math

from .. import reference
from . import (
    HEAD,
    MOMENTS,
    Alias,
    Hyper,
    OpSpec,
    Slot,
    betas,
    common,
    moment,
    moments,
    scalar_index,
)

I = scalar_index(*MOMENTS, "step_size", "bias_correction2", "bias_correction2_sqrt",
                 "eps_inside_sqrt", "amsgrad")


def check(group):
    common(group, "eps", "weight_decay")
    betas(group)


def host(group, step, fresh, state):
    b1, b2 = betas(group)
    bc1 = 1.0 - b1**step if group.get("bias_correction", True) else 1.0
    bc2 = 1.0 - b2**step if group.get("bias_correction", True) else 1.0
    return dict(**moments(group), step_size=group["lr"] / bc1, bias_correction2=bc2,
                bias_correction2_sqrt=math.sqrt(bc2), amsgrad=group["amsgrad"],
                eps_inside_sqrt=group.get("eps_inside_sqrt", False))


def rule(x, i, p, g, c):
    m = moment(x[2], i, g, c[I.beta1], c[I.one_minus_beta1])
    v = moment(x[3], i, g * g, c[I.beta2], c[I.one_minus_beta2])
    if c[I.amsgrad] != 0:
        vmax = x[4][i] * c[I.one]
        if not (vmax > v or vmax != vmax):
            vmax = v
        x[4][i] = vmax
        v = vmax
    if c[I.eps_inside_sqrt] != 0:
        denom = math.sqrt(v / c[I.bias_correction2] + c[I.eps])
    else:
        denom = math.sqrt(v) / c[I.bias_correction2_sqrt] + c[I.eps]
    return p - c[I.step_size] * (m / denom)


SPEC = OpSpec(
    name="adam", cls="Adam", torch="Adam", check=check, host=host, rule=rule,
    scalars_order=I._fields[len(HEAD):], reference=reference.adam,
    slots=(Slot("exp_avg"), Slot("exp_avg_sq", nonneg=True),
           Slot("max_exp_avg_sq", when=lambda h: bool(h["amsgrad"]), nonneg=True)),
    hypers=(Hyper("lr", 1e-3), Hyper("betas", (0.9, 0.999)), Hyper("eps", 1e-8),
            Hyper("weight_decay", 0.0), Hyper("amsgrad", False),
            Hyper("decoupled_weight_decay", False, True), Hyper("maximize", False, True),
            Hyper("bias_correction", True, True), Hyper("eps_inside_sqrt", False, True)),
    doc="""Adam with L2 (or, with decoupled_weight_decay=True, decoupled) weight decay, AMSGrad
    and maximize; defaults, state and results as torch.optim.Adam. Extras: bias_correction=False
    drops the 1 - beta^t corrections; eps_inside_sqrt=True uses m / sqrt(v + eps).

        g = -g if maximize else g;  g = g + weight_decay * p  (L2)  or
        p = p * (1 - lr * weight_decay)  (decoupled)
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
        v_max = max(v_max, v); v = v_max  (AMSGrad)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; Reddi et al., "On
    the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).""",
    aliases=(Alias("AdamW", "AdamW", defaults={"weight_decay": 1e-2},
                   fixed={"decoupled_weight_decay": True},
                   doc="""Adam with decoupled weight decay, p = p * (1 - lr * weight_decay)
    (default 1e-2); defaults, state and results as torch.optim.AdamW.

    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019."""),),
)
