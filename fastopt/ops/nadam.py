"""NAdam: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop; momentum
decay schedule as torch.optim.NAdam."""

import math

from .. import reference
from . import (
    HEAD,
    MOMENTS,
    Hyper,
    OpSpec,
    ScalarState,
    Slot,
    betas,
    common,
    moment,
    moments,
    scalar_index,
)

I = scalar_index(*MOMENTS, "bias_correction2", "grad_coef", "avg_coef")


def check(group):
    common(group, "eps", "weight_decay", "momentum_decay")
    betas(group)


def mu(group, step):
    """The momentum coefficient of step `step`: beta1 * (1 - 0.5 * 0.96^(step * psi))."""
    return group["betas"][0] * (1.0 - 0.5 * 0.96 ** (step * group["momentum_decay"]))


def host(group, step, fresh, state):
    mu_t, mu_next = mu(group, step), mu(group, step + 1)
    mu_product = state["mu_product"]  # includes mu_t
    lr = group["lr"]
    return dict(**moments(group), bias_correction2=1.0 - betas(group)[1]**step,
                grad_coef=lr * (1.0 - mu_t) / (1.0 - mu_product),
                avg_coef=lr * mu_next / (1.0 - mu_product * mu_next))


def rule(x, i, p, g, c):
    m = moment(x[2], i, g, c[I.beta1], c[I.one_minus_beta1])
    v = moment(x[3], i, g * g, c[I.beta2], c[I.one_minus_beta2])
    denom = math.sqrt(v / c[I.bias_correction2]) + c[I.eps]
    return p - c[I.grad_coef] * (g / denom) - c[I.avg_coef] * (m / denom)


SPEC = OpSpec(
    name="nadam", cls="NAdam", torch="NAdam", check=check, host=host, rule=rule,
    scalars_order=I._fields[len(HEAD):], reference=reference.nadam,
    slots=(Slot("exp_avg"), Slot("exp_avg_sq", nonneg=True)),
    scalar_state={"mu_product": ScalarState(1.0, mu)},
    hypers=(Hyper("lr", 2e-3), Hyper("betas", (0.9, 0.999)), Hyper("eps", 1e-8),
            Hyper("weight_decay", 0.0), Hyper("momentum_decay", 4e-3),
            Hyper("decoupled_weight_decay", False), Hyper("maximize", False, True)),
    doc="""NAdam: Adam with Nesterov momentum and a momentum schedule; defaults, state
    ('exp_avg', 'exp_avg_sq', 'mu_product', 'step') and results as torch.optim.NAdam.

        g = -g if maximize else g;  g = g + weight_decay * p  (L2)  or
        p = p * (1 - lr * weight_decay)  (decoupled_weight_decay)
        mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay));  mu_product = mu_product * mu_t
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
        denom = sqrt(v / (1 - beta2^t)) + eps
        p = p - lr (1 - mu_t) / (1 - mu_product) g / denom
              - lr mu_{t+1} / (1 - mu_product mu_{t+1}) m / denom

    Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.""",
)
