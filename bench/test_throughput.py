"""One benchmark per (dataset, technique): tokens/s and everything needed to trust the number.
The measurement itself is measure.Bench's, the same that `llmopt bench` runs."""

from __future__ import annotations


def test_throughput(benchmark, dataset, technique, bench):
    def timed(one_pass, rounds):  # pytest-benchmark times the same passes the record counts
        benchmark.pedantic(one_pass, rounds=rounds, iterations=1, warmup_rounds=0)

    record = bench.measure_cell(dataset, technique, timed=timed)
    benchmark.extra_info.update(record)
    assert record["generated_tokens"] > 0
