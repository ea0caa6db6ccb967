"""Stateful optimizers over lists of arrays (NumPy, PyTorch, CuPy...), stepped in place.

    opt = fastopt.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    opt.step(grads)        # one grad per param, in param-group order

One class per optimizer of fastopt.ops.REGISTRY (and its aliases, such as AdamW), made by
`make_class`: torch.optim's constructor signature and defaults, plus l1, l1_mode and backend;
`from_rule` makes one from a user's scalar rule (docs/rules.md); and Adam8bit, AdamW8bit
(state_dtype="8bit" by default).
"""

from .. import ops
from .optimizer import Optimizer, from_rule, make_class

for _name, _spec, _alias in (*ops.classes(), *ops.eight_bit_classes()):
    globals()[_name] = make_class(_name, _spec, _alias)

__all__ = ["Optimizer", "from_rule",
           *(name for name, _, _ in (*ops.classes(), *ops.eight_bit_classes()))]
