"""``optimizer.state`` that counts its own changes.

A fastopt.torch step must notice a cleared or replaced state entry (torch.optim re-initialises
or uses it), but looking up ``state[p]`` for every param every step costs a Python call per
tensor (``Tensor.__hash__`` is Python). So the state mapping and each param's dict bump one
shared counter on every change; a step re-reads the state dicts only when the counter moved.
Storage swaps of the state tensors themselves (``.data = ...``) change no dict: the pointer
tables catch those (fastopt._table).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any


class _Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


def _changing(name: str):
    method = getattr(dict, name)

    def wrapper(self, *args, **kwargs):
        self._changes.value += 1
        return method(self, *args, **kwargs)

    wrapper.__name__ = name
    return wrapper


class ParamState(dict):
    """One param's state dict (``state[p]``); every change bumps its optimizer's counter."""

    def __init__(self, changes: _Counter, data: Any = ()) -> None:
        super().__init__(data)
        self._changes = changes

    for _name in ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem",
                  "setdefault", "update"):
        locals()[_name] = _changing(_name)
    del _name

    def __reduce__(self):  # copies and pickles are plain dicts; TrackedState re-wraps them
        return (dict, (dict(self),))

    def __deepcopy__(self, memo: dict) -> dict:
        import copy

        return copy.deepcopy(dict(self), memo)


class TrackedState(defaultdict):
    """``optimizer.state``: a defaultdict(dict) as torch.optim's, whose every change, and every
    change of a param's dict in it, bumps `changes`."""

    def __init__(self, data: Any = ()) -> None:
        counter = _Counter()
        super().__init__(lambda: ParamState(counter))
        self._counter = counter
        for key, value in dict(data).items():
            self[key] = value

    @property
    def changes(self) -> int:
        return self._counter.value

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, ParamState) and value._changes is self._counter:
            return value
        return ParamState(self._counter, value) if isinstance(value, dict) else value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._counter.value += 1
        super().__setitem__(key, self._wrap(value))

    def __missing__(self, key: Any) -> Any:
        self._counter.value += 1
        return super().__missing__(key)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> TrackedState:
        self.update(other)
        return self

    for _name in ("__delitem__", "clear", "pop", "popitem"):
        locals()[_name] = _changing(_name)
    del _name

    @property
    def _changes(self) -> _Counter:  # for _changing
        return self._counter

    def __reduce__(self):
        return (TrackedState, (), None, None, iter(self.items()))

    def __deepcopy__(self, memo: dict) -> TrackedState:
        import copy

        new = TrackedState()
        memo[id(self)] = new
        for key, value in self.items():
            new[copy.deepcopy(key, memo)] = copy.deepcopy(value, memo)
        return new

    def __repr__(self) -> str:
        return repr(dict(self))
