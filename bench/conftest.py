"""The benchmark harness's hooks: the options (declared once in llmopt.options, shared with
`llmopt bench`), one test per dataset x technique, the session's state (a measure.Bench), GPU facts
for machine_info and a tokens/s summary. The regression gate is its own plugin
(llmopt.pytest_gate), registered here, and so is running under pytest-xdist (llmopt.pytest_xdist:
`-n N`, a device and a share of the CPU cores per worker, one saved run on the controller).

On a GPU it defaults to the 125m shape trained per dataset, 32 prompts, 128 new tokens; on a CPU
(CI) to a smoke run on the tiny shape with a couple of prompts."""

from __future__ import annotations

import pytest
import torch

from llmopt import measure, options, pytest_gate, pytest_xdist
from llmopt.names import slug

GPU = torch.cuda.is_available()
BENCH = pytest_gate.BENCH  # the session's measure.Bench, where the gate finds this run's records


def pytest_addoption(parser, pluginmanager):
    options.add_bench_options(parser.getgroup("llmopt", "llmopt benchmark").addoption)
    pluginmanager.register(pytest_gate, "llmopt-gate")  # adds its own options (a historic hook)
    pluginmanager.register(pytest_xdist, "llmopt-xdist")


def pytest_configure(config):
    pytest_xdist.check_controller(config)  # a bad -n / --dist / --gpus fails before any work
    placement = pytest_xdist.bind_worker(config)  # a worker's device is set before the Settings
    try:  # what needs several options together (and each technique's options) is checked now
        settings = options.settings(config.option)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[BENCH] = bench = measure.Bench(settings)
    bench.placement.update(placement)
    pytest_xdist.register(config)
    # Saved runs are grouped by GPU model, so --benchmark-compare only meets runs of the same GPU.
    if getattr(config.option, "benchmark_storage", None) == "file://./.benchmarks":
        config.option.benchmark_storage = f"file://./.benchmarks/{gpu_slug()}"


def gpu_slug() -> str:
    """The storage folder of this GPU model's saved runs (the same name `llmopt report` uses)."""
    return slug(torch.cuda.get_device_name(0) if GPU else "cpu")


def pytest_generate_tests(metafunc):
    settings = metafunc.config.stash[BENCH].settings
    if "dataset" in metafunc.fixturenames:
        # under xdist (--dist loadgroup) a dataset's cells go to one worker, to be timed together there;
        # marked here, as the items are made, before any plugin's collection_modifyitems reads marks
        metafunc.parametrize("dataset", [pytest.param(d, marks=pytest.mark.xdist_group(d)) for d in settings.datasets],
                             scope="session")
    if "technique" in metafunc.fixturenames:
        metafunc.parametrize("technique", settings.techniques)


def pytest_collection_finish(session):
    """The cells this session will run (after -k and the like), so that a dataset's cells are
    measured together when its first test asks."""
    bench = session.config.stash.get(BENCH, None)
    if bench is None:
        return
    plan: dict[str, list[str]] = {}
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "dataset" in params and "technique" in params:
            plan.setdefault(params["dataset"], []).append(params["technique"])
    bench.plan = plan


@pytest.fixture(scope="session")
def bench(pytestconfig) -> measure.Bench:
    return pytestconfig.stash[BENCH]


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(measure.machine_facts())  # under xdist the controller adds its workers' GPUs


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table (ms per pass)
def pytest_terminal_summary(terminalreporter):
    bench = terminalreporter.config.stash.get(BENCH, None)
    if bench and bench.records:
        terminalreporter.write_sep("-", "llmopt: tokens/s (speed-up over naive)")
        terminalreporter.write_line(measure.table(bench.records))

