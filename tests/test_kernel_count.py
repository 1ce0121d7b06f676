"""llmopt.kernel_count: kernels are counted in a child process, never in the timed one."""

import json
import subprocess
import sys

import pytest
import torch

from llmopt import hardware, kernel_count, measure, options

from helpers import random_prompts, save_tiny_checkpoint
from test_measure import FakeTokenizer, workload

CUDA = torch.cuda.is_available()
VOCAB = 61


def job(device, cells, checkpoint="unused"):
    return kernel_count.Job(str(checkpoint), device, [1, 2, 3], 4, None, cells)


def test_off_cuda_nothing_is_spawned(monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("spawned a child"))
    assert kernel_count.count(job("cpu", [("naive", {}), ("half", {})])) == [None, None]


def answered(stdout, returncode=0, stderr=""):
    return lambda *a, **k: subprocess.CompletedProcess(a[0], returncode, stdout, stderr)


def test_the_childs_last_line_is_its_answer(monkeypatch):
    lines = 'progress noise\n[{"kernels_per_token": 3.0, "kernel_s_per_token": 1e-05}, {"error": "ValueError: no"}]\n'
    monkeypatch.setattr(subprocess, "run", answered(lines))
    with pytest.warns(UserWarning, match="half: kernels not counted .ValueError: no"):
        found = kernel_count.count(job("cuda:0", [("naive", {}), ("half", {})]))
    assert found == [hardware.DeviceProfile(3.0, 1e-05), None]


def test_a_drafting_cells_kernels_are_spread_over_the_workloads_acceptance_not_the_profiled_prompts():
    # the profiled prompt made 4 tokens a step with 400 kernels and 1 ms of kernels a step
    profile = hardware.DeviceProfile(kernels_per_token=100.0, kernel_s_per_token=0.25e-3, tokens_per_step=4.0)
    fields = measure.kernel_fields(profile, tokens_per_s=1000.0, tokens_per_step=2.0)  # the workload: 2 a step
    assert fields["kernels_per_step"] == 400 and fields["kernels_per_token"] == 200
    assert fields["kernel_s_per_token"] == pytest.approx(0.5e-3)
    assert fields["device_busy_fraction"] == pytest.approx(0.5)  # 1 ms of kernels in each 2 ms step
    plain = measure.kernel_fields(hardware.DeviceProfile(250.0, 0.7e-3), tokens_per_s=1000.0)
    assert plain == dict(kernels_per_token=250.0, kernels_per_step=250.0, kernel_s_per_token=0.7e-3,
                         device_busy_fraction=pytest.approx(0.7))
    assert measure.kernel_fields(None, 1000.0)["kernels_per_step"] is None


def test_a_failed_or_hung_child_costs_the_counts_not_the_run(monkeypatch):
    monkeypatch.setattr(subprocess, "run", answered("", 1, "Traceback ...\nRuntimeError: CUPTI unavailable\n"))
    with pytest.warns(UserWarning, match=r"failed \(RuntimeError: CUPTI unavailable\)"):
        assert kernel_count.count(job("cuda:0", [("naive", {})])) == [None]

    def hang(*a, **k):
        raise subprocess.TimeoutExpired(a[0], k["timeout"])
    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.warns(UserWarning, match="ran past"):
        assert kernel_count.count(job("cuda:0", [("naive", {})])) == [None]


def test_the_child_profiles_each_cell_and_names_what_failed(tmp_path):
    save_tiny_checkpoint(tmp_path, VOCAB)
    device = "cuda" if CUDA else "cpu"
    request = job(device, [["naive", {}], ["no_such_technique", {}]], tmp_path)
    done = subprocess.run([sys.executable, "-m", "llmopt.kernel_count"], input=json.dumps(request.__dict__),
                          capture_output=True, text=True, check=True)
    counted, failed = json.loads(done.stdout.strip().splitlines()[-1])
    if CUDA:
        assert counted["kernels_per_token"] >= 1 and counted["kernel_s_per_token"] > 0
        assert counted["tokens_per_step"] == 1.0  # plain decoding: a token a step
    else:
        assert counted is None  # a CPU runs ops, not kernels
    assert "no_such_technique" in failed["error"]


def tiny_session(checkpoint, **given) -> measure.Bench:
    """A Bench of naive and half on a tiny checkpoint (two prompts, one round each)."""
    save_tiny_checkpoint(checkpoint, VOCAB)
    run = options.settings({"datasets": ["e2e_nlg"], "techniques": ["naive", "half"],
                            "device": "cuda" if CUDA else "cpu", "rounds": 1, "min_time": 0.0, "max_time": 0.0,
                            "round_time": 0.0, **given})
    bench = measure.Bench(run)
    base = workload([[0]] * 2)
    bench._workloads["e2e_nlg"] = measure.Workload("e2e_nlg", "tiny", "lm", checkpoint, base.examples,
                                                   random_prompts(2, VOCAB, 6), 4, 0, FakeTokenizer())
    return bench


def test_a_session_never_profiles_in_its_own_process(tmp_path, monkeypatch):
    # a profiler session can slow what its process times after it (pytorch/pytorch#144455)
    monkeypatch.setattr(hardware, "device_profile", lambda *a, **k: pytest.fail("profiled in the timed process"))
    records = list(tiny_session(tmp_path).measure_dataset("e2e_nlg", ["naive", "half"]).values())
    for record in records:
        if CUDA:
            assert record["kernels_per_token"] >= 1 and 0 < record["device_busy_fraction"] <= 1.5
        else:
            assert record["kernels_per_token"] is None and record["device_busy_fraction"] is None


def test_kernel_count_off_asks_no_child(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_count, "count", lambda job: pytest.fail("asked the child"))
    bench = tiny_session(tmp_path, kernel_count="off")
    for record in bench.measure_dataset("e2e_nlg", ["naive", "half"]).values():
        assert record["kernels_per_token"] is None and record["device_busy_fraction"] is None
