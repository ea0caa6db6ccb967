"""fastopt: fused optimizer-step and loss kernels for any training loop.

    import fastopt
    opt = fastopt.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    opt.step(grads)                  # params (NumPy, PyTorch, ...) updated in place
    fastopt.show_config()            # backends, CPU ISA, threads
"""

from __future__ import annotations

from . import backends, clip, functional, losses, optim, reference, schedules
from ._config import get_num_threads, set_num_threads, show_config

__version__ = "0.1.0"

__all__ = ["__version__", "backends", "clip", "functional", "get_num_threads", "losses", "optim",
           "reference", "schedules", "set_num_threads", "show_config"]
