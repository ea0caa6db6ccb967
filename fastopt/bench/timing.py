"""Timing helpers shared by `fastopt bench` and the pytest-benchmark suite in benchmarks/.

Every variant of a case (fastopt backends, torch, the bandwidth probe) is warmed up, then
timed in interleaved rounds (round r times every variant once, in an order rotated each
round), so a slow spell on a shared machine hits every variant alike. A sample is the mean
of `number` back-to-back calls, with `number` chosen so one sample lasts at least `min_time`
(the timer's resolution and the loop's own overhead then vanish). Results are medians.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: Shortest sample, in seconds: well above perf_counter's resolution and the loop's overhead.
MIN_SAMPLE_TIME = 5e-3
#: Most calls in one sample (tiny ops would otherwise loop forever on a slow timer).
MAX_NUMBER = 10_000


@dataclass
class Timing:
    """The samples of one variant: seconds per call."""

    samples: list[float] = field(default_factory=list)
    first_call_s: float = math.nan  # includes any compilation (Numba) or lazy set-up
    number: int = 1  # calls averaged into each sample

    @property
    def median(self) -> float:
        return median(self.samples)


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else math.nan


def gbps(nbytes: float, seconds: float) -> float:
    """Bandwidth in GB/s (1e9 bytes) of moving `nbytes` in `seconds`."""
    return nbytes / seconds / 1e9 if seconds > 0 else math.nan


def time_call(fn: Callable[[], object], number: int = 1) -> float:
    """Seconds per call of `number` back-to-back calls of fn."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def calibrate(fn: Callable[[], object], min_time: float = MIN_SAMPLE_TIME) -> int:
    """Calls per sample so that one sample lasts at least min_time."""
    number = 1
    while True:
        t = time_call(fn, number) * number
        if t >= min_time or number >= MAX_NUMBER:
            return number
        # aim a little past min_time so the next try usually succeeds
        number = min(MAX_NUMBER, max(number * 2, math.ceil(number * 1.2 * min_time / max(t, 1e-9))))


def interleaved(variants: Mapping[str, Callable[[], object]], repeat: int = 7, warmup: int = 2,
                min_time: float = MIN_SAMPLE_TIME,
                tick: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Time every variant `repeat` times, interleaved; `tick` is called after each round."""
    if repeat < 1:
        raise ValueError(f"repeat: must be >= 1, got {repeat}")
    out: dict[str, Timing] = {}
    for name, fn in variants.items():
        timing = Timing()
        timing.first_call_s = time_call(fn)
        for _ in range(max(warmup - 1, 0)):
            fn()
        timing.number = calibrate(fn, min_time)
        out[name] = timing
    names = list(variants)
    for r in range(repeat):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].samples.append(time_call(variants[name], out[name].number))
        if tick is not None:
            tick()
    return out


__all__ = ["MIN_SAMPLE_TIME", "Timing", "calibrate", "gbps", "interleaved", "median",
           "time_call"]
