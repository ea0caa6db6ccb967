"""The NumPy specification of every fastopt kernel.

Each function casts its inputs to float64, applies the formula one readable line per formula
line, and writes the results back in the storage dtype, in place. Every backend is tested
against these functions (tests/tolerances.py holds the one tolerance table).
"""

from .adagrad import adagrad
from .adam import adam
from .clip import clip_grad_norm, clip_grad_value
from .cross_entropy import cross_entropy, linear_cross_entropy
from .elementwise_loss import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    smooth_l1_loss,
)
from .lion import lion
from .rmsprop import rmsprop
from .sgd import sgd

__all__ = ["adagrad", "adam", "clip_grad_norm", "clip_grad_value", "lion", "rmsprop", "sgd",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
           "huber_loss", "kl_div", "l1_loss", "linear_cross_entropy", "mse_loss",
           "smooth_l1_loss"]
