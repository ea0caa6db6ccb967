"""Lion: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023."""

from .. import reference
from . import HEAD, Hyper, OpSpec, Slot, betas, common, scalar_index

I = scalar_index("lr", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2")


def check(group):
    common(group, "weight_decay")
    betas(group, closed=True)


def host(group, step, fresh, state):
    b1, b2 = betas(group, closed=True)
    return dict(lr=group["lr"], beta1=b1, one_minus_beta1=1.0 - b1, beta2=b2,
                one_minus_beta2=1.0 - b2)


def rule(x, i, p, g, c):
    m = x[2][i] * c[I.one]
    u = c[I.beta1] * m + c[I.one_minus_beta1] * g
    if u > 0:
        p = p - c[I.lr]
    elif u < 0:
        p = p + c[I.lr]
    elif u != u:
        p = u  # sign(NaN) is NaN
    x[2][i] = c[I.beta2] * m + c[I.one_minus_beta2] * g
    return p


SPEC = OpSpec(
    name="lion", cls="Lion", torch=None, check=check, host=host, rule=rule,
    scalars_order=I._fields[len(HEAD):], reference=reference.lion, has_step=False,
    uses_step=False, decoupled=True,
    # float64 whatever the storage: the sign of the interpolation flips the whole update, so
    # the momentum it is formed from must round exactly as the float64 specification's does
    math="float64",
    slots=(Slot("exp_avg"),),
    hypers=(Hyper("lr", 1e-4), Hyper("betas", (0.9, 0.99)), Hyper("weight_decay", 0.0),
            Hyper("maximize", False, True)),
    doc="""Lion (EvoLved Sign Momentum) with decoupled weight decay and the paper's defaults
    (lr=1e-4, betas=(0.9, 0.99)); state: 'exp_avg'.

        g = -g if maximize else g;  p = p * (1 - lr * weight_decay)
        p = p - lr * sign(beta1 * m + (1 - beta1) * g);  m = beta2 * m + (1 - beta2) * g

    Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.""",
)
