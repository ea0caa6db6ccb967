"""The stateful optimizer base: param groups, state, pointer-table caching, state_dict."""

from __future__ import annotations

import copy
import inspect
import math
import operator
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any, ClassVar

import numpy as np

from .. import _arrays, backends, ops
from .. import clip as clip_mod
from .. import functional as F
from .._table import MASTER, MASTER_PARAM_DTYPES, MissingGrad, TableCache, TensorTable
from ..reference.quant8 import packed_size

#: keys torch.optim keeps in its param groups that are no hyperparameter of fastopt.optim:
#: loading a torch.optim checkpoint ignores them
TORCH_FLAGS = ops.TORCH_FLAGS
#: keys a learning-rate schedule keeps in each param group (fastopt.schedules, torch's)
SCHEDULE_KEYS = frozenset({"initial_lr"})


def _check_across_groups(plan: list[tuple[int, list[tuple]]]) -> None:
    """Each group's tables exclude shared memory within the group; groups run one after the
    other, so an array of one group that is also one of another's (a grad that is another
    group's param) would be read after it was updated. Refuse it, as within a group."""
    starts, ends, names = [], [], []
    for gi, calls in plan:
        for tables, _, _, members, _ in calls:
            for t in tables:
                # positions in the group: a subset's tables count within the subset
                where = t.index if isinstance(members, slice) else np.asarray(members)[t.index]
                for row, slot in enumerate(t.slots):
                    nbytes = t.nbytes(row).astype(np.int64)
                    ptrs = t.ptrs[row].astype(np.int64)
                    used = np.nonzero(ptrs)[0]
                    starts.append(ptrs[used])
                    ends.append(ptrs[used] + nbytes[used])
                    names += [(gi, slot, int(where[k])) for k in used]
    if not starts:
        return
    hit = _arrays.first_overlap(np.concatenate(starts), np.concatenate(ends))
    if hit is not None:
        (ga, a, i), (gb, b, j) = names[hit[0]], names[hit[1]]
        raise ValueError(f"param group {ga} {a}[{i}] and param group {gb} {b}[{j}] share "
                         "memory: fastopt updates arrays in place, so every param, grad and "
                         "state array must be distinct")


def _clone(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj
    return obj.clone() if hasattr(obj, "clone") else obj.copy()


def _scalar(value: Any) -> float:
    """A saved scalar state value (a number or a one-element tensor, as torch saves them)."""
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"scalar state {value!r} is not a number") from None


def _packed_row(value: Any, p: Any) -> bool:
    """Whether a state value is an 8-bit row of param p (fastopt.reference.quant8's packing)."""
    return (str(value.dtype).removeprefix("torch.") == "uint8" and len(value.shape) == 1
            and value.shape[0] == packed_size(int(np.prod(p.shape))))


def _dense_copy(a: Any) -> Any:
    copy_ = _arrays.zeros_like(a)  # dense, in a's axis order
    _arrays.copy_into(copy_, a)
    return copy_


def _walkable(arrays: dict[str, list[Any] | None], copies: list[tuple[Any, Any]],
              write_grads: bool = False) -> dict[str, list[Any] | None]:
    """`arrays` (slot -> one array per param) with every array a kernel cannot walk in place
    replaced by an exact copy: a strided param (e.g. ``big[:, ::2]``) by a dense one, and an
    array laid out unlike its (dense) param by one in the param's layout. Appends the pairs
    (user's array, copy) of the written slots (grads too with `write_grads`: an unscaling
    step) to `copies`, to copy back after the step. An
    array of another shape or dtype is left for the kernel's validation to name."""
    out = {slot: None if lst is None else list(lst) for slot, lst in arrays.items()}
    params = out["param"]
    for i, p in enumerate(params):
        ref = _arrays.describe(p, "param", i)
        if not ref.dense:
            params[i] = _dense_copy(p)
            copies.append((p, params[i]))
            ref = _arrays.describe(params[i])
        for slot, lst in out.items():
            if slot == "param" or lst is None or lst[i] is None:
                continue
            a = _arrays.describe(lst[i], slot, i)
            if a.shape == ref.shape and a.layout != ref.layout and (
                    a.dtype == ref.dtype or slot not in ("param", "grad")):
                copy_ = _arrays.zeros_like(params[i], a.dtype)
                _arrays.copy_into(copy_, lst[i])
                if slot not in F.READ_ONLY or write_grads:
                    copies.append((lst[i], copy_))
                lst[i] = copy_
    return out


class Optimizer:
    """Base class: subclasses name their kernel (`op`), their state arrays and hyperparameters.

    `step(grads)` takes one gradient per parameter, in param-group order (None skips a
    parameter, as a missing .grad does in torch). The pointer tables of each group are built
    and validated once and re-checked at C speed on every step (fastopt._table: a table is
    used only while every pointer in it is current), so the cost of a step does not grow with
    Python work per tensor, and params, state entries or whole groups changed between steps
    are noticed. Copies (copy.deepcopy, pickle) carry no pointers: they rebuild their own.
    """

    spec: ClassVar[ops.OpSpec]
    #: hyperparameters this class fixes (AdamW: decoupled_weight_decay=True)
    fixed: ClassVar[dict[str, Any]] = {}
    #: the global gradient norm of the last step, where a group sets max_grad_norm (else None)
    grad_norm: float | None = None

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *,
                 backend: str | None = None) -> None:
        self.op = self.spec.name
        self.defaults = dict(defaults)
        self.backend = backend
        self.param_groups: list[dict[str, Any]] = []
        self.state: list[list[dict[str, Any]]] = []  # [group][param] -> state arrays
        self._caches: list[TableCache | None] = []  # [group]
        self._known: list[list[Any]] = []  # [group] -> the params the state lists follow
        self._steps: list[np.ndarray] = []  # [group] -> step count of each param
        self._fresh: list[dict[str, np.ndarray]] = []  # [group][slot] -> not yet stepped
        if backend is not None:
            backends.get(backend)  # unknown names fail now, not at the first step
        groups = list(params) if not isinstance(params, np.ndarray) else [params]
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def _check(self, group: dict[str, Any]) -> None:
        """Raise ValueError for invalid hyperparameters (as torch does)."""
        self.spec.validate(group)
        for key, value in self.fixed.items():
            # torch.optim's checkpoints carry such flags: refuse one for the other class
            if group.get(key, value) != value:
                raise ValueError(f"{key}={group[key]} does not match {type(self).__name__}")

    def _state_slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state arrays this group's options need, named as the kernel's table rows (the
        master weights' last)."""
        return self.spec.state_slots(group) + ((MASTER,) if group.get("master_weights") else ())

    @staticmethod
    def _state_dtype(group: dict[str, Any], p: Any) -> str | None:
        """The dtype of p's new state arrays (None: p's own): the group's state_dtype."""
        if group.get("state_dtype") is None:
            return None
        return ops.state_dtype(group, _arrays.describe(p).dtype)

    def _init_value(self, slot: str, group: dict[str, Any]) -> float:
        return self.spec.init_value(slot, group)

    # --- param groups ------------------------------------------------------------------
    def add_param_group(self, group: dict[str, Any]) -> None:
        if not isinstance(group, dict):
            raise TypeError(f"param group must be a dict, got {type(group).__name__}")
        params = group.get("params")
        if params is None:
            raise ValueError("param group has no 'params'")
        params = [params] if not isinstance(params, (list, tuple)) else list(params)
        if not params:
            raise ValueError("param group has an empty 'params' list")
        unknown = set(group) - set(self.defaults) - {"params"} - TORCH_FLAGS
        if unknown:
            raise TypeError(f"unknown hyperparameters for {type(self).__name__}: "
                            f"{', '.join(sorted(unknown))}")
        full = {k: v for k, v in {**self.defaults, **group}.items() if k not in TORCH_FLAGS}
        full["params"] = params
        self._check(full)
        self._check_params(params)
        self.param_groups.append(full)
        self.state.append([{} for _ in params])
        self._steps.append(np.zeros(len(params), dtype=np.int64))
        self._fresh.append({})
        self._caches.append(None)
        self._known.append(list(params))

    def _check_params(self, extra: Sequence[Any] = ()) -> None:
        """Every param valid (dtype, writability) and no memory shared by two, across all
        groups. A strided param (stepped through a dense copy, see _walkable) is writable and
        checked through such a copy."""
        every = [p for g in self.param_groups for p in g["params"]] + list(extra)
        for i, p in enumerate(every):
            spec = _arrays.describe(p, "param", i)
            if not spec.dense:
                _arrays.check_writable(spec, "param", i)
                every[i] = _dense_copy(p)
        F.tables_for(self.op, {"param": every, "grad": None}, required=("param",))

    def _sync_params(self, gi: int) -> None:
        """Follow params added to, removed from or replaced in a group's list since the last
        step: state entries and step counts move with their param (by identity, as torch keys
        its state), new params start fresh, and every param is validated again."""
        group = self.param_groups[gi]
        params, known = group["params"], self._known[gi]
        if (isinstance(params, list) and len(params) == len(known)
                and all(map(operator.is_, params, known))):
            return
        params = [params] if not isinstance(params, (list, tuple)) else list(params)
        if not params:
            raise ValueError(f"param group {gi} has an empty 'params' list")
        group["params"] = params
        self._check_params()
        where = {id(p): k for k, p in enumerate(known)}
        old = [where.get(id(p), -1) for p in params]
        self.state[gi] = [self.state[gi][k] if k >= 0 else {} for k in old]
        self._steps[gi] = np.array([self._steps[gi][k] if k >= 0 else 0 for k in old],
                                   dtype=np.int64)
        for slot, mask in self._fresh[gi].items():
            self._fresh[gi][slot] = np.array([bool(mask[k]) if k >= 0 else False for k in old])
        self._known[gi] = list(params)

    # --- stepping ----------------------------------------------------------------------
    def _ensure_state(self, gi: int) -> dict[str, list[Any]]:
        """The state rows the group's options need ({slot: one array per param}), allocating
        missing arrays. A new array is marked fresh until a step has run on it: SGD starts
        its momentum buffer as a copy of the first update, as torch does."""
        group = self.param_groups[gi]
        states = self.state[gi]
        rows = {}
        for slot in self._state_slots(group):
            try:  # one C-level pass over the state dicts
                row = list(map(operator.itemgetter(slot), states))
            except KeyError:
                row = [st.get(slot) for st in states]
            if slot == MASTER:
                rows[slot] = self._master_row(group["params"], states, row)
                continue
            if not all(map(operator.is_not, row, repeat(None))):
                missing = [k for k, a in enumerate(row) if a is None]
                for k in missing:
                    p = group["params"][k]
                    row[k] = states[k][slot] = _arrays.state_like(
                        p, self._init_value(slot, group), self._state_dtype(group, p),
                        signed=not self.spec.slot(slot).nonneg)
                fresh = self._fresh[gi].setdefault(slot, np.zeros(len(row), bool))
                fresh[missing] = True
            rows[slot] = row
        return rows

    @staticmethod
    def _master_row(params: list[Any], states: list[dict[str, Any]],
                    row: list[Any]) -> list[Any]:
        """The master weights' row: a float32 copy of each float16 and bfloat16 param (made
        from the param when missing), None for other params."""
        if all(map(operator.is_not, row, repeat(None))):
            return row
        for k, m in enumerate(row):
            if m is None and str(params[k].dtype).removeprefix("torch.") in MASTER_PARAM_DTYPES:
                m = _arrays.zeros_like(params[k], "float32")
                _arrays.copy_into(m, params[k])
                row[k] = states[k][MASTER] = m
        return row

    def _group_tables(self, gi: int, rows: dict[str, list[Any]],
                      grads: Sequence[Any]) -> list[TensorTable]:
        """The group's cached tables, current for its params and state as they are now (see
        fastopt._table.TableCache), with `grads` validated and swapped in."""
        cache = self._caches[gi]
        if cache is None or (MASTER in cache.slots) != (MASTER in rows):
            cache = self._caches[gi] = F.table_cache(self.op, master=MASTER in rows)
        return cache.tables({"param": self.param_groups[gi]["params"], "grad": grads, **rows})

    def _uniform(self, gi: int) -> tuple[int, frozenset[str]] | None:
        """(step, fresh slots) shared by every param of the group, or None if they differ."""
        steps = self._steps[gi]
        if not (steps == steps[0]).all():
            return None
        if self.spec.scalar_state and len({tuple(self._scalar_state(gi, k).values())
                                           for k in range(len(steps))}) > 1:
            return None
        fresh = set()
        for slot, mask in self._fresh[gi].items():
            if mask.all():
                fresh.add(slot)
            elif mask.any():
                return None
        return int(steps[0]), frozenset(fresh)

    def step(self, grads: Sequence[Any], *, grad_scale: Any = None,
             found_inf: Any = None) -> None:
        """Update every parameter in place from its gradient (grads in param-group order).

        grad_scale, found_inf: as torch's fused optimizers take them from torch.amp.GradScaler
        (numbers or one-element arrays): the grads are unscaled in place, g = g * (1 /
        grad_scale), and stepped so; a nonzero found_inf skips the step (nothing changes, step
        counts included). Groups with max_grad_norm take their grads clipped by the global
        norm, recorded in `grad_norm` (docs/architecture.md, "Clipping in the step")."""
        if not isinstance(grads, (list, tuple)):
            grads = list(grads)
        n = sum(len(g["params"]) for g in self.param_groups)
        if len(grads) != n:
            raise ValueError(f"grads: expected {n} arrays (one per parameter, in param-group "
                             f"order), got {len(grads)}")
        unscale, skip = F.grad_scaling(grad_scale, found_inf)
        if skip:
            return
        if unscale != 1.0:
            F.check_writable_grads(grads)
        # validate every group's grads before any kernel runs: a bad grad in group 2 must
        # not leave groups 0 and 1 already stepped
        plan = []
        start = 0
        for gi, group in enumerate(self.param_groups):
            count = len(group["params"])
            gs = grads[start:start + count]
            start += count
            self._check(group)
            self._sync_params(gi)
            rows = self._ensure_state(gi)
            slots = tuple(rows)
            shared = self._uniform(gi)
            calls = None
            if shared is not None and all(map(operator.is_not, gs, repeat(None))):
                try:
                    tables = self._group_tables(gi, rows, gs)
                    calls = [(tables, shared[0] + 1, shared[1], slice(None), ())]
                except (MissingGrad, TypeError, ValueError):
                    pass  # the slow path validates in full: it steps through copies or explains
            plan.append((gi, calls if calls is not None
                         else self._subsets(gi, gs, slots, unscale != 1.0)))
        if len(plan) > 1:
            _check_across_groups(plan)
        coefs = self._clip_coefficients(plan, unscale)
        for gi, calls in plan:
            for tables, step, fresh, members, copies in calls:
                self._run(gi, tables, step, fresh, members, unscale, coefs.get(gi, 1.0))
                for user, copy_ in copies:
                    _arrays.copy_into(user, copy_)
                self._steps[gi][members] += 1
                for mask in self._fresh[gi].values():
                    mask[members] = False

    def _subsets(self, gi: int, gs: Sequence[Any], slots: tuple[str, ...],
                 unscaling: bool = False) -> list[tuple]:
        """Slow path, when some grads are None, params are at different step counts or arrays
        are laid out so that the kernel cannot walk them in place: one set of freshly validated
        tables per (step, fresh slots), over exact copies where needed (see _walkable)."""
        group, states = self.param_groups[gi], self.state[gi]
        by_key: dict[tuple[int, frozenset[str], tuple], list[int]] = {}
        for k, g in enumerate(gs):
            if g is not None:
                fresh = frozenset(s for s, m in self._fresh[gi].items() if m[k])
                key = (int(self._steps[gi][k]), fresh, tuple(self._scalar_state(gi, k).values()))
                by_key.setdefault(key, []).append(k)
        calls = []
        for (step, fresh, _), ks in by_key.items():
            arrays: dict[str, Any] = {"param": [group["params"][k] for k in ks],
                                      "grad": [gs[k] for k in ks]}
            for slot in slots:
                arrays[slot] = [states[k][slot] for k in ks]
            copies: list[tuple[Any, Any]] = []
            arrays = _walkable(arrays, copies, unscaling)
            calls.append((F.tables_for(self.op, arrays, write_grads=unscaling), step + 1, fresh,
                          np.array(ks), copies))
        return calls

    def _scalar_state(self, gi: int, k: int) -> dict[str, float]:
        st = self.state[gi][k]
        return {key: float(st.get(key, s.init)) for key, s in self.spec.scalar_state.items()}

    def _clip_coefficients(self, plan: list[tuple[int, list[tuple]]],
                           unscale: float) -> dict[int, float]:
        """max_grad_norm: the global norm of the grads of every group that sets it (unscaled
        by 1 / grad_scale), recorded in `grad_norm`, and each such group's clipping
        coefficient (functional.clip_coefficients)."""
        clipped = {gi: calls for gi, calls in plan
                   if self.param_groups[gi].get("max_grad_norm") is not None}
        self.grad_norm = None
        if not clipped:
            return {}
        groups = {gi: self.param_groups[gi] for gi in clipped}
        tables = [t for calls in clipped.values() for c in calls for t in c[0]]
        norm = clip_mod.table_norm(tables, F.clip_norm_type(list(groups.values())),
                                   self.backend) * unscale
        coefs = F.clip_coefficients(groups, norm)
        self.grad_norm = norm
        return coefs

    def _run(self, gi: int, tables: list[TensorTable], step: int, fresh: frozenset[str],
             members: Any, unscale: float = 1.0, grad_coef: float = 1.0) -> None:
        group = self.param_groups[gi]
        first = int(np.arange(len(group["params"]))[members][0])
        scalars = self.spec.prepare(group, step, bool(fresh), self._scalar_state(gi, first),
                                    grad_coef=grad_coef)
        F.run(self.op, tables, self.backend, scalars, unscale)
        if scalars.after:
            for k in np.arange(len(group["params"]))[members]:
                self.state[gi][int(k)].update(scalars.after)

    # --- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: {'state': {index: {...}}, 'param_groups': [{..., 'params':
        [indices]}]}, with copies of the state arrays (later steps do not change it)."""
        state: dict[int, dict[str, Any]] = {}
        groups = []
        index = 0
        for group, states, steps in zip(self.param_groups, self.state, self._steps, strict=True):
            ids = []
            for st, step in zip(states, steps, strict=True):
                state[index] = {"step": float(step),
                                **{k: None if v is None else _clone(v) for k, v in st.items()}}
                ids.append(index)
                index += 1
            groups.append({**{k: copy.deepcopy(v) for k, v in group.items() if k != "params"},
                           "params": ids})
        return {"state": state, "param_groups": groups, "optimizer": type(self).__name__}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters, step counts and state arrays (copied into this optimizer's
        own arrays). Raises ValueError for a checkpoint of another optimizer class or of
        differently shaped parameters."""
        kind = state_dict.get("optimizer", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is from a {kind} optimizer, not {type(self).__name__}")
        groups = state_dict.get("param_groups")
        if groups is None or "state" not in state_dict:
            raise ValueError("state_dict needs 'state' and 'param_groups'")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param groups, this optimizer has "
                             f"{len(self.param_groups)}")
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"param group {gi}: state_dict has {len(saved['params'])} "
                                 f"parameters, this optimizer has {len(group['params'])}")
            hyper = {k: v for k, v in saved.items() if k != "params" and k not in TORCH_FLAGS}
            unknown = set(hyper) - set(self.defaults) - SCHEDULE_KEYS - set(self.fixed)
            if unknown:
                raise ValueError(f"param group {gi}: unknown hyperparameters "
                                 f"{sorted(unknown)} for {type(self).__name__}")
            self._check({**group, **hyper})
        allowed = set(self._all_state_slots()) | {"step", MASTER}
        saved_state = state_dict["state"]
        for saved, group in zip(groups, self.param_groups, strict=True):
            for k, idx in enumerate(saved["params"]):
                entry = saved_state.get(idx, {})
                bad = set(entry) - allowed
                if bad:
                    raise ValueError(f"state of parameter {idx}: keys {sorted(bad)} do not "
                                     f"belong to {type(self).__name__}")
                p = group["params"][k]
                if "step" in entry:
                    F.check_step_count(entry["step"], f"state of parameter {idx}")
                for key, value in entry.items():
                    if key in self.spec.scalar_state:
                        if not math.isfinite(_scalar(value)):
                            raise ValueError(f"state of parameter {idx}: {key} is not finite")
                    elif key != "step" and value is not None and \
                            tuple(value.shape) != tuple(p.shape) and not _packed_row(value, p):
                        raise ValueError(f"state of parameter {idx}: {key} has shape "
                                         f"{tuple(value.shape)}, parameter has {tuple(p.shape)}")
        # everything checked: now change nothing but contents
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups, strict=True)):
            # hyperparameters and any other key a scheduler keeps there (initial_lr, ...)
            group.update({k: copy.deepcopy(v) for k, v in saved.items()
                          if k != "params" and k not in TORCH_FLAGS})
            if isinstance(group.get("betas"), list):
                group["betas"] = tuple(group["betas"])
            for k, idx in enumerate(saved["params"]):
                st = self.state[gi][k]
                entry = saved_state.get(idx, {})
                for key in [key for key in st if key not in entry]:
                    # as torch.optim: the state is the checkpoint's, nothing of before
                    del st[key]
                    if key in self._fresh[gi]:
                        self._fresh[gi][key][k] = True
                for key, value in entry.items():
                    if key == "step":
                        self._steps[gi][k] = int(float(value))
                    elif key in self.spec.scalar_state:
                        st[key] = _scalar(value)
                    elif value is not None:
                        p = group["params"][k]
                        if st.get(key) is not None and _packed_row(st[key], p) != \
                                _packed_row(value, p):
                            del st[key]  # 8-bit storage for float, or back: the checkpoint's
                        if st.get(key) is None:  # stored as the checkpoint stored it
                            dtype = str(value.dtype).removeprefix("torch.")
                            st[key] = (_arrays.empty_like(p, tuple(value.shape), "uint8")
                                       if _packed_row(value, p) else _arrays.zeros_like(p, dtype))
                        _arrays.copy_into(st[key], value)
                        if key in self._fresh[gi]:
                            self._fresh[gi][key][k] = False

    def __getstate__(self) -> dict[str, Any]:
        # pointer tables never travel with a copy (pickle, deepcopy): they name the
        # original's memory; the copy rebuilds and validates its own at its first step
        return {**self.__dict__, "_caches": [None] * len(self._caches)}

    def _all_state_slots(self) -> tuple[str, ...]:
        return (*(slot.name for slot in self.spec.slots), *self.spec.scalar_state)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"


def make_class(name: str, spec: ops.OpSpec, alias: ops.Alias | None) -> type[Optimizer]:
    """The fastopt.optim class `name` of `spec`: its constructor takes torch.optim's
    hyperparameters (order, defaults), l1, l1_mode and backend."""
    sig = ops.signature(spec, alias, {"backend": None})
    fixed = dict(alias.fixed) if alias else {}

    def __init__(self: Optimizer, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        hyper = dict(bound.arguments)
        params, backend = hyper.pop("params"), hyper.pop("backend")
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        Optimizer.__init__(self, params, {**hyper, **fixed}, backend=backend)

    __init__.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                    *sig.parameters.values()])
    return type(name, (Optimizer,), {"__init__": __init__, "spec": spec, "fixed": fixed,
                                     "__doc__": ops.class_doc(spec, alias),
                                     "__module__": "fastopt.optim"})


def from_rule(rule: Any, state: Sequence[str] = (), defaults: dict[str, Any] | None = None,
              name: str | None = None, doc: str | None = None) -> type[Optimizer]:
    """An optimizer class from a scalar rule ``rule(p, g, *state, *, <hyperparameters>, step)
    -> (new_p, *new_state)``, compiled by Numba into the multi-tensor driver of the built-in
    optimizers (docs/rules.md), e.g.

        def adam_rule(p, g, m, v, *, lr, beta1, beta2, eps, step):
            m = beta1 * m + (1.0 - beta1) * g
            v = beta2 * v + (1.0 - beta2) * g * g
            return p - lr * (m / (1.0 - beta1**step)) / (
                math.sqrt(v / (1.0 - beta2**step)) + eps), m, v

        Adam2 = fastopt.optim.from_rule(adam_rule, state=("exp_avg", "exp_avg_sq"),
                                        defaults=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8))

    `state`: the names of the state arrays (zeros at first; the state_dict keys), in the
    rule's argument order; `defaults`: every keyword-only hyperparameter's default (lr is
    required) unless the rule's signature gives it; `name`: the class name (default: the
    rule's). The rule is compiled for float64 now: a rule Numba cannot compile, or one that
    returns another number of values, raises TypeError here."""
    from .. import _rules

    spec = _rules.make_spec(rule, tuple(state), defaults, name, doc)
    cls = make_class(spec.cls, spec, None)
    cls.__doc__ = _rules.class_doc(spec)
    cls.__module__ = getattr(rule, "__module__", None) or "fastopt.optim"
    return cls
