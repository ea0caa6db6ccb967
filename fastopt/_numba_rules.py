"""Every optimizer's per-element update, written once as a plain Python scalar function that
Numba compiles twice: with @njit for the `numba` CPU backend and with numba.cuda.jit(device=True)
for the `numba_cuda` backend (fastopt/backends/numba.py, numba_cuda.py).

The rules mirror csrc/include/fastopt/rules/<op>.h. Conventions that keep them target-neutral
and in the storage type's math precision (float32 for float32/float16 storage, float64 for
float64): each rule gets its constants as one array `c` of the math dtype (built by the
*_consts functions below from float64 host values, as the C++ Consts structs are) and never
uses a float literal in arithmetic, which Numba would type as float64; values are converted to
the math type by multiplying with c[ONE]; no rule calls another Python function.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

ONE = 0  # c[ONE] == 1 in the math dtype: x * c[ONE] converts a loaded value

# --- Adam / AdamW (Kingma & Ba, ICLR 2015; Loshchilov & Hutter, ICLR 2019) ---------------
(A_BETA1, A_OMB1, A_BETA2, A_OMB2, A_EPS, A_WD, A_DECAY, A_STEP_SIZE, A_BC2, A_BC2_SQRT,
 A_SIGN, A_L2, A_DECOUPLED, A_EPS_INSIDE, A_AMSGRAD) = range(1, 16)


def adam_consts(dtype: np.dtype, *, step: int, lr: float, beta1: float, beta2: float,
                eps: float, weight_decay: float, decoupled: bool, amsgrad: bool,
                maximize: bool, bias_correction: bool, eps_inside_sqrt: bool) -> np.ndarray:
    bc1 = 1.0 - beta1**step if bias_correction else 1.0
    bc2 = 1.0 - beta2**step if bias_correction else 1.0
    return np.array([1.0, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, weight_decay,
                     1.0 - lr * weight_decay, lr / bc1, bc2, math.sqrt(bc2),
                     -1.0 if maximize else 1.0, (not decoupled) and weight_decay != 0,
                     decoupled and weight_decay != 0, eps_inside_sqrt, amsgrad], dtype=dtype)


def adam_rule(p, g, m, v, vmax, c):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; vmax = max(vmax, v) (AMSGrad);
    p = p - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)  (or m / sqrt(v/bc2 + eps));
    returns (p, m, v, vmax)."""
    p = p * c[ONE]
    g = g * c[ONE] * c[A_SIGN]
    if c[A_L2] != 0:
        g = g + c[A_WD] * p
    if c[A_DECOUPLED] != 0:
        p = p * c[A_DECAY]
    m = c[A_BETA1] * m + c[A_OMB1] * g
    v = c[A_BETA2] * v + c[A_OMB2] * g * g
    v_used = v
    if c[A_AMSGRAD] != 0:
        vmax = vmax * c[ONE]
        v_used = vmax if (vmax > v or vmax != vmax) else v
        vmax = v_used
    if c[A_EPS_INSIDE] != 0:
        denom = math.sqrt(v_used / c[A_BC2] + c[A_EPS])
    else:
        denom = math.sqrt(v_used) / c[A_BC2_SQRT] + c[A_EPS]
    p = p - c[A_STEP_SIZE] * (m / denom)
    return p, m, v, vmax


# --- SGD (torch.optim.SGD; Nesterov: Sutskever et al., ICML 2013) ------------------------
S_LR, S_MOM, S_OMD, S_WD, S_SIGN, S_NESTEROV, S_FIRST, S_HAS_MOM = range(1, 9)


def sgd_consts(dtype: np.dtype, *, lr: float, momentum: float, dampening: float,
               weight_decay: float, nesterov: bool, maximize: bool,
               first_step: bool) -> np.ndarray:
    return np.array([1.0, lr, momentum, 1.0 - dampening, weight_decay,
                     -1.0 if maximize else 1.0, nesterov, first_step, momentum != 0],
                    dtype=dtype)


def sgd_rule(p, g, b, c):
    """d = g + wd p; b = first ? d : mu b + (1-dampening) d; d = nesterov ? d + mu b : b;
    p = p - lr d; returns (p, b)."""
    p = p * c[ONE]
    d = g * c[ONE] * c[S_SIGN]
    if c[S_WD] != 0:
        d = d + c[S_WD] * p
    if c[S_HAS_MOM] != 0:
        if c[S_FIRST] != 0:
            b = d
        else:
            b = c[S_MOM] * (b * c[ONE]) + c[S_OMD] * d
        if c[S_NESTEROV] != 0:
            d = d + c[S_MOM] * b
        else:
            d = b
    p = p - c[S_LR] * d
    return p, b


# --- Adagrad (Duchi, Hazan & Singer, JMLR 2011) -----------------------------------------
G_CLR, G_WD, G_EPS, G_SIGN = range(1, 5)


def adagrad_consts(dtype: np.dtype, *, step: int, lr: float, lr_decay: float,
                   weight_decay: float, eps: float, maximize: bool) -> np.ndarray:
    clr = lr / (1 + (step - 1) * lr_decay)
    return np.array([1.0, clr, weight_decay, eps, -1.0 if maximize else 1.0], dtype=dtype)


def adagrad_rule(p, g, s, c):
    """s = s + g^2; p = p - clr g / (sqrt(s) + eps); returns (p, s)."""
    p = p * c[ONE]
    g = g * c[ONE] * c[G_SIGN]
    if c[G_WD] != 0:
        g = g + c[G_WD] * p
    s = s * c[ONE] + g * g
    p = p - c[G_CLR] * (g / (math.sqrt(s) + c[G_EPS]))
    return p, s


# --- RMSprop (Hinton 2012; centered: Graves 2013) ---------------------------------------
R_LR, R_ALPHA, R_OMA, R_EPS, R_WD, R_MOM, R_SIGN, R_CENTERED, R_HAS_MOM = range(1, 10)


def rmsprop_consts(dtype: np.dtype, *, lr: float, alpha: float, eps: float,
                   weight_decay: float, momentum: float, centered: bool,
                   maximize: bool) -> np.ndarray:
    return np.array([1.0, lr, alpha, 1.0 - alpha, eps, weight_decay, momentum,
                     -1.0 if maximize else 1.0, centered, momentum > 0], dtype=dtype)


def rmsprop_rule(p, g, s, b, ga, c):
    """s = a s + (1-a) g^2; centered: ga = a ga + (1-a) g, avg = sqrt(s - ga^2) + eps, else
    avg = sqrt(s) + eps; momentum: b = mu b + g/avg, p = p - lr b; else p = p - lr g/avg;
    returns (p, s, b, ga)."""
    p = p * c[ONE]
    g = g * c[ONE] * c[R_SIGN]
    if c[R_WD] != 0:
        g = g + c[R_WD] * p
    s = c[R_ALPHA] * s + c[R_OMA] * g * g
    if c[R_CENTERED] != 0:
        ga = c[R_ALPHA] * ga + c[R_OMA] * g
        avg = math.sqrt(s - ga * ga) + c[R_EPS]
    else:
        avg = math.sqrt(s) + c[R_EPS]
    if c[R_HAS_MOM] != 0:
        b = c[R_MOM] * b + g / avg
        p = p - c[R_LR] * b
    else:
        p = p - c[R_LR] * (g / avg)
    return p, s, b, ga


# --- Lion (Chen et al., NeurIPS 2023) ---------------------------------------------------
# Computed in float64 whatever the storage (as csrc/include/fastopt/rules/lion.h): the sign of
# the interpolation flips the whole update, so the momentum it is formed from must round
# exactly as the float64 specification's does.
LD_ONE, LD_LR, LD_BETA1, LD_OMB1, LD_BETA2, LD_OMB2, LD_DECAY, LD_SIGN = range(8)


def lion_consts(dtype: np.dtype, *, lr: float, beta1: float, beta2: float,
                weight_decay: float, maximize: bool) -> tuple[np.ndarray, np.ndarray]:
    c = np.array([1.0], dtype=dtype)  # unused: Lion has no math-dtype constants
    cd = np.array([1.0, lr, beta1, 1.0 - beta1, beta2, 1.0 - beta2, 1.0 - lr * weight_decay,
                   -1.0 if maximize else 1.0], dtype=np.float64)
    return c, cd


def lion_rule(p, g, m, c, cd):
    """p = p (1 - lr wd) - lr sign(b1 m + (1-b1) g); m = b2 m + (1-b2) g; returns (p, m)."""
    g = g * cd[LD_ONE] * cd[LD_SIGN]
    m = m * cd[LD_ONE]
    p = p * cd[LD_ONE] * cd[LD_DECAY]
    interp = cd[LD_BETA1] * m + cd[LD_OMB1] * g
    if interp > 0:
        p = p - cd[LD_LR]
    elif interp < 0:
        p = p + cd[LD_LR]
    elif interp != interp:
        p = interp  # sign(NaN) is NaN
    m = cd[LD_BETA2] * m + cd[LD_OMB2] * g
    return p, m


# --- clipping (torch.nn.utils.clip_grad_norm_ / clip_grad_value_) -------------------------
def clamp_rule(g, lo, hi):
    """clamp(g, -v, v), NaN stays NaN."""
    if g < lo:
        return lo
    if g > hi:
        return hi
    return g


# --- on-disk cache invalidation ------------------------------------------------------------
# Numba's cache is keyed on the source file of the kernel only, but the kernels inline the
# rules above: a cached kernel would outlive an edit of this file. Kernels of the modules
# below are therefore cached under a stamp of both files.
_KERNEL_FILES = ("_numba_cpu.py", "_numba_cuda.py")


def track_rules_in_cache(caching: Any) -> None:
    """Make `caching` (numba.core.caching or numba.cuda.core.caching) stamp fastopt's kernel
    files together with this one. Idempotent."""
    impl = caching.CacheImpl
    if getattr(impl, "_fastopt_rules_tracked", False):
        return
    here = os.path.dirname(os.path.abspath(__file__))
    rules = os.path.abspath(__file__)
    wrapped = []
    for base in impl._locator_classes:
        if "InTree" not in base.__name__ and "UserWide" not in base.__name__:
            continue

        class Locator(base):  # type: ignore[misc, valid-type]
            @classmethod
            def from_function(cls, py_func, py_file):
                path = os.path.abspath(py_file)
                if os.path.dirname(path) != here or os.path.basename(path) not in _KERNEL_FILES:
                    return None
                return super().from_function(py_func, py_file)

            def get_source_stamp(self):
                st = os.stat(rules)
                return (*super().get_source_stamp(), st.st_mtime, st.st_size)

        wrapped.append(Locator)
    impl._locator_classes = [*impl._locator_classes[:1], *wrapped, *impl._locator_classes[1:]]
    impl._fastopt_rules_tracked = True
