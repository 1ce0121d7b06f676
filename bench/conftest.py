"""The benchmark harness: fixtures over dataset x technique, options, and GPU facts for machine_info.

On a GPU it defaults to the 125m shape trained per dataset, 32 prompts, 128 new tokens; on a CPU
(CI) to a smoke run on the tiny shape with a couple of prompts."""

from __future__ import annotations

import platform
import re

import pytest
import torch
import transformers

from llmopt import data, measure
from llmopt.strategies import STRATEGIES

GPU = torch.cuda.is_available()
DEFAULT_TECHNIQUES = "hf,naive,half"


def pytest_addoption(parser):
    group = parser.getgroup("llmopt", "llmopt benchmark")
    group.addoption("--datasets", default=",".join(data.DATASETS), help="comma-separated datasets (default: all)")
    group.addoption("--techniques", default=DEFAULT_TECHNIQUES,
                    help=f"comma-separated techniques (default {DEFAULT_TECHNIQUES}; known: {', '.join(sorted(STRATEGIES))})")
    group.addoption("--model", default="125m" if GPU else "tiny",
                    help="a shape trained per dataset (cached), a checkpoint directory or a hub id")
    group.addoption("--num-prompts", type=int, default=32 if GPU else 2, help="evaluation prompts per dataset")
    group.addoption("--max-new-tokens", type=int, default=128 if GPU else 16)
    group.addoption("--rounds", type=int, default=3 if GPU else 1, help="timed passes over the prompts")
    group.addoption("--data-dir", default=None, help=f"local copy of the datasets (else ${data.DATA_DIR_ENV}, else the hub)")
    group.addoption("--device", default=measure.default_device())


def _list(config, name):
    return [x.strip() for x in config.getoption(name).split(",") if x.strip()]


def pytest_configure(config):
    # Saved runs are grouped by GPU model, so --benchmark-compare only meets runs of the same GPU.
    if getattr(config.option, "benchmark_storage", None) == "file://./.benchmarks":
        config.option.benchmark_storage = f"file://./.benchmarks/{gpu_slug()}"


def gpu_slug() -> str:
    name = torch.cuda.get_device_name(0) if GPU else "cpu"
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-")


def pytest_generate_tests(metafunc):
    if "dataset" in metafunc.fixturenames:
        datasets = _list(metafunc.config, "--datasets")
        for name in datasets:
            if name not in data.DATASETS:
                raise pytest.UsageError(f"unknown dataset {name!r}; known: {', '.join(data.DATASETS)}")
        metafunc.parametrize("dataset", datasets, scope="session")
    if "technique" in metafunc.fixturenames:
        techniques = _list(metafunc.config, "--techniques")
        for name in techniques:
            if name not in STRATEGIES:
                raise pytest.UsageError(f"unknown technique {name!r}; known: {', '.join(sorted(STRATEGIES))}")
        metafunc.parametrize("technique", techniques)


@pytest.fixture(scope="session")
def options(pytestconfig):
    get = pytestconfig.getoption
    return dict(model=get("--model"), num_prompts=get("--num-prompts"), max_new_tokens=get("--max-new-tokens"),
                rounds=get("--rounds"), data_dir=get("--data-dir"), device=get("--device"))


@pytest.fixture(scope="session")
def workloads(options):
    """dataset -> Workload, built (and the checkpoint trained, if missing) once per session."""
    cache = {}

    def get(dataset):
        if dataset not in cache:
            cache[dataset] = measure.build_workload(
                dataset, options["model"], options["num_prompts"], options["max_new_tokens"],
                data_dir=options["data_dir"], device=options["device"])
        return cache[dataset]
    return get


@pytest.fixture(scope="session")
def plain_outputs(workloads, options):
    """(dataset, dtype) -> plain greedy outputs, computed once: the reference for match_naive."""
    cache = {}

    def get(dataset, dtype):
        if (dataset, dtype) not in cache:
            cache[dataset, dtype] = measure.plain_outputs(workloads(dataset), dtype, options["device"])
        return cache[dataset, dtype]
    return get


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["gpu_name"] = torch.cuda.get_device_name(0) if GPU else None
    machine_info["gpu_count"] = torch.cuda.device_count()
    machine_info["driver_version"] = _driver_version()
    machine_info["cuda_version"] = torch.version.cuda
    machine_info["torch_version"] = torch.__version__
    machine_info["transformers_version"] = transformers.__version__
    machine_info["python_version"] = platform.python_version()


def _driver_version() -> str | None:
    if not GPU:
        return None
    try:
        import pynvml  # shipped with torch's CUDA builds as nvidia-ml-py, when present

        pynvml.nvmlInit()
        return pynvml.nvmlSystemGetDriverVersion()
    except Exception:
        import subprocess

        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
        except (OSError, IndexError, subprocess.SubprocessError):
            return None
