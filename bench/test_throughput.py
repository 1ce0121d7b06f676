"""One benchmark per (dataset, technique): tokens/s and everything needed to trust the number."""

from __future__ import annotations

from llmopt import measure
from llmopt.strategies import get_strategy


def test_throughput(benchmark, dataset, technique, workloads, plain_outputs, options):
    workload = workloads(dataset)
    strategy = get_strategy(technique, **measure.strategy_options(technique, options["strategy_options"]))
    prepare_s = measure.prepare(strategy, workload, options["device"])
    reference = plain_outputs(dataset, strategy.dtype)

    measure.run_pass(strategy, workload, workload.prompts[:4])  # warm-up: allocator, kernels, caches
    measure.reset_peak_memory(options["device"])
    passes = []
    benchmark.pedantic(lambda: passes.append(measure.run_pass(strategy, workload)),
                       rounds=options["rounds"], iterations=1, warmup_rounds=0)
    record = measure.summarize(strategy, workload, passes, reference, measure.peak_memory(options["device"]))
    record["prepare_s"] = prepare_s
    benchmark.extra_info.update(record)

    assert record["generated_tokens"] > 0
    assert all(len(g.tokens) <= workload.max_new_tokens for g, _ in passes[0])
