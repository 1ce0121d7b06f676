"""Every command the README documents, run end to end as a user runs it: the real entry points in a
subprocess, on the CPU, the tiny shape and the local datasets. A green unit suite once hid a main
command (`llmopt bench`) that crashed after all its work; these tests are what catches that.

Checkpoints are trained into $LLMOPT_CACHE_DIR (CI gives a fresh one), so the tiny models these
tests train are the ones the benchmark smoke run reuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmopt.models.gpt_neo import SHAPES

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLMOPT_DATA_DIR") or ROOT.parent / "shared" / "datasets")
# the README's main command, with only the data, model and size options added
MAIN = ["llmopt", "bench"]
SMALL = ["--model", "tiny", "--num-prompts", "2", "--max-new-tokens", "8", "--rounds", "1"]
GPU = __import__("torch").cuda.is_available()

pytestmark = pytest.mark.skipif(not (DATA / "e2e_nlg").is_dir(), reason=f"no local datasets at {DATA}")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = os.environ.get("LLMOPT_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # an outer pytest's own
    return {**clean, "LLMOPT_DATA_DIR": str(DATA), "LLMOPT_CACHE_DIR": cache,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def run(args, env, cwd=ROOT, timeout=900):
    """A command line as the user types it; `llmopt` is the installed entry point's module."""
    if args[0] == "llmopt":
        args = [sys.executable, "-m", "llmopt", *args[1:]]
    elif args[0] == "pytest":
        args = [sys.executable, "-m", "pytest", *args[1:]]
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def no_traceback(result):
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]


# -- llmopt bench, train, compare, merge, report --------------------------------------------------

@pytest.fixture(scope="module")
def bench_json(env, tmp_path_factory):
    """The README's main command on every dataset and default technique, with --json."""
    out = tmp_path_factory.mktemp("bench") / "records.json"
    result = run([*MAIN, *(SMALL if GPU else []), "--json", str(out), "--progress"], env)  # CPU defaults: tiny
    assert result.returncode == 0, result.stderr[-3000:]
    return result, out


def test_the_stock_references_run_beside_the_peers_they_mirror(env, tmp_path):
    """hf+pld and hf+sps (transformers' prompt lookup and assisted generation) in a benchmark: hf+sps
    gets the draft the session trains for sps, and both emit plain greedy's tokens."""
    out = tmp_path / "peers.json"
    result = run([*MAIN, "--datasets", "e2e_nlg", "--techniques", "naive,sps,hf+pld,hf+sps", *SMALL,
                  "--json", str(out)], env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = {r["technique"]: r for r in json.loads(out.read_text())}
    assert all(r["match_naive"] == 1.0 for r in records.values())
    assert records["hf+sps"]["config"]["draft"] == records["sps"]["config"]["draft"]
    assert records["hf+sps"]["extra_parameters"] == records["sps"]["extra_parameters"] > 0
    assert records["hf+pld"]["extra_parameters"] == 0 and records["hf+pld"]["mean_accepted_tokens"] >= 1
    # the bandwidth floor is reckoned against the target's weights, the drafting methods' too
    assert records["sps"]["weight_bytes"] == records["naive"]["weight_bytes"] > 0


def test_medusa_heads_that_share_the_base_lm_head_are_trained_when_asked_for(env, tmp_path):
    """`share_head` (the issue's "report both"): the benchmark trains heads ending in the base's LM
    head instead of Medusa-1's vocabulary head each, and the record says which it measured."""
    out = tmp_path / "shared.json"
    result = run([*MAIN, "--datasets", "e2e_nlg", "--techniques", "naive,medusa", *SMALL, "--json", str(out),
                  "--strategy-options", '{"medusa": {"share_head": true}}'], env)
    assert result.returncode == 0, result.stderr[-3000:]
    medusa = next(r for r in json.loads(out.read_text()) if r["technique"] == "medusa")
    assert medusa["config"]["share_head"] is True and medusa["match_naive"] == 1.0
    hidden, gamma = SHAPES["tiny"]["hidden_size"], medusa["config"]["gamma"]
    assert medusa["extra_parameters"] == gamma * (hidden * hidden + hidden)  # a residual block each, no head


BAD_TRAIN = [(["--objective", "lm", "--share-head"], "--share-head needs --objective medusa"),
             (["--objective", "lm", "--gamma", "3"], "--gamma needs --objective ss or medusa"),
             (["--objective", "medusa", "--stream-layers", "2"], "--stream-layers needs --objective ss"),
             (["--objective", "lm", "--stream-lr-scale", "10"], "--stream-lr-scale needs --objective ss"),
             (["--save-every", "-1"], "--save-every: must be 0 or more, got -1")]


@pytest.mark.parametrize("args,message", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_options_are_one_line_and_exit_2(args, message, capsys):
    from llmopt import cli

    assert cli.main(["train", "--dataset", "e2e_nlg", "--base", "x", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_train_hands_save_every_to_the_trainer(monkeypatch):
    from llmopt import cli, train as training

    seen = {}

    def fake_ensure_trained(dataset, recipe, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")  # the command's one-line error, exit 2

    monkeypatch.setattr(training, "ensure_trained", fake_ensure_trained)
    assert cli.main(["train", "--dataset", "e2e_nlg", "--shape", "tiny", "--save-every", "0"]) == 2
    assert seen["save_every"] == 0


def test_llmopt_bench_prints_the_table_and_writes_json(bench_json):
    result, out = bench_json
    no_traceback(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "| technique | spider | dialogsum | e2e_nlg |"
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert list(rows) == ["hf", "naive", "half", "ss"]
    assert "×" in rows["ss"] and "–" not in rows["ss"]  # measured on every dataset, with its speed-up
    assert "cell 1/12: spider hf" in result.stderr and "cell 12/12: e2e_nlg ss" in result.stderr
    records = json.loads(out.read_text())
    assert [(r["dataset"], r["technique"]) for r in records][:4] == [("spider", t) for t in ("hf", "naive", "half", "ss")]
    assert len(records) == 12
    for r in records:
        assert r["tokens_per_s"] > 0 and 0 < r["generated_tokens"] <= 2 * 16
        assert len(r["output_sha256"]) == 64 and r["num_prompts"] == 2
        if r["dtype"] == "float32":
            assert r["match_naive"] == 1.0, r
    assert all(r["mean_accepted_tokens"] >= 1 for r in records if r["technique"] == "ss")


def test_llmopt_train_reports_the_checkpoint_and_quality(env):
    result = run(["llmopt", "train", "--dataset", "e2e_nlg", "--shape", "tiny", "--objective", "ss", "--samples", "2"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = Path(result.stdout.split("checkpoint: ")[1].split()[0])
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "spec_stream.safetensors").is_file()
    assert "rouge_l on 2 evaluation prompts:" in result.stdout


@pytest.fixture(scope="module")
def saved_runs(env, tmp_path_factory):
    """pytest bench/ with --benchmark-save twice (E2E, then Spider) into a storage of their own."""
    store = tmp_path_factory.mktemp("store")
    common = ["pytest", "bench", "-q", *SMALL, "--techniques", "naive,ss", f"--benchmark-storage=file://{store}"]
    first = run([*common, "--datasets", "e2e_nlg", "--benchmark-save", "e2e"], env)
    assert first.returncode == 0, first.stdout[-3000:]
    second = run([*common, "--datasets", "spider", "--benchmark-save", "spider"], env)
    assert second.returncode == 0, second.stdout[-3000:]
    return store, first, sorted(store.glob("*/*.json"))


def test_pytest_bench_saves_a_run_and_shows_tokens_per_s(saved_runs):
    _, first, files = saved_runs
    assert [f.name for f in files] == ["0001_e2e.json", "0002_spider.json"]
    assert "llmopt: tokens/s (speed-up over naive)" in first.stdout
    assert "| ss |" in first.stdout and "2 passed" in first.stdout
    doc = json.loads(files[0].read_text())
    assert [(b["extra_info"]["dataset"], b["extra_info"]["technique"]) for b in doc["benchmarks"]] == [
        ("e2e_nlg", "naive"), ("e2e_nlg", "ss")]
    assert {"gpu_name", "torch_version", "transformers_version"} <= set(doc["machine_info"])


def test_pytest_bench_compare_and_gate_against_a_saved_run(saved_runs, env):
    store, _, files = saved_runs
    common = ["pytest", "bench", "-q", *SMALL, "--techniques", "naive,ss", f"--benchmark-storage=file://{store}"]
    compared = run([*common, "--datasets", "e2e_nlg", "--benchmark-compare=0001"], env)
    assert compared.returncode == 0, compared.stdout[-3000:]
    assert "0001_e2e" in compared.stdout  # pytest-benchmark's own comparison table
    # the gate on a selection of the baseline's cells: what was not selected is not missing
    gated = run([*common, "--datasets", "e2e_nlg", "--techniques", "naive", "--gate-baseline", str(files[0]),
                 "--gate-tolerance", "0.9"], env)
    assert "llmopt gate" in gated.stdout and "gate: passed" in gated.stdout, gated.stdout[-3000:]
    assert gated.returncode == 0


def test_the_gate_fails_closed(saved_runs, env):
    store, _, files = saved_runs
    common = ["pytest", "bench", "-q", *SMALL, "--datasets", "e2e_nlg", "--techniques", "naive,ss",
              f"--benchmark-storage=file://{store}", "--gate-baseline", str(files[0])]
    nothing = run([*common, "-k", "no_such_cell"], env)  # compared no cell
    assert nothing.returncode == 1
    assert "nothing compared" in nothing.stdout and "gate: FAILED" in nothing.stdout, nothing.stdout[-3000:]
    missing = run([*common, "-k", "not ss"], env)  # asked for ss, did not measure it
    assert missing.returncode == 1
    assert "missing" in missing.stdout and "e2e_nlg/ss" in missing.stdout, missing.stdout[-3000:]


def test_llmopt_compare_merge_and_report(saved_runs, env, tmp_path):
    _, _, (e2e, spider) = saved_runs
    same = run(["llmopt", "compare", str(e2e), str(e2e)], env)
    assert same.returncode == 0 and "gate: passed" in same.stdout, same.stdout + same.stderr
    for slowed, verdict, code in ((("naive", "ss"), "machine effect", 0), (("ss",), "SLOWER", 1)):
        doc = json.loads(e2e.read_text())
        for b in doc["benchmarks"]:  # the same run with cells 30% slower
            info = b["extra_info"]
            if info["technique"] in slowed:
                info["tokens_per_s"] *= 0.7
                info["tokens_per_s_rounds"] = [r * 0.7 for r in info["tokens_per_s_rounds"]]
                if "naive" not in slowed and "speedup_over_naive" in info:  # measured against naive's rounds
                    info["speedup_over_naive"] *= 0.7
                    info["speedup_over_naive_rounds"] = [r * 0.7 for r in info["speedup_over_naive_rounds"]]
        slow = tmp_path / "slow.json"
        slow.write_text(json.dumps(doc))
        result = run(["llmopt", "compare", str(e2e), str(slow)], env)
        assert result.returncode == code and verdict in result.stdout, result.stdout + result.stderr

    merged = tmp_path / "merged.json"
    result = run(["llmopt", "merge", str(e2e), str(spider), "--out", str(merged)], env)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(merged.read_text())["benchmarks"]) == 4

    out = tmp_path / "report"
    result = run(["llmopt", "report", str(merged), "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    report = (out / "benchmarks.md").read_text()
    assert "E2E-NLG" in report and "Spider" in report and "ss" in report
    assert list(out.glob("*.png"))


@pytest.mark.parametrize("command", ["", "train", "bench", "compare", "merge", "report"])
def test_every_command_explains_itself(command, capsys):
    from llmopt import cli

    assert cli.main([command, "--help"] if command else ["--help"]) == 0
    assert "usage: llmopt" in capsys.readouterr().out


def test_pytest_bench_help_lists_the_benchmark_options(env):
    result = run(["pytest", "bench", "--help"], env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for option in ("--techniques", "--min-time", "--interleave", "--gate-baseline", "--gate-tolerance"):
        assert option in result.stdout


# -- bad input: one line, exit 2 (pytest: its own usage error), before any work ------------------

BAD_CLI = [
    (["--num-prompts", "0"], "--num-prompts: must be at least 1"),
    (["--num-prompts", "-1"], "--num-prompts: must be at least 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
    (["--rounds", "0"], "--rounds: must be at least 1"),
    (["--strategy-options", '{"ss": {"topkk": 2}}'], "ss: unknown option 'topkk'; accepted:"),
    (["--strategy-options", '{"ss": {"topk": "a,b"}}'], "topk is a positive whole number per depth"),
    (["--strategy-options", "{bad"], "--strategy-options: not JSON"),
    (["--dataset", "foo"], "unknown dataset 'foo'"),
    (["--technique", "foo"], "unknown technique 'foo'"),
    (["--data-dir", "/no/such/dir"], "/no/such/dir: no such directory"),
    (["--objective", "lm", "--technique", "ss"], "ss needs a checkpoint trained with speculative streams"),
]


@pytest.mark.parametrize("args,message", BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_bad_bench_input_is_one_line_and_exit_2(args, message, capsys):
    from llmopt import cli

    assert cli.main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_cuda_without_a_gpu_is_refused_in_one_line(capsys):
    import torch

    from llmopt import cli

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli.main(["bench", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def trained(env):
    """The tiny lm and ss checkpoints of E2E (trained or taken from the cache)."""
    paths = {}
    for objective in ("lm", "ss"):
        result = run(["llmopt", "train", "--dataset", "e2e_nlg", "--shape", "tiny", "--objective", objective,
                      "--samples", "0"], env)
        assert result.returncode == 0, result.stderr[-3000:]
        paths[objective] = Path(result.stdout.split("checkpoint: ")[1].split()[0])
    return paths


def test_damaged_checkpoints_are_named_before_any_work(trained, env, tmp_path):
    import shutil

    truncated = tmp_path / "truncated"
    shutil.copytree(trained["ss"], truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = run([*MAIN, "--model", str(truncated), "--dataset", "e2e_nlg"], env)
    assert result.returncode == 2 and "model.safetensors is damaged or truncated" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    # an lm checkpoint cannot serve ss: refused before hf, naive and half are measured
    result = run([*MAIN, "--model", str(trained["lm"]), "--dataset", "e2e_nlg", "--progress"], env)
    assert result.returncode == 2 and "no speculative streams" in result.stderr
    assert "cell 1/" not in result.stderr, result.stderr


BAD_PYTEST = [
    (["--datasets", "foo"], "unknown dataset 'foo'"),
    (["--techniques", "foo"], "unknown technique 'foo'"),
    (["--strategy-options", "{bad"], "not JSON"),
    (["--strategy-options", '{"ss": {"topkk": 2}}'], "unknown option 'topkk'"),
    (["--data-dir", "/no/such/dir"], "no such directory"),
    (["--rounds", "0"], "must be at least 1"),
    (["-n", "2", "--dist", "loadscope"], "use --dist loadgroup"),  # a dataset's cells stay on one worker
]


@pytest.mark.parametrize("args,message", BAD_PYTEST, ids=[" ".join(a) for a, _ in BAD_PYTEST])
def test_bad_pytest_bench_input_is_a_usage_error(args, message, env):
    result = run(["pytest", "bench", "-q", *args], env, timeout=300)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:] + result.stderr[-2000:]
    assert message in result.stderr
    no_traceback(result)
    assert len(result.stderr.strip().splitlines()) <= 4  # pytest's usage line, the error, its ini/rootdir
