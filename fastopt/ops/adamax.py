"""Adamax: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1."""

from .. import reference
from . import HEAD, Hyper, OpSpec, Slot, betas, common, scalar_index

I = scalar_index("beta1", "one_minus_beta1", "beta2", "eps", "clr")


def check(group):
    common(group, "eps", "weight_decay")
    betas(group)


def host(group, step, fresh, state):
    b1, b2 = betas(group)
    return dict(beta1=b1, one_minus_beta1=1.0 - b1, beta2=b2, eps=group["eps"],
                clr=group["lr"] / (1.0 - b1**step))


def rule(x, i, p, g, c):
    m = c[I.beta1] * x[2][i] + c[I.one_minus_beta1] * g
    u = c[I.beta2] * x[3][i]
    a = abs(g) + c[I.eps]
    if not (u > a or u != u):  # max that propagates NaN, as torch.maximum
        u = a
    x[2][i] = m
    x[3][i] = u
    return p - c[I.clr] * (m / u)


SPEC = OpSpec(
    name="adamax", cls="Adamax", torch="Adamax", check=check, host=host, rule=rule,
    scalars_order=I._fields[len(HEAD):], reference=reference.adamax,
    slots=(Slot("exp_avg"), Slot("exp_inf", nonneg=True)),
    hypers=(Hyper("lr", 2e-3), Hyper("betas", (0.9, 0.999)), Hyper("eps", 1e-8),
            Hyper("weight_decay", 0.0), Hyper("maximize", False, True)),
    doc="""Adamax: Adam with the infinity norm; defaults, state and results as
    torch.optim.Adamax.

        g = -g if maximize else g;  g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g;  u = max(beta2 * u, |g| + eps)
        p = p - lr / (1 - beta1^t) * m / u

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1.""",
)
