"""The NumPy specification of every fastopt kernel.

Each function casts its inputs to float64, applies the formula one readable line per formula
line, and writes the results back in the storage dtype, in place. Every backend is tested
against these functions (tests/tolerances.py holds the one tolerance table).
"""

from .adagrad import adagrad
from .adam import adam
from .clip import clip_grad_norm, clip_grad_value
from .lion import lion
from .rmsprop import rmsprop
from .sgd import sgd

__all__ = ["adagrad", "adam", "clip_grad_norm", "clip_grad_value", "lion", "rmsprop", "sgd"]
