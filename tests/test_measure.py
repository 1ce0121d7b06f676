"""The shared measurement: what a benchmark record says, and the CLI around it."""

import pytest

from llmopt import cli, measure
from llmopt.data import Example
from llmopt.generation import Generation
from llmopt.strategies.base import Strategy


class FakeTokenizer:
    def decode(self, ids):
        return " ".join(f"w{i}" for i in ids)


class Fake(Strategy):
    name = "fake"
    device = "cpu"


def workload(outputs):
    examples = [Example(str(i), "p", " t", (" ".join(f"w{t}" for t in o if t != 0),)) for i, o in enumerate(outputs)]
    return measure.Workload("e2e_nlg", "tiny", "lm", None, examples, [[1]] * len(outputs), 8, 0, FakeTokenizer())


def test_summarize_counts_tokens_over_wall_time():
    outputs = [[5, 6, 0], [7, 0]]
    work = workload(outputs)
    gens = [Generation(o, forward_calls=len(o), forward_s=0.1, ttft_s=0.01) for o in outputs]
    passes = [list(zip(gens, [1.0, 0.25])), list(zip(gens, [2.0, 0.5]))]
    r = measure.summarize(Fake(), work, passes, reference=[[5, 6, 0], [8, 0]])
    assert r["generated_tokens"] == 5
    assert r["tokens_per_s"] == pytest.approx((4 + 2) / 2)  # median of 4.0 and 2.0 tokens/s
    assert (r["tokens_per_s_min"], r["tokens_per_s_max"]) == (2.0, 4.0)
    assert r["match_naive"] == 0.5 and r["mean_accepted_tokens"] == 1.0
    assert r["quality_metric"] == "rouge_l" and r["quality"] == 100.0
    assert r["output_sha256"] == measure.output_hash(outputs)
    assert "acceptance_ratio" not in r


def test_summarize_refuses_outputs_that_change_between_rounds():
    work = workload([[5, 0]])
    a, b = Generation([5, 0], 2), Generation([6, 0], 2)
    with pytest.raises(AssertionError, match="changed between rounds"):
        measure.summarize(Fake(), work, [[(a, 1.0)], [(b, 1.0)]])


def test_speculative_stats_sum_over_prompts():
    gens = [Generation([1], 1, stats={"proposed_per_depth": [4, 4], "accepted_per_depth": [3, 1]}),
            Generation([1], 1, stats={"proposed_per_depth": [2, 2], "accepted_per_depth": [1, 1]})]
    s = measure.speculative_stats(gens)
    assert s["acceptance_ratio"] == pytest.approx(6 / 12)
    assert s["acceptance_per_depth"] == pytest.approx([4 / 6, 2 / 6])


def test_table_is_techniques_by_datasets():
    records = [dict(dataset=d, technique=t, tokens_per_s=v) for d, t, v in
               [("spider", "naive", 10.0), ("e2e_nlg", "naive", 12.5), ("spider", "half", 9.0)]]
    assert measure.table(records).splitlines() == [
        "| technique | spider | e2e_nlg |", "|---|---|---|", "| naive | 10.0 | 12.5 |", "| half | 9.0 (0.90×) | – |"]


def test_cli_errors_are_clear(capsys, tmp_path):
    assert cli.main(["bench", "--technique", "warp", "--dataset", "spider"]) == 2
    assert "unknown technique 'warp'" in capsys.readouterr().err
    assert cli.main(["bench", "--model", str(tmp_path / "nope"), "--dataset", "spider", "--data-dir", str(tmp_path)]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
    assert cli.main(["bench", "--dataset", "wikisql"]) == 2


def test_a_cuda_benchmark_under_a_fixed_cublas_workspace_is_warned_and_recorded(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert measure.cublas_warning("cuda") is None and measure.machine_facts()["cublas_workspace_config"] is None
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    assert "CUBLAS_WORKSPACE_CONFIG=:4096:8 is set" in measure.cublas_warning("cuda:0")
    assert measure.cublas_warning("cpu") is None  # cuBLAS is not in a CPU run
    assert measure.machine_facts()["cublas_workspace_config"] == ":4096:8"


def test_a_record_says_what_training_its_checkpoint_took(tmp_path):
    import dataclasses
    import json

    outputs = [[5, 0]]
    passes = [[(Generation(outputs[0], 2), 1.0)]]
    assert measure.summarize(Fake(), workload(outputs), passes)["checkpoint_train_time_s"] is None  # not ours
    (tmp_path / "llmopt.json").write_text(json.dumps({"train_time_s": 115.0}))
    work = dataclasses.replace(workload(outputs), checkpoint=tmp_path)
    assert measure.summarize(Fake(), work, passes)["checkpoint_train_time_s"] == 115.0
    # and the shape it was trained at, which names its column beside the default shape's
    assert measure.summarize(Fake(), work, passes)["shape"] == "tiny"  # the shape asked for
    given = dataclasses.replace(work, model=str(tmp_path))  # a directory: the shape it was trained at, if ours
    assert measure.summarize(Fake(), given, passes)["shape"] is None
    (tmp_path / "llmopt.json").write_text(json.dumps({"recipe": {"shape": "1.3b"}}))
    given = dataclasses.replace(given)  # a workload reads its checkpoint's recipe once
    assert measure.summarize(Fake(), given, passes)["shape"] == "1.3b"


def test_a_drafting_cells_plain_captured_twin():
    from llmopt.strategies.techniques import plain_twin

    cells = ["naive", "graphs", "half+graphs", "flash2+graphs", "ss", "best", "pld+half", "hf", "hf+pld"]
    assert plain_twin("ss", cells) == "graphs"
    assert plain_twin("best", cells) == "flash2+graphs"  # a preset, expanded
    assert plain_twin("pld+half", cells) == "half+graphs"
    assert plain_twin("hf+pld", cells) == "hf"  # stock generate has no captured step
    assert plain_twin("half+graphs", cells) is None  # plain decoding has no twin
    assert plain_twin("ss", ["naive", "ss"]) is None  # not timed with it


def test_an_interleaved_drafting_cell_records_its_paired_speed_up_over_its_twin(tmp_path):
    from test_kernel_count import tiny_session

    bench = tiny_session(tmp_path, techniques=["naive", "graphs", "pld"], kernel_count="off", rounds=8,
                         strategy_options={"graphs": {"runtime": "static"}})
    records = bench.measure_dataset("e2e_nlg", ["naive", "graphs", "pld"])
    pld = records["pld"]
    assert pld["twin"] == "graphs" and pld["speedup_over_twin"] > 0 and len(pld["speedup_over_twin_ci"]) == 2
    assert "twin" not in records["graphs"] and "twin" not in records["naive"]
    alone = tiny_session(tmp_path / "alone", techniques=["graphs", "pld"], kernel_count="off", interleave="off",
                         strategy_options={"graphs": {"runtime": "static"}}).measure_dataset("e2e_nlg", ["graphs", "pld"])
    assert "twin" not in alone["pld"]  # timed one after the other: no same-cycle rounds to pair


def test_a_cell_queued_ahead_records_its_steps_past_the_end(tmp_path):
    """queue_ahead through the benchmark: the same outputs as without it, the dropped steps counted."""
    from test_kernel_count import tiny_session

    records = {}
    for ahead in (False, True):
        bench = tiny_session(tmp_path / str(ahead), techniques=["graphs"], kernel_count="off", rounds=2,
                             strategy_options={"graphs": {"runtime": "static", "queue_ahead": ahead}})
        records[ahead] = bench.measure_dataset("e2e_nlg", ["graphs"])["graphs"]
    assert records[True]["output_sha256"] == records[False]["output_sha256"]
    assert records[True]["config"]["queue_ahead"] and not records[False]["config"]["queue_ahead"]
    assert "steps_past_end" not in records[False] and 0 <= records[True]["steps_past_end"] <= records[True]["num_prompts"]
