"""How long to time a cell, and what number to report from the rounds.

Identical reruns of a cell in new processes spread 4-66% on the H200 runner while rounds inside one
process agreed within ~3% (README, "Measurement noise and the gate"): a round of
0.3-2 s is too short, garbage-collection pauses and a busy host make single slow rounds, and cells
timed one after another drift apart. This module is the answer at the bottom layer, pure timing
over zero-argument *pass* callables that return how many tokens they generated:

- `PassTimer` times one pass with garbage collection off: wall time on a device-synchronised host
  clock and, on CUDA, device time from events around the same region.
- `warm_up` runs passes until the last few agree, so one-off costs stay out of the numbers.
- `measure_until` times passes until there is enough work and the distribution-free confidence
  interval of the median tokens/s is tight (the adaptive idea of torch.utils.benchmark's
  `adaptive_autorange`, with MLPerf's minimum duration), or a cap is hit.
- `interleave` measures several cells round by round (asv's idea), so drift hits all of them
  alike, and `paired_ratio` turns same-round rates into a speed-up with its interval.
- `summarize` is the robust statistic: the median over the rounds a bounded MAD rule keeps.

It imports nothing from llmopt but `host_load`, its sibling; clocks are injectable so the tests run on fake time.
"""

from __future__ import annotations

import functools
import gc
import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from . import host_load

# --- defaults (for a GPU cell whose pass over the prompts takes 0.3-2 s; tiny CPU runs pass less)
CONFIDENCE = 0.95  # the interval quoted beside every median
# A 2%-wide interval on the median is well inside the regression gate's 5% tolerance
# (compare.gate), so a gate failure is the code, not the measurement.
REL_CI = 0.02
# The order-statistic interval needs >= 6 rounds at 95%; 10 gives ranks 2..9 and lets the outlier
# rule drop up to 2 rounds.
MIN_ROUNDS = 10
# Enough timed work that one busy moment of the host is a small part of it: >= 10 rounds of 1 s
# (a minimum duration, as MLPerf sets, instead of a fixed count of short rounds).
MIN_TIME_S = 10.0
MAX_TIME_S = 60.0  # a noisy cell gives up after a minute of timed work and says it did not converge
MAX_ROUNDS = 200  # 60 s of 0.3-s rounds; also bounds the rounds kept in memory
# Modified z-score rule (Iglewicz and Hoaglin): |x - median| > 3.5 * 1.4826 * MAD, where 1.4826
# makes the MAD estimate the standard deviation of normal data.
OUTLIER_Z = 3.5
MAD_TO_SD = 1.4826
MAX_OUTLIER_FRACTION = 0.2  # a rule that could drop half the rounds would pick its own answer
# Warm-up is steady when the last 3 passes' time per token agree within 5%, a looser bar than
# REL_CI: it only has to show that compilation, capture and allocator growth are over.
WARMUP_STEADY_PASSES = 3
WARMUP_REL_TOL = 0.05
WARMUP_MAX_PASSES = 20
WARMUP_MAX_TIME_S = 60.0


@contextmanager
def no_gc():
    """Collect once, then keep the garbage collector off inside; restore its state after, even on
    an exception. (pytest-benchmark's `--benchmark-disable-gc` does the same inside its runner, and
    torch.utils.benchmark leaves it to `timeit`; neither exposes it as a context manager.)"""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def frozen_heap():
    """Move every object alive now out of the collector's sight for the duration, so that the
    collection `no_gc` makes before each pass only walks what the passes made (a full collection
    of a heap with torch loaded takes ~0.1 s; after `gc.freeze` it takes microseconds)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass(frozen=True)
class Sample:
    """One timed pass."""

    start_unix: float  # time.time() at its start: orders samples of different cells and processes
    wall_s: float
    device_s: float | None  # CUDA event time of the same region; None off CUDA
    tokens: int
    host: host_load.Load | None = None  # what else the host did meanwhile; None off Linux
    # the host's cost of one tiny launch, probed just before and just after the pass (their mean):
    # how fast the host itself ran around this round; None where the timer does not probe
    launch_s: float | None = None

    @property
    def rate(self) -> float:
        """Tokens per second of wall time: the protocol's tokens/s."""
        return self.tokens / self.wall_s

    @property
    def device_rate(self) -> float | None:
        return None if self.device_s is None else self.tokens / self.device_s


class PassTimer:
    """Times one pass with the garbage collector off: wall time on a host clock read after the
    device is synchronised, and on CUDA the time between two events recorded on the current stream
    around the same region. Events measure the stream's timeline, idle gaps included (a host-bound
    eager decode leaves the GPU waiting), and see only work ordered after them on that stream.
    With `probe_launches`, the host's cost of one launch (`host_load.launch_s`) is probed on either
    side of the timed region, outside it."""

    def __init__(self, device: torch.device | str | None = None, clock: Callable[[], float] = time.perf_counter,
                 probe_launches: bool = True):
        # without a device, synchronise whenever there is a GPU: a redundant sync costs microseconds,
        # a missing one times only the launches
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.clock = clock
        self._probe = torch.zeros(1, device=self.device) if probe_launches else None

    def _launch_s(self) -> float | None:
        return None if self._probe is None else host_load.launch_s(self._probe)

    def __call__(self, pass_fn: Callable[[], int]) -> Sample:
        with no_gc():
            launch_before = self._launch_s()
            start_unix = time.time()
            counters = host_load.read()  # before both clocks start: a read is not the pass's work
            if self.cuda:
                torch.cuda.synchronize(self.device)
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record(torch.cuda.current_stream(self.device))
            start = self.clock()
            tokens = pass_fn()
            if self.cuda:
                end.record(torch.cuda.current_stream(self.device))
                torch.cuda.synchronize(self.device)
            wall_s = self.clock() - start
            host = host_load.between(counters, host_load.read())
            launch_after = self._launch_s()
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
            raise ValueError(f"a pass returns how many tokens it generated (a positive int), got {tokens!r}")
        device_s = begin.elapsed_time(end) / 1e3 if self.cuda else None
        launch_s = None if launch_before is None else (launch_before + launch_after) / 2
        return Sample(start_unix, wall_s, device_s, tokens, host, launch_s)


# --- statistics: small pure functions over plain numbers

def median_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Distribution-free interval of the median from order statistics: the number of values below
    the true median is Binomial(n, 1/2), so [x_(j), x_(n+1-j)] covers it with probability
    1 - 2 P(B <= j-1); take the largest j that keeps that >= `confidence` (the interval
    scipy.stats.quantile_test gives, computed exactly here so that scipy is not a dependency).
    None when there are too few values for that confidence (fewer than 6 at 95%)."""
    n = len(values)
    tail = (1 - confidence) / 2
    below, j = 0, 0
    while j < n:  # j = how many order statistics each side may lie outside the interval, plus one
        below += math.comb(n, j)  # P(B <= j) * 2**n
        if below / 2**n > tail:
            break
        j += 1
    if j == 0:
        return None
    ordered = sorted(values)
    return ordered[j - 1], ordered[n - j]


@functools.cache
def rounds_for_interval(confidence: float = CONFIDENCE) -> int:
    """The fewest values whose median has a distribution-free interval at `confidence` (6 at 95%)."""
    return next(n for n in itertools.count(1) if median_ci(range(n), confidence) is not None)


def mad_outliers(values: Sequence[float], z: float = OUTLIER_Z,
                 max_fraction: float = MAX_OUTLIER_FRACTION) -> list[int]:
    """Indices of the values farther than `z` robust standard deviations (1.4826 MAD) from the
    median, the farthest first kept, never more than floor(max_fraction * n) of them.

    Both directions are flagged. Host noise only slows a round, but a fast round is just as far from
    the steady state (a missed synchronisation, a short pass), and trimming only one side would bias
    the median of what is kept towards fast."""
    bound = int(max_fraction * len(values))
    if bound == 0:
        return []
    centre = statistics.median(values)
    # floored at float resolution, so rounds that differ only by rounding are never far
    scale = max(MAD_TO_SD * statistics.median([abs(v - centre) for v in values]), 1e-9 * abs(centre))
    far = [i for i, v in enumerate(values) if abs(v - centre) > z * scale]
    far.sort(key=lambda i: abs(values[i] - centre), reverse=True)
    return sorted(far[:bound])


@dataclass
class Summary:
    """The median of `values` over the ones the outlier rule keeps, with its interval."""

    values: list[float]
    median: float
    ci: tuple[float, float] | None
    outliers: list[int]  # indices into values

    @property
    def rel_ci_width(self) -> float:
        """(high - low) / median; infinite while there are too few values for an interval."""
        return math.inf if self.ci is None else (self.ci[1] - self.ci[0]) / self.median


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    values = list(values)
    outliers = mad_outliers(values)
    kept = [v for i, v in enumerate(values) if i not in outliers]
    return Summary(values, statistics.median(kept), median_ci(kept, confidence), outliers)


# --- measuring

@dataclass
class Warmup:
    """The untimed passes before measuring, kept so that a record can show how long warm-up took."""

    samples: list[Sample]
    steady: bool  # False when a cap stopped it first

    @property
    def passes(self) -> int:
        return len(self.samples)


def warm_up(pass_fn: Callable[[], int], *, steady_passes: int = WARMUP_STEADY_PASSES,
            rel_tol: float = WARMUP_REL_TOL, max_passes: int = WARMUP_MAX_PASSES,
            max_time_s: float = WARMUP_MAX_TIME_S, timer: PassTimer | None = None) -> Warmup:
    """Run at least one pass, then more until the last `steady_passes` times per token agree within
    `rel_tol` (slowest / fastest - 1), or `max_passes` passes or `max_time_s` seconds have run."""
    if steady_passes < 1 or max_passes < 1 or rel_tol < 0:
        raise ValueError("warm-up wants steady_passes >= 1, max_passes >= 1 and rel_tol >= 0")
    timer = timer or PassTimer()
    samples: list[Sample] = []
    with frozen_heap():
        while True:
            samples.append(timer(pass_fn))
            last = [s.wall_s / s.tokens for s in samples[-steady_passes:]]
            if len(last) == steady_passes and max(last) <= min(last) * (1 + rel_tol):
                return Warmup(samples, steady=True)
            if len(samples) >= max_passes or sum(s.wall_s for s in samples) >= max_time_s:
                return Warmup(samples, steady=False)


class Verdict(NamedTuple):
    summary: Summary  # of the rates so far
    converged: bool
    done: bool  # converged, or a cap was hit


@dataclass(frozen=True)
class StopRule:
    """When a cell has been timed enough: at least `min_rounds` rounds and `min_time_s` seconds of
    timed work, then until the interval of the median tokens/s is narrower than `rel_ci` of it, or
    until `max_rounds` rounds or `max_time_s` seconds (then it has not converged); the time cap
    stops a cell short of `min_rounds` only once it has the rounds an interval needs
    (`rounds_for_interval`). `max_time_s = 0` times exactly `min_rounds` rounds (a smoke run)."""

    min_time_s: float = MIN_TIME_S
    max_time_s: float = MAX_TIME_S
    rel_ci: float = REL_CI
    min_rounds: int = MIN_ROUNDS
    max_rounds: int = MAX_ROUNDS
    confidence: float = CONFIDENCE

    def __post_init__(self):
        if not (1 <= self.min_rounds <= self.max_rounds and 0 <= self.min_time_s <= self.max_time_s
                and self.rel_ci > 0 and 0 < self.confidence < 1):
            raise ValueError(f"impossible stopping rule: {self}")

    def judge(self, samples: Sequence[Sample]) -> Verdict:
        summary = summarize([s.rate for s in samples], self.confidence)
        timed = sum(s.wall_s for s in samples)
        enough = len(samples) >= self.min_rounds and timed >= self.min_time_s
        converged = enough and summary.rel_ci_width < self.rel_ci
        # the time cap stops a cell once it has the rounds an interval of its median needs (6 at
        # 95%), even short of min_rounds: a slow cell's rounds are long (a 10 s pass) and its host
        # noise averages out inside each, and without the cap the slow eager cells of Spider and
        # DialogSum alone would take a full matrix past 25 minutes; max_time_s = 0 is exact
        floor = self.min_rounds if self.max_time_s == 0 else min(self.min_rounds, rounds_for_interval(self.confidence))
        capped = len(samples) >= self.max_rounds or (timed >= self.max_time_s and len(samples) >= floor)
        return Verdict(summary, converged, done=converged or capped)


@dataclass
class Measurement(Summary):
    """A cell's timed rounds: `values` are their tokens/s, `median` and `ci` over the rounds the
    outlier rule kept, `outliers` the flagged rounds."""

    samples: list[Sample] = field(default_factory=list)
    converged: bool = False

    @property
    def rounds(self) -> int:
        return len(self.samples)


def interleave(cells: dict[str, Callable[[], int]], rule: StopRule = StopRule(), *, rotate: bool = True,
               reference: str | None = None, timer: PassTimer | None = None) -> dict[str, Measurement]:
    """Time the cells round by round (A B C, B C A, C A B, ... with `rotate`, so no cell is always
    first or always follows the same one), each under `rule`; a cell leaves when it is done, the
    loop ends when all have. A `reference` cell keeps running while any other does, so every round
    of every cell has a reference round of the same cycle beside it for `paired_ratio`."""
    if not cells:
        raise ValueError("nothing to measure")
    if reference is not None and reference not in cells:
        raise ValueError(f"reference {reference!r} is not one of the cells {list(cells)}")
    timer = timer or PassTimer()
    names = list(cells)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    running = set(names)
    with frozen_heap():
        for cycle in itertools.count():
            shift = cycle % len(names) if rotate else 0
            for name in names[shift:] + names[:shift]:
                if name in running:
                    samples[name].append(timer(cells[name]))
                    if name != reference and rule.judge(samples[name]).done:
                        running.discard(name)
            if running == {reference} and rule.judge(samples[reference]).done:
                running.clear()
            if not running:
                break
    return {name: _result(samples[name], rule) for name in names}


def _result(samples: list[Sample], rule: StopRule) -> Measurement:
    verdict = rule.judge(samples)
    return Measurement(**vars(verdict.summary), samples=samples, converged=verdict.converged)


def measure_until(pass_fn: Callable[[], int], min_time_s: float = MIN_TIME_S, max_time_s: float = MAX_TIME_S,
                  rel_ci: float = REL_CI, min_rounds: int = MIN_ROUNDS, max_rounds: int = MAX_ROUNDS, *,
                  confidence: float = CONFIDENCE, timer: PassTimer | None = None) -> Measurement:
    """Time passes of one cell under the stopping rule those arguments make (see `StopRule`)."""
    rule = StopRule(min_time_s, max_time_s, rel_ci, min_rounds, max_rounds, confidence)
    return interleave({"cell": pass_fn}, rule, timer=timer)["cell"]


def paired_ratio(samples: Sequence[Sample], reference: Sequence[Sample], confidence: float = CONFIDENCE) -> Summary:
    """Speed-up over the reference: the robust summary of per-round rate ratios, round i of one
    paired with round i of the other (the same cycle of `interleave`), over the rounds both ran.
    Drift common to both rounds of a cycle cancels in the ratio."""
    ratios = [s.rate / r.rate for s, r in zip(samples, reference)]
    if not ratios:
        raise ValueError("no rounds to pair")
    return summarize(ratios, confidence)
