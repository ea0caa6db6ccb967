"""Stateful optimizers over lists of arrays (NumPy, PyTorch, CuPy...), stepped in place.

    opt = fastopt.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    opt.step(grads)        # one grad per param, in param-group order
"""

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lion import Lion
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Lion", "Optimizer", "RMSprop"]
