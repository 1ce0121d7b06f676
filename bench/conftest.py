"""The benchmark harness: fixtures over dataset x technique, options, and GPU facts for machine_info.

On a GPU it defaults to the 125m shape trained per dataset, 32 prompts, 128 new tokens; on a CPU
(CI) to a smoke run on the tiny shape with a couple of prompts."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
import transformers

from llmopt import compare, data, measure
from llmopt.report import slug
from llmopt.strategies import STRATEGIES, get_strategy, validate_technique

GPU = torch.cuda.is_available()
DEFAULT_TECHNIQUES = "hf,naive,half,ss"


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
    group.addoption("--gate-baseline", default=None, metavar="PATH|latest",
                    help="fail the session when a cell's tokens/s falls more than --gate-tolerance below this saved "
                         "run, or its output hash changes; 'latest': the newest saved run of this GPU model")
    group.addoption("--gate-tolerance", type=float, default=0.05,
                    help="allowed tokens/s drop per cell, as a fraction (default 0.05)")
    group.addoption("--strategy-options", default=None, metavar="JSON",
                    help='options per technique part, e.g. \'{"ss": {"topk": "2,1,1,1"}, "graphs": {"runtime": '
                         '"torch.compile"}}\': every technique containing that part gets them')
    group.addoption("--objective", default=None,
                    help="training objective of the shape checkpoints: lm or ss (default: ss when a technique needs "
                         "speculative streams, else lm); every technique runs on the same checkpoint")


def _list(config, name):
    return [x.strip() for x in config.getoption(name).split(",") if x.strip()]


def pytest_configure(config):
    # Saved runs are grouped by GPU model, so --benchmark-compare only meets runs of the same GPU.
    if getattr(config.option, "benchmark_storage", None) == "file://./.benchmarks":
        config.option.benchmark_storage = f"file://./.benchmarks/{gpu_slug()}"


def gpu_slug() -> str:
    """The storage folder of this GPU model's saved runs (the same name `llmopt report` uses)."""
    return slug(torch.cuda.get_device_name(0) if GPU else "cpu")


def pytest_generate_tests(metafunc):
    if "dataset" in metafunc.fixturenames:
        datasets = _list(metafunc.config, "--datasets")
        for name in datasets:
            if name not in data.DATASETS:
                raise pytest.UsageError(f"unknown dataset {name!r}; known: {', '.join(data.DATASETS)}")
        metafunc.parametrize("dataset", datasets, scope="session")
    if "technique" in metafunc.fixturenames:
        techniques = _list(metafunc.config, "--techniques")
        try:
            table = measure.parse_strategy_options(metafunc.config.getoption("--strategy-options"))
            for name in techniques:  # a bad name or option stops the session before any work
                validate_technique(name)
                get_strategy(name, **measure.strategy_options(name, table))
        except (ValueError, TypeError) as exc:
            raise pytest.UsageError(str(exc)) from None
        metafunc.parametrize("technique", techniques)


@pytest.fixture(scope="session")
def options(pytestconfig):
    get = pytestconfig.getoption
    return dict(model=get("--model"), num_prompts=get("--num-prompts"), max_new_tokens=get("--max-new-tokens"),
                rounds=get("--rounds"), data_dir=get("--data-dir"), device=get("--device"),
                strategy_options=measure.parse_strategy_options(get("--strategy-options")),
                objective=get("--objective") or measure.objective_for(_list(pytestconfig, "--techniques")))


@pytest.fixture(scope="session")
def workloads(options):
    """dataset -> Workload, built (and the checkpoint trained, if missing) once per session."""
    cache = {}

    def get(dataset):
        if dataset not in cache:
            cache[dataset] = measure.build_workload(
                dataset, options["model"], options["num_prompts"], options["max_new_tokens"],
                data_dir=options["data_dir"], device=options["device"], objective=options["objective"])
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
    machine_info["driver_version"] = measure.driver_version()
    machine_info["cuda_version"] = torch.version.cuda
    machine_info["torch_version"] = torch.__version__
    machine_info["transformers_version"] = transformers.__version__
    machine_info["python_version"] = platform.python_version()


# The regression gate (--gate-baseline): llmopt.compare.gate of this run against a saved run.

@dataclass
class _Gate:
    baseline: compare.Run | None
    machine_info: dict
    note: str  # what is gated against, or why nothing is
    summary: str | None = None
    failed: bool = False


_GATE = pytest.StashKey[_Gate]()


def pytest_sessionstart(session):
    # Resolved before pytest-benchmark saves this run, so that `latest` never means this very run;
    # a bad baseline stops the session before any benchmark runs.
    config = session.config
    choice = config.getoption("--gate-baseline")
    if choice is None:
        return
    tolerance = config.getoption("--gate-tolerance")
    if not 0 <= tolerance < 1:
        raise pytest.UsageError(f"--gate-tolerance is a fraction in [0, 1), got {tolerance}")
    machine_info = {}
    pytest_benchmark_update_machine_info(config, machine_info)
    this = compare.Run("this machine", machine_info, "now", [])
    path = Path(choice) if choice != "latest" else compare.latest_run(_storage_dir(config))
    if path is None:
        config.stash[_GATE] = _Gate(None, machine_info, f"no saved run of {this.gpu} under {_storage_dir(config)}: "
                                                        f"nothing to compare, not gating ({this.versions()})")
        return
    try:
        baseline = compare.load_run(path)
        compare.check_same_gpu(this, baseline)
    except (ValueError, FileNotFoundError) as exc:
        raise pytest.UsageError(f"--gate-baseline: {exc}") from None
    config.stash[_GATE] = _Gate(baseline, machine_info, f"against {baseline.describe()}, tolerance {tolerance:.1%}")


def _storage_dir(config) -> Path:
    storage = config.getoption("benchmark_storage")
    if not storage.startswith("file://"):
        raise pytest.UsageError(f"--gate-baseline latest needs a file:// --benchmark-storage, got {storage}")
    return Path(storage.removeprefix("file://"))


def pytest_report_header(config):
    gate = config.stash.get(_GATE, None)
    return f"llmopt gate: {gate.note}" if gate else None


def pytest_sessionfinish(session, exitstatus):
    gate = session.config.stash.get(_GATE, None)
    if gate is None or gate.baseline is None:
        return
    bench = session.config._benchmarksession  # pytest-benchmark's records of this session
    records = [b.extra_info for b in bench.benchmarks if b and not b.has_error]  # what it saves
    current = compare.Run("this run", gate.machine_info, datetime.now(timezone.utc).isoformat(), records)
    tolerance = session.config.getoption("--gate-tolerance")
    failures = compare.gate(current, gate.baseline, tolerance)
    gate.summary, gate.failed = compare.render(current, gate.baseline, failures, tolerance), bool(failures)
    if failures and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's table: the verdict comes last
def pytest_terminal_summary(terminalreporter):
    gate = terminalreporter.config.stash.get(_GATE, None)
    if gate:
        terminalreporter.write_sep("=", "llmopt gate", red=gate.failed, green=not gate.failed, bold=True)
        terminalreporter.write_line(gate.summary or gate.note)
