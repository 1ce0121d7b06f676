"""One benchmark per (dataset, technique): tokens/s and everything needed to trust the number.
The measurement is measure.Bench's, the same that `llmopt bench` runs: a dataset's cells are timed
together, round by round, when its first cell's test runs; each test then reports its cell."""

from __future__ import annotations

from llmopt import pytest_xdist


def test_throughput(benchmark, dataset, technique, bench, record_property, pytestconfig):
    record = bench.cell(dataset, technique)
    report_rounds(benchmark, record["round_wall_s"])
    benchmark.extra_info.update(record)
    # under xdist the record rides to the controller on this test's report (llmopt.pytest_xdist)
    if pytest_xdist.is_worker(pytestconfig):
        record_property(pytest_xdist.RECORD, pytest_xdist.portable(record))
    assert record["generated_tokens"] > 0


def report_rounds(benchmark, seconds: list[float]) -> None:
    """Hand pytest-benchmark the rounds llmopt.timing measured (seconds per pass), so that its table,
    saved stats and --benchmark-compare describe the same passes the record counts. It has no
    public call for rounds timed elsewhere; _make_stats is what its own pedantic() uses."""
    benchmark._mode = "llmopt.timing"  # used (even when disabled, as under xdist): as with pedantic()
    if benchmark.disabled:
        return
    stats = benchmark._make_stats(1)
    for s in seconds:
        stats.update(s)
