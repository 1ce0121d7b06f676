"""`pytest bench -n N` end to end, as a user runs it (subprocesses, like tests/test_commands.py): on
the CPU two workers, each measuring whole datasets; the controller saves ONE pytest-benchmark run
of every cell and gates it once."""

from __future__ import annotations

import json
import os

import pytest

from test_commands import DATA, ROOT, env, no_traceback, run  # noqa: F401 - env is a fixture

SMALL = ["--model", "tiny", "--num-prompts", "2", "--max-new-tokens", "8", "--rounds", "1"]
XDIST = ["pytest", "bench", "-q", "-n", "2", *SMALL, "--datasets", "e2e_nlg,spider", "--techniques", "naive,ss"]

pytestmark = pytest.mark.skipif(not (DATA / "e2e_nlg").is_dir(), reason=f"no local datasets at {DATA}")


@pytest.fixture(scope="module")
def saved(env, tmp_path_factory):  # noqa: F811
    store = tmp_path_factory.mktemp("store")
    result = run([*XDIST, "--benchmark-save", "xd", f"--benchmark-storage=file://{store}"], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, sorted(store.glob("**/*.json"))


def test_one_saved_run_holds_every_workers_cells(saved, env, tmp_path):  # noqa: F811
    result, files = saved
    no_traceback(result)
    assert [f.name for f in files] == ["0001_xd.json"]
    assert "llmopt: tokens/s (speed-up over naive)" in result.stdout and "4 passed" in result.stdout
    doc = json.loads(files[0].read_text())
    cells = {(b["extra_info"]["dataset"], b["extra_info"]["technique"]): b for b in doc["benchmarks"]}
    assert sorted(cells) == [(d, t) for d in ("e2e_nlg", "spider") for t in ("naive", "ss")]
    for b in doc["benchmarks"]:  # pytest-benchmark's own entry, its stats the rounds llmopt timed
        assert b["stats"]["rounds"] == len(b["extra_info"]["round_wall_s"]) == 1
        assert b["extra_info"]["gpu_index"] is None
    workers = {d: {cells[d, t]["extra_info"]["xdist_worker"] for t in ("naive", "ss")} for d in ("e2e_nlg", "spider")}
    assert all(len(w) == 1 and w <= {"gw0", "gw1"} for w in workers.values()), workers  # a dataset: one worker
    assert doc["machine_info"]["gpus_used"] == [] and doc["machine_info"]["xdist_workers"] == 2

    report = run(["llmopt", "report", str(files[0]), "--out", str(tmp_path / "report")], env)
    assert report.returncode == 0, report.stderr[-3000:]


def test_the_controller_gates_every_cell_once(saved, env):  # noqa: F811
    _, (baseline,) = saved
    same = run([*XDIST, "--gate-baseline", str(baseline), "--gate-tolerance", "0.9"], env)
    assert same.returncode == 0, same.stdout[-3000:]
    assert same.stdout.count("gate: passed") == 1, same.stdout[-3000:]

    # ss made 50% slower on its worker: caught, without re-measuring (the workers are gone)
    slow = run([*XDIST, "-p", "gate_inject", "--gate-baseline", str(baseline), "--gate-tolerance", "0.05"],
               {**env, "GATE_INJECT": "slow:ss:0.5",
                "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), env["PYTHONPATH"]])})
    assert slow.returncode == 1, slow.stdout[-3000:]
    assert "gate: FAILED" in slow.stdout and "not re-measuring" in slow.stdout, slow.stdout[-3000:]
    assert "e2e_nlg/ss" in slow.stdout and "spider/ss" in slow.stdout


def test_more_workers_than_gpus_is_refused_in_one_line(env):  # noqa: F811
    result = run(["pytest", "bench", "-q", "-n", "3", "--gpus", "0,1"], env, timeout=300)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:] + result.stderr[-2000:]
    assert "-n 3 needs 3 GPUs, --gpus lists 2" in result.stderr
    no_traceback(result)
    assert len(result.stderr.strip().splitlines()) <= 4
