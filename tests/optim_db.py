"""The optimizer database: one entry per optimizer class of fastopt.ops.classes(), from which
tests/test_optim_db.py generates the tests every optimizer must pass (trajectories against the
reference and torch.optim, checkpoints, copies, validation, determinism, L1).

An entry holds the class (fastopt.optim.<name>, fastopt.torch.<name>), its spec, the
torch.optim class of the same algorithm where torch has one, and a handful of option sets
(constructor keywords, torch.optim's names) that together move every hyperparameter away from
its default, L1 in both modes included. A new spec gets an entry with no edit here: its option
sets are generated from its hyperparameters (`generated_options`) until someone writes a list
in OPTIONS; `uncovered()` names what the option sets leave at its default.

The sample inputs of every test are tests/trajectories.py's: `initial_params(shapes, ...)` and
`grad_stream(shapes, ...)` (grads of varied magnitude per tensor, never all alike).
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any

from fastopt import ops

Options = dict[str, Any]

#: The option sets of each class. Each list starts with the defaults; the first set with the
#: most state slots is the entry's `full` one (the checkpoint, copy and determinism tests).
OPTIONS: dict[str, list[Options]] = {
    "SGD": [
        dict(lr=0.1),
        dict(lr=1e-2, momentum=0.9, dampening=0.5, weight_decay=0.1),
        dict(lr=1e-2, momentum=0.8, nesterov=True, weight_decay=0.01, maximize=True),
        dict(lr=1e-2, weight_decay=0.01, maximize=True),
        dict(lr=1e-2, l1=1e-2),
        dict(lr=1e-2, momentum=0.9, l1=4.0, l1_mode="proximal"),
    ],
    "Adam": [
        dict(),
        dict(lr=1e-2, weight_decay=0.1, amsgrad=True),
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05,
             decoupled_weight_decay=True, maximize=True),
        dict(lr=1e-2, amsgrad=True, bias_correction=False, eps_inside_sqrt=True),
        dict(lr=1e-2, weight_decay=0.01, l1=1e-3),
        dict(lr=1e-2, amsgrad=True, maximize=True, l1=0.5, l1_mode="proximal"),
    ],
    "AdamW": [
        dict(),
        dict(lr=1e-2, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, amsgrad=True,
             maximize=True),
        dict(lr=1e-2, weight_decay=0.0, bias_correction=False, eps_inside_sqrt=True),
        dict(lr=1e-2, l1=1e-3),
        dict(lr=1e-2, l1=0.5, l1_mode="proximal"),
    ],
    "Adagrad": [
        dict(),
        dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5),
        dict(lr=0.05, eps=1e-6, maximize=True),
        dict(lr=0.1, l1=0.01),
        dict(lr=0.1, initial_accumulator_value=0.1, l1=0.1, l1_mode="proximal"),
    ],
    "RMSprop": [
        dict(),
        dict(lr=1e-3, momentum=0.9),
        dict(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=0.1, momentum=0.5, centered=True,
             maximize=True),
        dict(lr=1e-3, centered=True),
        dict(lr=1e-3, weight_decay=0.01, l1=1e-3),
        dict(lr=1e-2, momentum=0.5, centered=True, l1=3.0, l1_mode="proximal"),
    ],
    "Lion": [
        dict(),
        dict(lr=1e-3, weight_decay=0.1),
        dict(lr=1e-3, betas=(0.95, 0.98), maximize=True),
        dict(lr=1e-3, l1=0.1),
        dict(lr=1e-2, weight_decay=0.1, l1=2.0, l1_mode="proximal"),
    ],
    "NAdam": [
        dict(),
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        dict(weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=0.05,
             maximize=True),
        dict(lr=1e-2, momentum_decay=0.0),
        dict(lr=1e-2, l1=0.01),
        dict(lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True, l1=0.5,
             l1_mode="proximal"),
    ],
    # rho_t > 5 (the rectified update) from step 6 with beta2 = 0.999 and 0.99, from step 12
    # with beta2 = 0.68, never with beta2 = 0.5: both branches within a 30-step trajectory
    "RAdam": [
        dict(),
        dict(lr=1e-2, betas=(0.9, 0.68)),
        dict(lr=1e-2, betas=(0.9, 0.5)),
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, maximize=True),
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
        dict(lr=1e-2, l1=0.01),
        dict(lr=1e-2, betas=(0.9, 0.68), l1=0.5, l1_mode="proximal"),
    ],
    "Adamax": [
        dict(),
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
        dict(lr=1e-2, weight_decay=0.1, maximize=True),
        dict(lr=1e-2, l1=0.01),
        dict(lr=1e-2, l1=0.5, l1_mode="proximal"),
    ],
    "Adadelta": [
        dict(),
        dict(lr=0.5, rho=0.8, eps=1e-4),
        dict(lr=0.1, rho=0.95, weight_decay=0.1, maximize=True),
        dict(l1=0.01),
        dict(lr=1.0, eps=1e-4, l1=0.01, l1_mode="proximal"),
    ],
}

@dataclass(frozen=True, eq=False)  # hashed by identity: the trajectory caches key on it
class Entry:
    """One optimizer class and what the tests drive it with."""

    name: str                       # fastopt.optim.<name>, fastopt.torch.<name>
    spec: ops.OpSpec
    alias: ops.Alias | None
    options: tuple[Options, ...]
    generated: bool = False         # options made by generated_options

    def __repr__(self) -> str:
        return self.name

    @property
    def op(self) -> str:
        return self.spec.name

    @property
    def torch_name(self) -> str | None:
        return self.alias.torch if self.alias else self.spec.torch

    @property
    def fixed(self) -> Options:
        return dict(self.alias.fixed) if self.alias else {}

    @property
    def defaults(self) -> Options:
        """The class's defaults (an alias's own included), the frame's (l1, ...) and the
        state's (state_dtype) too."""
        return {**self.spec.defaults, **ops.STATE_OPTIONS,
                **(self.alias.defaults if self.alias else {}), **self.fixed}

    def group(self, options: Options) -> Options:
        """Every hyperparameter of a param group built with `options`."""
        return {**self.defaults, **options, **self.fixed}

    def slots(self, options: Options) -> tuple[str, ...]:
        return self.spec.state_slots(self.group(options))

    @property
    def full(self) -> Options:
        """The first option set with the most state slots."""
        return max(self.options, key=lambda o: len(self.slots(o)))

    @property
    def optim_class(self) -> type:
        import fastopt.optim

        return getattr(fastopt.optim, self.name)

    @property
    def fo_torch_class(self) -> type:
        import fastopt.torch

        return getattr(fastopt.torch, self.name)

    @property
    def torch_class(self) -> type | None:
        """torch.optim's class of the algorithm (None: torch has none, or torch is missing)."""
        if self.torch_name is None:
            return None
        try:
            import torch
        except ImportError:
            return None
        return getattr(torch.optim, self.torch_name)

    def torch_accepts(self, options: Options) -> bool:
        """Whether torch.optim's class runs `options` (L1 aside: the tests add its
        subgradient to the gradient, or apply its soft threshold, around torch's step)."""
        cls = self.torch_class
        if cls is None:
            return False
        accepted = inspect.signature(cls.__init__).parameters
        return all(k in accepted for k in options if k not in ("l1", "l1_mode"))

    def functional(self, options: Options) -> tuple[str, Options]:
        """(op, keywords) of fastopt.functional.<op>_ for the class's `options`."""
        base = self.alias.defaults if self.alias else {}
        return self.op, {**base, **options, **self.fixed}

    def option_id(self, i: int) -> str:
        return f"{self.name}-{i}"


def _alternative(name: str, value: Any) -> Any:
    """A valid value other than `value` for a hyperparameter of unknown meaning."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, tuple):
        return tuple(0.5 * (1.0 + x) if x < 1 else x for x in value)  # closer to 1, below
    if isinstance(value, (int, float)):
        if name == "lr":
            return 3.0 * value
        return 0.01 if value == 0 else 0.5 * value
    return value


def generated_options(spec: ops.OpSpec, alias: ops.Alias | None) -> tuple[Options, ...]:
    """Option sets for a class without a list in OPTIONS: the defaults, each hyperparameter
    moved away from its default on its own (or, where the spec refuses that alone, together
    with the first set that makes it valid: Nesterov needs a momentum), all of them at once
    where valid, and L1 in both modes."""
    defaults = {**spec.defaults, **(alias.defaults if alias else {})}
    fixed = alias.fixed if alias else {}

    def valid(options: Options) -> bool:
        try:
            spec.validate({**defaults, **options, **fixed})
        except ValueError:
            return False
        return True

    moved = {h.name: _alternative(h.name, defaults[h.name])
             for h in spec.hypers if h.name not in fixed}
    sets: list[Options] = [{}]
    for k, v in moved.items():
        fit = next((o for o in [{}, *sets[1:]] if valid({**o, k: v})), None)
        if fit is not None:
            sets.append({**fit, k: v})
    lr = moved["lr"]
    sets += [dict(moved), dict(lr=lr, l1=0.01), dict(lr=lr, l1=0.01 / lr, l1_mode="proximal")]
    out: list[Options] = []
    for o in sets:
        if o not in out and valid(o):
            out.append(o)
    return tuple(out)


@functools.cache
def entries() -> tuple[Entry, ...]:
    """Every optimizer class, in registry order."""
    out = []
    for name, spec, alias in ops.classes():
        hand = OPTIONS.get(name)
        options = tuple(hand) if hand is not None else generated_options(spec, alias)
        out.append(Entry(name, spec, alias, options, generated=hand is None))
    return tuple(out)


DB: tuple[Entry, ...] = entries()
BY_NAME: dict[str, Entry] = {e.name: e for e in DB}


def cases() -> list[tuple[Entry, int, Options]]:
    """(entry, index, options) of every option set of every class."""
    return [(e, i, o) for e in DB for i, o in enumerate(e.options)]


def uncovered(entry: Entry) -> list[str]:
    """The hyperparameters (and L1 modes) that no option set of `entry` moves away from its
    default."""
    defaults = entry.defaults
    moved = {k for o in entry.options for k, v in o.items() if v != defaults.get(k)}
    missing = [h.name for h in entry.spec.hypers
               if h.name not in entry.fixed and h.name not in moved]
    modes = {o.get("l1_mode", "coupled") for o in entry.options if o.get("l1", 0) != 0}
    missing += [f"l1_mode={m!r} with l1 > 0" for m in ops.L1_MODES if m not in modes]
    return missing


# --- invalid hyperparameters ------------------------------------------------------------

#: Values out of every numeric hyperparameter's domain; non-finite ones are refused by every
#: class (torch.optim lets some through: fastopt is stricter there).
BAD_NUMBERS = (-1.0, math.nan, math.inf)
BAD_BETAS = ((-0.1, 0.9), (0.9, -0.1), (1.5, 0.9), (0.9, 1.5), (1.0, 0.9), (0.9, 1.0),
             (0.9,), (math.nan, 0.9))


def invalid_candidates(entry: Entry) -> list[Options]:
    """Keyword sets with one hyperparameter out of its domain each (some of them valid for a
    given class: torch.optim's and the spec's checks decide which), l1 and l1_mode too."""
    out: list[Options] = []
    defaults = entry.defaults
    for h in entry.spec.hypers:
        if h.name in entry.fixed:
            continue
        value = defaults[h.name]
        if isinstance(value, bool):
            continue
        if isinstance(value, tuple):
            out += [{h.name: b} for b in BAD_BETAS]
        elif isinstance(value, (int, float)):
            out += [{h.name: x} for x in BAD_NUMBERS]
    out += [{"l1": x} for x in BAD_NUMBERS] + [{"l1_mode": "lasso"}]
    return out


def expected_outcome(entry: Entry, bad: Options) -> str:
    """What the tests expect of `bad`: "refuse" (ValueError from every API: non-finite numbers,
    an unknown l1_mode, and values out of the domain of a class or keyword torch.optim has
    not), "torch" (as torch.optim's class: its ValueError and message, or accepted), or
    "either" (a boundary, such as a beta of exactly 1, that the spec decides)."""
    (key, value), = bad.items()
    values = value if isinstance(value, tuple) else (value,)
    if key == "l1_mode" or any(not math.isfinite(v) for v in values):
        return "refuse"
    if key not in ("l1", "l1_mode") and entry.torch_accepts(bad):
        return "torch"
    if isinstance(value, tuple):
        wrong = len(value) != len(entry.defaults[key]) or any(v < 0 or v > 1 for v in value)
    else:
        wrong = value < 0
    return "refuse" if wrong else "either"
