"""The NumPy specification of every fastopt kernel.

Each function casts its inputs to float64, applies the formula one readable line per formula
line, and writes the results back in the storage dtype, in place. Optimizers take the arrays
(param, grad, then the state rows in slot order) positionally and the hyperparameters as
keywords named as in torch.optim's param groups (betas=, decoupled_weight_decay=, ...), plus
l1= and l1_mode= (L1 regularization, coupled or proximal: see _io); float16 and bfloat16 params
are rounded stochastically by `stochastic_round` where asked (see rounding). Every backend is tested
against these functions (tests/tolerances.py holds the one tolerance table).
"""

from .adadelta import adadelta
from .adagrad import adagrad
from .adam import adam
from .adamax import adamax
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
from .nadam import nadam
from .radam import radam
from .rmsprop import rmsprop
from .rounding import mix32, stochastic_round
from .sgd import sgd

__all__ = ["adadelta", "adagrad", "adam", "adamax", "clip_grad_norm", "clip_grad_value", "lion",
           "mix32", "nadam", "radam", "rmsprop", "sgd", "stochastic_round",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
           "huber_loss", "kl_div", "l1_loss", "linear_cross_entropy", "mse_loss",
           "smooth_l1_loss"]
