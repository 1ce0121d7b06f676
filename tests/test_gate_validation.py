"""scripts/gate_validation.py's analysis, on synthetic saved runs (its GPU runs are the job's)."""

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import load_script
from llmopt import compare, measure

ROOT = Path(__file__).resolve().parents[1]
gate_validation = load_script("gate_validation")


def run(path, naive_rounds, ss_rounds, other_cpu=None, sha="x"):
    def record(technique, rounds):
        r = {"dataset": "e2e_nlg", "technique": technique, "model": "125m", "num_prompts": 32,
             "max_new_tokens": 128, "tokens_per_s": sorted(rounds)[len(rounds) // 2], "tokens_per_s_rounds": rounds,
             "output_sha256": sha, "checkpoint_sha256": "c", "round_wall_s": [128 / x for x in rounds]}
        if other_cpu is not None:
            r |= {"round_other_cpu_s": other_cpu, "round_steal_s": [0.0] * len(rounds),
                  "round_involuntary_switches": [1] * len(rounds), "host_op_s": 8e-6 if any(other_cpu) else 4e-6}
        return {"name": f"test_throughput[e2e_nlg-{technique}]", "extra_info": r}
    path.write_text(json.dumps({"machine_info": {"gpu_name": "NVIDIA H200"}, "datetime": "2026-12-04T00:00:00",
                                "benchmarks": [record("naive", naive_rounds), record("ss", ss_rounds)]}))
    return path


def test_cpu_list_reads_tasksets_notation_and_refuses_what_is_not_there():
    cpus = sorted(os.sched_getaffinity(0))
    assert gate_validation.cpu_list(f"{cpus[0]}-{cpus[0]}") == {cpus[0]}
    assert gate_validation.cpu_list(",".join(map(str, cpus))) == set(cpus)
    for bad in ("x", "2-", "100000"):
        with pytest.raises(Exception, match="CPU"):
            gate_validation.cpu_list(bad)


def test_machine_info_says_which_cpus_the_run_had():
    assert measure.machine_facts()["cpu_affinity"] == sorted(os.sched_getaffinity(0))


def test_analysis_counts_false_alarms_spreads_by_statistic_and_host_correlation(tmp_path):
    slow_rounds_when_busy = [100, 100, 50, 100, 100, 100, 100, 100]  # a round at half speed
    busy = [0.0, 0.0, 3.0, 0.0, 0.1, 0.0, 0.0, 0.0]
    runs = [run(tmp_path / "a.json", slow_rounds_when_busy, [200.0] * 8, busy),
            run(tmp_path / "b.json", [104.0] * 8, [204.0] * 8, [0.0] * 8)]
    changed = run(tmp_path / "c.json", [100.0] * 8, [200.0] * 8, sha="y")
    result = gate_validation.analyse(tmp_path, runs, [], None, changed, "e2e_nlg/naive", "e2e_nlg/ss")
    assert result["ordered_pairs"] == 2 and result["false_failures"] == 0
    assert result["output_change"]["caught"] == 2
    spreads = result["statistic_spreads"]["e2e_nlg/naive"]
    assert spreads["fastest round"] == pytest.approx(0.04) and spreads["median of all rounds"] == pytest.approx(0.04)
    ups = result["speedup_spreads"]["e2e_nlg/ss"]  # ss / naive: run a 2.0 (4.0 in its slow cycle), run b 204 / 104
    expected = 2.0 / (204 / 104) - 1
    assert ups["median of paired ratios"] == pytest.approx(expected) and ups["ratio of medians"] == pytest.approx(expected)
    assert "e2e_nlg/naive" not in result["speedup_spreads"]
    assert result["host_correlations"]["e2e_nlg/naive"]["other_cpu_s"] > 0.5
    assert result["host_correlations"]["e2e_nlg/naive"]["steal_s"] is None  # a counter that never moved
    load = result["host_load_per_run"]
    assert set(load) == {"a", "b"} and load["a"]["other_cpu_s"] > load["b"]["other_cpu_s"] == 0
    assert load["a"]["launch_us"] == pytest.approx(8) and load["b"]["launch_us"] == pytest.approx(4)
    text = gate_validation.markdown(result)
    assert "| e2e_nlg/naive | 4.0% | 4.0% | 4.0% |" in text and "other_cpu_s" in text


def test_the_gate_on_the_h100_runs_of_session_11_offline(tmp_path):
    """scripts/gate_offline.py on three identical GPU runs that the launch probe was recorded in:
    without the probe naive fails twice on identical code (−21% and −11%, the host slower per launch);
    with it, never. The catches of a synthetic slowdown are what these runs' noise lets through."""
    offline = load_script("gate_offline")
    runs = sorted((ROOT / "docs/results/NVIDIA-H100-80GB-HBM3/session11/runs").glob("identical_*.json"))
    out = tmp_path / "offline.md"
    offline.main(str(out), *map(str, runs))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.read_text().splitlines() if line.startswith("| ") and "of 6" in line}
    assert rows["without the probe"][0] == "2 of 6" and rows["the gate"][0] == "0 of 6"
    assert rows["eager on x launch cost"][:2] == ["0 of 6", "6 of 6"]
