"""Timing rules on fake time: passes that advance a fake clock by a chosen duration, so every
stopping decision is deterministic and no test sleeps."""

import gc
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt import timing
from llmopt.timing import PassTimer, Sample, StopRule


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def passes(clock: FakeClock, durations, tokens: int = 100, log: list | None = None, name: str = ""):
    """A pass function whose i-th call takes durations[i] seconds of fake time."""
    durations = iter(durations)

    def pass_fn() -> int:
        clock.now += next(durations)
        if log is not None:
            log.append(name)
        return tokens

    return pass_fn


def sample(rate: float) -> Sample:
    return Sample(start_unix=0.0, wall_s=100 / rate, device_s=None, tokens=100)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def timer(clock):
    return PassTimer("cpu", clock)


def test_no_gc_collects_then_disables_gc_and_restores_it_even_after_an_exception(monkeypatch):
    collected = []
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(a) or 0)
    assert gc.isenabled()
    with timing.no_gc():
        assert not gc.isenabled() and len(collected) == 1
    assert gc.isenabled()
    with pytest.raises(RuntimeError), timing.no_gc():
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with timing.no_gc():
            pass
        assert not gc.isenabled()  # restored to what it was, not switched on
    finally:
        gc.enable()


def test_a_pass_is_timed_with_gc_off_and_off_cuda_has_no_device_time(clock, timer):
    seen = []

    def pass_fn():
        seen.append(gc.isenabled())
        clock.now += 0.5
        return 40

    s = timer(pass_fn)
    assert seen == [False] and gc.isenabled()
    assert (s.wall_s, s.tokens, s.device_s, s.rate) == (0.5, 40, None, 80.0)
    assert s.start_unix > 1e9  # a unix time, to order cells and processes


def test_on_cuda_events_bracket_the_pass_and_the_clock_is_read_after_synchronising(monkeypatch, clock):
    log = []

    class FakeEvent:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self, stream):
            log.append(f"record@{clock.now}")

        def elapsed_time(self, other):
            return 450.0  # milliseconds, as torch gives them

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: log.append("sync"))
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: None)
    s = PassTimer("cuda", lambda: log.append("clock") or clock.now, probe_launches=False)(passes(clock, [0.5]))
    assert log == ["sync", "record@0.0", "clock", "record@0.5", "sync", "clock"]
    assert (s.wall_s, s.device_s, s.device_rate) == (0.5, 0.45, 100 / 0.45)


def test_a_pass_that_does_not_return_its_token_count_is_refused(timer):
    with pytest.raises(ValueError, match="positive int"):
        timer(lambda: None)


def test_warm_up_stops_once_three_passes_agree(clock, timer):
    durations = [5.0, 2.0, 1.3, 1.0, 1.02, 0.99, 1.0, 1.0]
    w = timing.warm_up(passes(clock, durations), timer=timer)
    assert w.steady and w.passes == 6  # 1.0, 1.02, 0.99 agree within 5%
    assert [s.wall_s for s in w.samples] == pytest.approx(durations[:6])


def test_warm_up_runs_at_least_once_and_stops_at_its_caps(clock, timer):
    assert timing.warm_up(passes(clock, [1.0]), steady_passes=1, timer=timer).passes == 1
    unsteady = [1.0, 2.0] * 50
    w = timing.warm_up(passes(clock, unsteady), max_passes=7, timer=timer)
    assert (w.passes, w.steady) == (7, False)
    w = timing.warm_up(passes(clock, unsteady), max_time_s=10.0, timer=timer)
    assert (w.passes, w.steady) == (7, False)  # 1 + 2 + 1 + 2 + 1 + 2 + 1 = 10 s


def test_measure_until_honours_min_rounds_and_min_time(clock, timer):
    steady = [0.125] * 1000  # identical rounds: the interval is as tight as it gets at once
    m = timing.measure_until(passes(clock, steady), min_time_s=2.0, min_rounds=8, timer=timer)
    assert m.rounds == 16 and m.converged  # 16 x 0.125 s = the 2 s minimum
    m = timing.measure_until(passes(clock, steady), min_time_s=0.5, min_rounds=12, timer=timer)
    assert m.rounds == 12 and m.converged


def test_measure_until_stops_early_when_the_interval_is_tight(clock, timer):
    rng = random.Random(1)
    quiet = [1.0 + rng.uniform(-0.002, 0.002) for _ in range(1000)]
    m = timing.measure_until(passes(clock, quiet), min_time_s=5.0, max_time_s=100.0, rel_ci=0.02,
                             min_rounds=10, timer=timer)
    assert m.converged and m.rounds == 10
    assert m.ci[0] <= m.median <= m.ci[1] and m.rel_ci_width < 0.02


def test_measure_until_stops_at_its_cap_when_noise_is_large_and_says_so(clock, timer):
    rng = random.Random(2)
    noisy = [rng.uniform(0.5, 1.5) for _ in range(1000)]
    m = timing.measure_until(passes(clock, noisy), min_time_s=1.0, max_time_s=1000.0, rel_ci=0.01,
                             min_rounds=5, max_rounds=30, timer=timer)
    assert m.rounds == 30 and not m.converged
    m = timing.measure_until(passes(clock, noisy), min_time_s=1.0, max_time_s=12.0, rel_ci=0.01,
                             min_rounds=5, max_rounds=200, timer=timer)
    assert not m.converged and sum(s.wall_s for s in m.samples) >= 12.0 > sum(s.wall_s for s in m.samples[:-1])


def test_the_time_cap_stops_a_slow_cell_short_of_min_rounds_once_it_has_an_interval(clock, timer):
    # passes of 5 s against a 20 s cap: 6 rounds (the fewest a 95% interval takes), not 10
    assert timing.rounds_for_interval(0.95) == 6 and timing.median_ci(range(5)) is None
    slow = [5.0 * (1 + 0.2 * (i % 3)) for i in range(100)]  # noisy: never within the 2% target
    m = timing.measure_until(passes(clock, slow), min_time_s=10.0, max_time_s=20.0, min_rounds=10, timer=timer)
    assert m.rounds == 6 and not m.converged and m.ci is not None
    # rounds short enough for min_rounds within the cap still get them, and more until the cap
    m = timing.measure_until(passes(clock, [0.5 * (1 + 0.2 * (i % 3)) for i in range(100)]), min_time_s=1.0,
                             max_time_s=10.0, min_rounds=10, timer=timer)
    assert m.rounds > 10
    # a smoke run (no cap) times exactly min_rounds
    assert timing.measure_until(passes(clock, slow), min_time_s=0, max_time_s=0, min_rounds=3, timer=timer).rounds == 3


def test_an_impossible_stopping_rule_fails_before_any_pass():
    with pytest.raises(ValueError, match="impossible"):
        timing.measure_until(lambda: pytest.fail("ran"), min_rounds=10, max_rounds=5)
    with pytest.raises(ValueError, match="impossible"):
        StopRule(min_time_s=10, max_time_s=5)


def test_the_outlier_rule_flags_one_slow_round_among_ten():
    rates = [100.0, 101.0, 99.5, 100.4, 55.0, 99.8, 100.9, 100.2, 99.1, 100.6]
    assert timing.mad_outliers(rates) == [4]
    s = timing.summarize(rates)
    assert s.outliers == [4] and s.median == pytest.approx(100.2)  # the median of the other nine


def test_the_outlier_rule_never_flags_more_than_its_bound_and_keeps_the_farthest():
    rates = [100.0] * 6 + [50.0, 60.0, 70.0, 150.0]
    assert timing.mad_outliers(rates) == [6, 9]  # 4 are far; 20% of 10 is 2: the two farthest
    assert timing.mad_outliers(rates, max_fraction=0.5) == [6, 7, 8, 9]
    assert timing.mad_outliers([100.0, 100.0, 10.0, 100.0]) == []  # 20% of 4 rounds is none


def test_the_median_interval_is_the_order_statistic_interval_scipy_gives():
    stats = pytest.importorskip("scipy.stats")
    for n in [3, 5, 6, 7, 10, 17, 30, 101]:
        values = [float(v) for v in random.Random(n).sample(range(1000), n)]
        expected = stats.quantile_test(values, q=500.0, p=0.5).confidence_interval(0.95)
        ours = timing.median_ci(values, 0.95)
        assert (ours is None) == (n < 6)
        if ours is not None:
            assert ours == (expected.low, expected.high)


def test_the_median_interval_covers_the_true_median_in_most_trials():
    rng = random.Random(0)
    true_median = 1.0  # of a log-normal with mu = 0: skewed, like round times
    trials = 400
    covered = sum(lo <= true_median <= hi for lo, hi in (timing.median_ci([rng.lognormvariate(0, 0.3)
                                                                           for _ in range(20)])
                                                         for _ in range(trials)))
    assert 0.93 * trials <= covered <= trials  # at least 95% by construction (95.9% at n = 20)


def test_interleave_runs_cells_round_robin_in_rotated_order_and_returns_each_cell(clock, timer):
    log = []
    cells = {name: passes(clock, [1.0] * 10, log=log, name=name) for name in "ABC"}
    rule = StopRule(min_time_s=0, max_time_s=100, min_rounds=3, max_rounds=3)
    results = timing.interleave(cells, rule, timer=timer)
    assert "".join(log) == "ABC" "BCA" "CAB"
    assert list(results) == ["A", "B", "C"] and all(r.rounds == 3 for r in results.values())
    log.clear()
    timing.interleave({n: passes(clock, [1.0] * 10, log=log, name=n) for n in "AB"}, rule, rotate=False, timer=timer)
    assert "".join(log) == "AB" * 3


def test_a_cell_leaves_the_rotation_when_it_converges_unless_it_is_the_reference(clock, timer):
    rng = random.Random(3)
    rule = StopRule(min_time_s=0, max_time_s=1000, rel_ci=0.02, min_rounds=6, max_rounds=40)
    steady, noisy = [1.0] * 100, [rng.uniform(0.5, 1.5) for _ in range(100)]
    results = timing.interleave({"quiet": passes(clock, steady), "loud": passes(clock, noisy)}, rule, timer=timer)
    assert (results["quiet"].rounds, results["quiet"].converged) == (6, True)
    assert (results["loud"].rounds, results["loud"].converged) == (40, False)
    results = timing.interleave({"quiet": passes(clock, steady), "loud": passes(clock, noisy)}, rule,
                                reference="quiet", timer=timer)
    assert results["quiet"].rounds == results["loud"].rounds == 40


def test_paired_ratios_cancel_drift_that_hits_both_cells_of_a_round(clock, timer):
    drift = [1 + 0.3 * i / 11 for i in range(12)]  # the machine slows 30% over the run
    rng = random.Random(4)
    drift = [d * rng.uniform(0.9, 1.1) for d in drift]  # and jitters 10% from round to round
    cells = {"naive": passes(clock, drift), "fast": passes(clock, [d / 2 for d in drift])}
    rule = StopRule(min_time_s=0, max_time_s=1000, rel_ci=0.001, min_rounds=12, max_rounds=12)
    results = timing.interleave(cells, rule, reference="naive", timer=timer)
    assert results["naive"].rel_ci_width > 0.1 and results["fast"].rel_ci_width > 0.1
    speedup = timing.paired_ratio(results["fast"].samples, results["naive"].samples)
    assert speedup.median == pytest.approx(2.0) and speedup.rel_ci_width < 1e-9 and speedup.outliers == []


def test_paired_ratio_pairs_the_rounds_both_cells_ran():
    ratio = timing.paired_ratio([sample(r) for r in [200.0, 210.0, 190.0]], [sample(100.0)] * 5)
    assert ratio.values == pytest.approx([2.0, 2.1, 1.9]) and ratio.median == pytest.approx(2.0)
    assert ratio.ci is None  # three pairs are too few for a 95% interval
    with pytest.raises(ValueError, match="no rounds"):
        timing.paired_ratio([], [sample(1.0)])


@settings(derandomize=True, deadline=None)
@given(st.lists(st.floats(1.0, 1e4), min_size=1, max_size=60))
def test_the_summary_drops_at_most_a_fifth_and_its_interval_holds_the_median(rates):
    s = timing.summarize(rates)
    assert len(s.outliers) <= len(rates) // 5 and s.outliers == sorted(set(s.outliers))
    assert min(rates) <= s.median <= max(rates)
    assert s.ci is None or s.ci[0] <= s.median <= s.ci[1]
