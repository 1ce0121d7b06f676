"""The regression gate: synthetic saved runs shaped like pytest-benchmark's JSON, compared by
`llmopt compare` and by the `--gate-baseline` option of the benchmark harness."""

import importlib.util
import json
import random
import statistics
import sys
from pathlib import Path

import pytest

from llmopt import cli, compare

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("spider", "dialogsum", "e2e_nlg")


def cell(dataset, technique, tokens_per_s, sha="a", **extra):
    """An extra_info record as llmopt.measure.summarize writes it (the fields the tools read)."""
    return {"dataset": dataset, "technique": technique, "model": "125m", "num_prompts": 32, "max_new_tokens": 128,
            "tokens_per_s": tokens_per_s, "tokens_per_s_min": 0.95 * tokens_per_s,
            "tokens_per_s_max": 1.04 * tokens_per_s, "tokens_per_s_rounds": [0.95 * tokens_per_s, tokens_per_s],
            "mean_accepted_tokens": 1.0, "peak_memory_bytes": 400 * 2**20, "output_sha256": f"{sha}-{dataset}",
            "match_naive": 1.0, "quality_metric": "exact_match" if dataset == "spider" else "rouge_l",
            "quality": 50.0, "dtype": "float16" if technique == "half" else "float32",
            "step_prepare_s": 0.0, "step_forward_s": 1 / tokens_per_s, "step_verify_s": 0.0, **extra}


def saved_run(path, records, gpu="NVIDIA H200", when="2026-11-26T04:23:15+00:00", torch_version="2.11.0+cu130"):
    """Write a pytest-benchmark JSON file holding `records` as extra_info."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine_info": {"gpu_name": gpu, "gpu_count": 1, "driver_version": "580.159.04", "cuda_version": "13.0",
                            "torch_version": torch_version, "transformers_version": "5.17.0", "python_version": "3.12.3"},
           "commit_info": {"id": "unknown"}, "datetime": when, "version": "5.2.3",
           "benchmarks": [{"name": f"test_throughput[{r['dataset']}-{r['technique']}]", "extra_info": r}
                          for r in records]}
    path.write_text(json.dumps(doc))
    return path


def matrix(rates=None, sha="a"):
    rates = rates or {"hf": 140.0, "naive": 280.0, "half": 220.0}
    return [cell(d, t, rate, sha) for d in DATASETS for t, rate in rates.items()]


def test_gate_passes_within_tolerance(tmp_path):
    base = compare.load_run(saved_run(tmp_path / "base.json", matrix()))
    cur = compare.load_run(saved_run(tmp_path / "cur.json", matrix({"hf": 134.0, "naive": 300.0, "half": 220.0})))
    assert compare.gate(cur, base, 0.05) == []  # hf is 4.3% slower: inside 5%


def test_gate_fails_on_a_drop_and_on_a_changed_hash_separately(tmp_path):
    base = compare.load_run(saved_run(tmp_path / "base.json", matrix()))
    records = matrix({"hf": 140.0, "naive": 250.0, "half": 220.0})
    records[2]["output_sha256"] = "changed"  # spider/half
    cur = compare.load_run(saved_run(tmp_path / "cur.json", records))
    failures = compare.gate(cur, base, 0.05)
    assert {(f.cell, f.kind) for f in failures} == {
        *(((d, "naive"), "speed") for d in DATASETS), (("spider", "half"), "output")}
    text = compare.render(cur, base, failures, 0.05)
    assert "speed regressions:" in text and "output changed (correctness alarm):" in text
    assert "gate: FAILED (4 failures)" in text


def test_a_baseline_cell_the_run_lacks_fails_and_a_new_cell_is_listed(tmp_path):
    base = compare.load_run(saved_run(tmp_path / "base.json", matrix()))
    cur = compare.load_run(saved_run(tmp_path / "cur.json", matrix()[3:] + [cell("spider", "ss", 500.0)]))
    failures = compare.gate(cur, base)
    assert [(f.cell, f.kind) for f in failures] == [(("spider", t), "missing") for t in ("hf", "naive", "half")]
    text = compare.render(cur, base, failures, 0.05)
    assert "missing (in the baseline, not measured):" in text and "  spider/naive: " in text
    assert "only in current (not gated): spider/ss" in text
    assert text.endswith("gate: FAILED (3 failures)")


def test_a_baseline_cell_the_run_did_not_select_is_not_gated(tmp_path):
    base = compare.load_run(saved_run(tmp_path / "base.json", matrix()))
    cur = compare.load_run(saved_run(tmp_path / "cur.json", matrix()[3:]))  # dialogsum and e2e_nlg only
    selected = compare.selected_by(["dialogsum", "e2e_nlg"], ["hf", "naive", "half"])
    assert compare.gate(cur, base, selected=selected) == []
    text = compare.render(cur, base, [], 0.05, selected=selected)
    assert "not selected, not gated: spider/hf, spider/naive, spider/half" in text
    assert text.endswith("gate: passed")
    # asked for (the technique is selected) but not measured: missing
    failures = compare.gate(cur, base, selected=compare.selected_by(DATASETS, ["naive"]))
    assert [(f.cell, f.kind) for f in failures] == [(("spider", "naive"), "missing")]


def test_a_run_that_compared_nothing_fails(tmp_path):
    base = compare.load_run(saved_run(tmp_path / "base.json", matrix()))
    cur = compare.load_run(saved_run(tmp_path / "cur.json", []))
    everything_else = compare.selected_by([], [])  # even with every baseline cell selected out
    failures = compare.gate(cur, base, selected=everything_else)
    assert [(f.cell, f.kind) for f in failures] == [(None, "empty")]
    text = compare.render(cur, base, failures, 0.05, selected=everything_else)
    assert "nothing compared:" in text and text.endswith("gate: FAILED (1 failure)")


def test_gate_refuses_another_workload_cell(tmp_path):
    base = compare.load_run(saved_run(tmp_path / "base.json", matrix()))
    records = matrix()
    records[0]["num_prompts"] = 4
    failures = compare.gate(compare.load_run(saved_run(tmp_path / "cur.json", records)), base)
    assert [(f.cell, f.kind) for f in failures] == [(("spider", "hf"), "workload")]


def test_gate_compares_one_checkpoint_reached_by_different_paths(tmp_path):
    """`--model PATH` differs between hosts; the checkpoint's recipe name is what identifies it."""
    def at(path, checkpoint):
        return [{**r, "model": path, "checkpoint": checkpoint} for r in matrix()]
    base = compare.load_run(saved_run(tmp_path / "base.json", at("/runner-a/.cache/e2e-ss-27da", "e2e-ss-27da")))
    same = compare.load_run(saved_run(tmp_path / "same.json", at("125m", "e2e-ss-27da")))
    other = compare.load_run(saved_run(tmp_path / "other.json", at("125m", "e2e-ss-ffff")))
    assert compare.gate(same, base) == []
    assert {f.kind for f in compare.gate(other, base)} == {"workload"}


def test_gate_refuses_another_gpu_and_shows_both_versions(tmp_path):
    base = compare.load_run(saved_run(tmp_path / "base.json", matrix()))
    cur = compare.load_run(saved_run(tmp_path / "cur.json", matrix(), gpu="NVIDIA H100 80GB HBM3",
                                     torch_version="2.13.0+cu130"))
    with pytest.raises(compare.GpuMismatch, match="different GPU models") as err:
        compare.gate(cur, base)
    assert "torch 2.11.0+cu130" in str(err.value) and "torch 2.13.0+cu130" in str(err.value)


def test_cli_compare_exit_codes_and_table(tmp_path, capsys):
    base = saved_run(tmp_path / "base.json", matrix())
    same = saved_run(tmp_path / "same.json", matrix({"hf": 141.0, "naive": 280.0, "half": 220.0}))
    slow = saved_run(tmp_path / "slow.json", matrix({"hf": 100.0, "naive": 280.0, "half": 220.0}))
    other = saved_run(tmp_path / "other.json", matrix(), gpu="NVIDIA A100-SXM4-80GB")
    assert cli.main(["compare", str(base), str(same)]) == 0
    out = capsys.readouterr().out
    assert "spider/hf" in out and "+0.7%" in out and "gate: passed" in out
    assert cli.main(["compare", str(base), str(slow), "--tolerance", "0.5"]) == 0
    assert cli.main(["compare", str(base), str(slow)]) == 1
    assert "-28.6%" in capsys.readouterr().out
    assert cli.main(["compare", str(base), str(other)]) == 2
    assert "refusing to compare" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert cli.main(["compare", str(base), str(tmp_path / "bad.json")]) == 2
    assert "not a pytest-benchmark JSON file" in capsys.readouterr().err
    (tmp_path / "records.json").write_text(json.dumps(matrix()))  # what `llmopt bench --json` writes
    assert cli.main(["compare", str(base), str(tmp_path / "records.json")]) == 2
    assert "a list of records (`llmopt bench --json`), not a saved run" in capsys.readouterr().err


def test_latest_run_is_the_newest_by_date_across_machine_ids(tmp_path):
    assert compare.latest_run(tmp_path) is None
    saved_run(tmp_path / "Linux-CPython-3.12-64bit/0002_b.json", [], when="2026-11-27T00:00:00+00:00")
    newest = saved_run(tmp_path / "Linux-CPython-3.13-64bit/0001_a.json", [], when="2026-11-28T00:00:00+00:00")
    assert compare.latest_run(tmp_path) == newest


def test_merge_joins_a_split_matrix_and_refuses_overlaps_and_other_gpus(tmp_path, capsys):
    records = matrix()
    parts = [saved_run(tmp_path / f"{d}.json", [r for r in records if r["dataset"] == d]) for d in DATASETS]
    out = tmp_path / "NVIDIA-H200/Linux-CPython-3.12-64bit/0003_matrix.json"
    assert cli.main(["merge", *map(str, parts), "--out", str(out)]) == 0
    merged = compare.load_run(out)
    assert set(merged.cells) == {(r["dataset"], r["technique"]) for r in records}
    assert compare.gate(merged, compare.load_run(saved_run(tmp_path / "base.json", records)), 0.05) == []
    assert cli.main(["merge", str(parts[0]), str(parts[0]), "--out", str(tmp_path / "x.json")]) == 2
    assert "is in both" in capsys.readouterr().err
    other = saved_run(tmp_path / "other.json", [cell("e2e_nlg", "ss", 500.0)], gpu="NVIDIA A100-SXM4-80GB")
    assert cli.main(["merge", str(parts[0]), str(other), "--out", str(tmp_path / "y.json")]) == 2
    assert "refusing" in capsys.readouterr().err and not (tmp_path / "y.json").exists()


def test_one_run_holds_a_dataset_at_two_shapes_in_columns_of_their_own(tmp_path, capsys):
    small = [cell("e2e_nlg", t, rate, shape="125m") for t, rate in (("naive", 200.0), ("ss", 350.0))]
    # saved before records carried their shape: read from the checkpoint's name (train.checkpoint_dir)
    large = [cell("e2e_nlg", t, rate, model="/ckpt/e2e_nlg-1.3b-ss-03c390ade820", checkpoint="e2e_nlg-1.3b-ss-03c390ade820")
             for t, rate in (("naive", 120.0), ("ss", 130.0))]
    parts = [saved_run(tmp_path / "small.json", small), saved_run(tmp_path / "large.json", large)]
    out = tmp_path / "merged.json"
    assert cli.main(["merge", *map(str, parts), "--out", str(out)]) == 0, capsys.readouterr().err
    merged = compare.load_run(out)
    assert set(merged.cells) == {("e2e_nlg", "naive"), ("e2e_nlg", "ss"), ("e2e_nlg@1.3b", "naive"), ("e2e_nlg@1.3b", "ss")}
    from llmopt import report
    facts = report.markdown([merged])  # the checkpoints by name, the runs it came from
    assert "model 125m, e2e_nlg-1.3b-ss-03c390ade820; 32 prompts" in facts and "merged from `small.json`, `large.json`" in facts
    assert compare.speedups(merged, ("e2e_nlg@1.3b", "ss"))[0] == pytest.approx(130 / 120, rel=0.05)
    # a 1.3b run compares with the 1.3b cells only; a checkpoint made elsewhere keeps the bare name
    alone = compare.load_run(saved_run(tmp_path / "alone.json", [cell("e2e_nlg", "ss", 130.0, shape="1.3b")]))
    assert [row.cell for row in compare.judge(alone, merged).rows] == [("e2e_nlg@1.3b", "ss")]
    assert compare.column(cell("spider", "naive", 1.0, checkpoint="my-finetune")) == "spider"
    # a 1.3b session gated on the merged run: its 125m cells are not selected, so not missing
    from llmopt.options import settings
    from llmopt.pytest_gate import selection
    at_large = settings({"device": "cpu", "model": "1.3b", "datasets": ["e2e_nlg"], "techniques": ["naive", "ss"]})
    judged = compare.judge(compare.load_run(saved_run(tmp_path / "large_now.json", large)), merged, selected=selection(at_large))
    assert judged.failures == [] and "not selected, not gated: e2e_nlg/naive, e2e_nlg/ss" in judged.notes
    assert selection(settings({"device": "cpu", "model": "125m"}))(("e2e_nlg", "ss"))
    assert not selection(settings({"device": "cpu", "model": "125m"}))(("e2e_nlg@1.3b", "ss"))
    assert selection(settings({"device": "cpu", "model": "/some/dir"}))(("e2e_nlg@1.3b", "ss"))  # its shape: unknown here
    assert compare.column(cell("spider", "naive", 1.0, shape=None, checkpoint="spider-2.7b-lm-abc")) == "spider"


# Speed verdicts on per-round samples: what a gate is validated on (README, "Measurement noise
# and the gate": identical reruns pass, an injected slowdown fails).

def noisy_matrix(scale=None, noise=0.01, seed=0, rounds=10, **extra):
    """The matrix with `rounds` per-round rates per cell, spread by `noise` (a relative standard
    deviation: normal quantiles, jittered and ordered by `seed`); `scale` multiplies chosen cells' rates."""
    rng, scale = random.Random(seed), scale or {}
    z = [statistics.NormalDist().inv_cdf((i + 0.5) / rounds) for i in range(rounds)]
    records = []
    for r in matrix():
        rate = r["tokens_per_s"] * scale.get((r["dataset"], r["technique"]), scale.get("all", 1.0))
        rates = [rate * (1 + noise * (x + rng.uniform(-0.3, 0.3))) for x in rng.sample(z, rounds)]
        records.append({**r, "tokens_per_s": statistics.median(rates), "tokens_per_s_rounds": rates, **extra})
    return records


def runs(tmp_path, base_records, cur_records):
    return (compare.load_run(saved_run(tmp_path / "cur.json", cur_records)),
            compare.load_run(saved_run(tmp_path / "base.json", base_records)))


def kinds(judgement):
    return {row.cell: row.kind for row in judgement.rows}


def test_identical_samples_and_a_quiet_rerun_pass(tmp_path):
    cur, base = runs(tmp_path, noisy_matrix(), noisy_matrix())
    assert compare.gate(cur, base) == []
    assert all(row.speed.p > 0.4 for row in compare.judge(cur, base).rows)
    cur, base = runs(tmp_path, noisy_matrix(seed=0), noisy_matrix(seed=1))  # new noise, same speed
    assert compare.gate(cur, base) == []


def test_a_ten_percent_slowdown_over_quiet_rounds_fails_and_names_the_cells_to_remeasure(tmp_path):
    cur, base = runs(tmp_path, noisy_matrix(), noisy_matrix({("spider", "half"): 0.9}, seed=1))
    failures = compare.gate(cur, base)
    assert [(f.cell, f.kind) for f in failures] == [(("spider", "half"), "speed")]
    assert "p=" in failures[0].message and "speed-up over naive -10." in failures[0].message
    text = compare.render(cur, base, failures, 0.05)
    assert "spider/half" in text and "SLOWER" in text and text.endswith("gate: FAILED (1 failure)")
    # re-measured (with its naive cell), the slowdown is gone: the verdict is made on the new samples
    assert compare.suspects(failures) == [("spider", "half"), ("spider", "naive")]
    again = [r for r in noisy_matrix(seed=2) if r["dataset"] == "spider" and r["technique"] in ("half", "naive")]
    remeasured = cur.with_remeasured(again)
    assert remeasured.cells[("spider", "half")] is again[-1] and len(remeasured.cells) == len(cur.cells)
    assert compare.gate(remeasured, base) == []
    with pytest.raises(ValueError, match="never measured"):
        cur.with_remeasured([cell("spider", "ss", 1.0)])


def test_the_same_drop_within_noisy_rounds_passes_marked_not_significant(tmp_path):
    cur, base = runs(tmp_path, noisy_matrix(noise=0.2), noisy_matrix({("spider", "half"): 0.9}, noise=0.2, seed=1))
    judgement = compare.judge(cur, base)
    row = next(r for r in judgement.rows if r.cell == ("spider", "half"))
    assert row.speed.change < -0.05 and row.speed.p > 0.05 and row.kind == "not significant"
    assert judgement.failures == []
    assert "not significant (p=" in compare.render(cur, base, [], 0.05)


def test_too_few_rounds_are_judged_on_medians_and_say_so(tmp_path):
    cur, base = runs(tmp_path, noisy_matrix(rounds=3), noisy_matrix({("spider", "half"): 0.9}, rounds=3, seed=1))
    failures = compare.gate(cur, base)
    assert [(f.cell, f.kind) for f in failures] == [(("spider", "half"), "speed")]
    assert "too few rounds for a test" in failures[0].message
    assert "ok (too few rounds for a test)" in compare.render(cur, base, failures, 0.05)


def test_everything_slower_together_is_a_machine_effect_not_a_failure(tmp_path):
    cur, base = runs(tmp_path, noisy_matrix(), noisy_matrix({"all": 0.85}, seed=1))
    judgement = compare.judge(cur, base)
    assert judgement.failures == []
    assert set(kinds(judgement).values()) == {"machine"}
    text = compare.render(cur, base, [], 0.05)
    assert text.count("the whole run moved together") == 1 and "machine effect" in text
    assert text.endswith("gate: passed")
    # the naive cell alone slower: its own code, not the machine
    cur, base = runs(tmp_path, noisy_matrix(), noisy_matrix({("e2e_nlg", "naive"): 0.85}, seed=1))
    assert [(f.cell, f.kind) for f in compare.gate(cur, base)] == [(("e2e_nlg", "naive"), "speed")]


def with_launch_cost(records, launch_s):
    """`records` with the host's launch cost probed beside each round (`round_launch_s`)."""
    return [{**r, "round_launch_s": [launch_s] * len(r["tokens_per_s_rounds"])} for r in records]


def test_naive_slower_on_a_host_slower_per_launch_is_a_machine_effect(tmp_path):
    # naive 15% slower while the host took 18% longer per launch: tokens/s x launch cost held
    base = with_launch_cost(noisy_matrix(), 6.0e-6)
    cur = with_launch_cost(noisy_matrix({("e2e_nlg", "naive"): 0.85}, seed=1), 7.1e-6)
    cur_run, base_run = runs(tmp_path, base, cur)
    judgement = compare.judge(cur_run, base_run)
    assert judgement.failures == []
    assert kinds(judgement)[("e2e_nlg", "naive")] == "machine"
    assert "tokens/s x the host's launch cost held" in compare.render(cur_run, base_run, [], 0.05)


def test_naive_slower_on_an_unchanged_host_still_fails(tmp_path):
    # the same drop with the host as fast as before: the code
    base = with_launch_cost(noisy_matrix(), 6.0e-6)
    cur = with_launch_cost(noisy_matrix({("e2e_nlg", "naive"): 0.85}, seed=1), 6.1e-6)
    failures = compare.gate(*runs(tmp_path, base, cur))
    assert [(f.cell, f.kind) for f in failures] == [(("e2e_nlg", "naive"), "speed")]
    assert "tokens/s x the host's launch cost -" in failures[0].message


def test_outputs_are_compared_only_between_equal_checkpoint_fingerprints(tmp_path):
    same = {"checkpoint_sha256": "f" * 64}
    changed = noisy_matrix(**same)
    changed[4]["output_sha256"] = "changed"  # dialogsum/naive
    cur, base = runs(tmp_path, noisy_matrix(**same), changed)
    assert [(f.cell, f.kind) for f in compare.gate(cur, base)] == [(("dialogsum", "naive"), "output")]

    cur, base = runs(tmp_path, noisy_matrix(checkpoint_sha256="a" * 64), changed)
    assert compare.gate(cur, base) == []
    text = compare.render(cur, base, [], 0.05)
    notice = [line for line in text.splitlines() if "checkpoint" in line]
    assert notice == ["outputs not compared: the baseline measured another checkpoint "
                      "(baseline aaaaaaaaaaaa vs current ffffffffffff)"]
    assert "not compared" in text.splitlines()[6]  # the same-output column
    cur, base = runs(tmp_path, noisy_matrix(), changed)  # a baseline from before fingerprints
    assert compare.gate(cur, base) == []
    assert "(baseline none vs current ffffffffffff)" in compare.render(cur, base, [], 0.05)


# The harness option end to end: bench/conftest.py as the plugin of an inner pytest session whose
# benchmark only reports canned records, so it runs in well under a second.

BENCH_FILE = """
import pytest
RATES = {rates}

@pytest.mark.parametrize("cell", sorted(RATES))
def test_cell(benchmark, cell, bench):
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    dataset, technique = cell.split("/")
    record = dict(dataset=dataset, technique=technique, model="tiny", num_prompts=2,
                  max_new_tokens=16, tokens_per_s=RATES[cell], output_sha256="h-" + cell)
    benchmark.extra_info.update(record)
    bench.records.append(record)  # what measure.Bench keeps of a measured cell
    # the gate measures a suspected regression again: here it measures the same canned rate
    bench.remeasure = lambda cells: [dict(r) for r in bench.records if (r["dataset"], r["technique"]) in cells]
"""


@pytest.fixture(scope="module")
def bench_conftest():
    """bench/conftest.py as a module of its own, loaded once and before pytester snapshots
    sys.modules (it restores them after each test, and torch cannot be imported twice)."""
    spec = importlib.util.spec_from_file_location("llmopt_bench_conftest", ROOT / "bench" / "conftest.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


class FastMachineInfo:
    """Skips pytest-benchmark's CPU probe (a second per saved run); our conftest adds the GPU facts."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_benchmark_generate_machine_info(self, config):
        return {"node": "test"}


@pytest.fixture
def harness(bench_conftest, pytester):
    plugin = bench_conftest
    storage = pytester.path / ".benchmarks" / plugin.gpu_slug()

    def run(rates, *args):
        pytester.makepyfile(test_bench=BENCH_FILE.format(rates=rates))
        # hypothesis' plugin alone costs seconds per inner session, and nothing here needs it
        return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest", *args,
                                            plugins=[plugin, FastMachineInfo()])

    machine = {}
    plugin.pytest_benchmark_update_machine_info(None, machine)
    return run, storage, machine


def baseline_records(rates):
    return [{"dataset": c.split("/")[0], "technique": c.split("/")[1], "model": "tiny", "num_prompts": 2,
             "max_new_tokens": 16, "tokens_per_s": r, "output_sha256": "h-" + c} for c, r in rates.items()]


def test_harness_gate_latest(harness):
    run, storage, machine = harness
    rates = {"spider/naive": 100.0, "e2e_nlg/naive": 200.0}

    result = run(rates, "--gate-baseline", "latest")  # nothing saved yet: said, not failed
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*llmopt gate: no saved run of * nothing to compare, not gating*"])

    saved = saved_run(storage / "Linux-CPython-3.12-64bit" / "0001_base.json", baseline_records(rates),
                      gpu=machine["gpu_name"])
    result = run({"spider/naive": 99.0, "e2e_nlg/naive": 200.0}, "--gate-baseline", "latest",
                 "--benchmark-save", "ci")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*llmopt gate: against *0001_base.json: cpu*", "*gate: passed*"])
    assert len(list(storage.glob("*/*_ci.json"))) == 1  # saved, and not compared against itself

    result = run({"spider/naive": 80.0, "e2e_nlg/naive": 200.0}, "--gate-baseline", str(saved))
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*llmopt gate*", "*spider/naive*100.0*80.0*-20.0%*SLOWER*", "*gate: FAILED*"])


def test_harness_gate_refuses_another_gpu_before_running(harness, tmp_path):
    run, _, machine = harness
    other = saved_run(tmp_path / "other.json", [], gpu="Some Other GPU")
    result = run({"spider/naive": 1.0}, "--gate-baseline", str(other))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "refusing to compare runs of different GPU models" in result.stderr.str()


def test_a_change_of_software_or_cublas_setting_is_named_beside_the_verdict(tmp_path):
    cur, base = runs(tmp_path, noisy_matrix(), noisy_matrix(seed=1))
    assert compare.software_changes(base, cur) == []  # neither run recorded the setting: unknown, not changed
    base.machine_info.update(torch_version="2.11.0", cublas_workspace_config=":4096:8")
    cur.machine_info.update(torch_version="2.12.0", cublas_workspace_config=None)
    assert compare.software_changes(base, cur) == ["torch 2.11.0 -> 2.12.0", "CUBLAS_WORKSPACE_CONFIG :4096:8 -> unset"]
    assert "the software differs, so speed may too: torch 2.11.0 -> 2.12.0" in compare.render(cur, base, [], 0.05)


def test_a_host_whose_launches_moved_is_named_beside_the_verdict(tmp_path):
    def at(host_op_s, scale=None, seed=0):
        return [dict(r, host_op_s=host_op_s) for r in noisy_matrix(scale, seed=seed)]
    cur, base = runs(tmp_path, at(10e-6), at(10.5e-6, seed=1))
    assert compare.host_change(base, cur) is None  # within HOST_NOTE
    cur, base = runs(tmp_path, at(10e-6), at(20e-6, {"all": 0.5}, seed=1))
    note = compare.host_change(base, cur)
    assert note.startswith("the host's cost per launch moved +100%") and "10.0 -> 20.0 us" in note
    assert note in compare.render(cur, base, compare.gate(cur, base), 0.05)
    cur, base = runs(tmp_path, noisy_matrix(), at(20e-6, seed=1))
    assert compare.host_op_s(base) is None and compare.host_change(base, cur) is None  # an older run: unknown


def test_a_changed_setting_of_a_technique_is_named_beside_the_verdict(tmp_path):
    """A default that changed between the runs (session 19: the captured flash2 step's kernel) is
    named per cell, so a faster or slower cell is read with it; measurements in the config are not
    settings, and a key an older record lacks is unknown."""
    def at(kernel, setup_s, **extra):
        return [dict(r, config={"decode_attention": kernel, "setup_s": setup_s, **extra}) if r["technique"] == "half"
                else r for r in noisy_matrix()]
    cur, base = runs(tmp_path, at("sdpa_efficient", 0.6), at("sdpa_cudnn", 0.7, queue_ahead=False))
    judgement = compare.judge(cur, base)
    changed = [f"{d}/half: decode_attention sdpa_efficient -> sdpa_cudnn" for d in DATASETS]
    assert compare.setting_changes(judgement.rows) == changed
    assert "a technique's settings differ, so its speed may too: " + "; ".join(changed) in judgement.notes
    assert compare.setting_changes(compare.judge(*runs(tmp_path, at("eager", 0.6), at("eager", 0.9))).rows) == []
