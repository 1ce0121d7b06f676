"""`pytest bench -n N` (pytest-xdist) as a pytest plugin: the bench harness registers it.

pytest-benchmark switches itself off under xdist (it times nothing and saves nothing, on the
workers and the controller alike), but our cells are timed by llmopt.timing, not by it. So:

- each worker binds one device (cuda:i, from `--gpus` or its index modulo the GPUs; "cpu" without
  a GPU) and an even, disjoint share of this process's CPU cores, so that workers do not time each
  other's contention;
- a dataset's cells stay on one worker (the `xdist_group` mark and `--dist loadgroup`): they are
  timed together, round by round, and their speed-ups over naive pair rounds of one process;
- each record rides to the controller on its test report (`record_property`), where it joins the
  controller's measure.Bench records (the gate, llmopt.pytest_gate, reads those, once, there) and
  becomes one pytest-benchmark entry, so that pytest-benchmark's own saving writes ONE run where it
  would have without -n.

Workers neither gate nor save: the gate's plugin does nothing on a worker, and a worker's
pytest-benchmark session has no benchmarks to save."""

from __future__ import annotations

import argparse
import json
import os
import warnings
from types import SimpleNamespace

import pytest
import torch

from . import measure
from .pytest_gate import BENCH

RECORD = "llmopt_record"  # the user property a worker's test report carries its record in


def gpu_list(text: str) -> list[int]:
    """`--gpus 0,2`: CUDA indices, the k-th for worker gw<k>."""
    try:
        found = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CUDA indices such as 0,2, got {text!r}") from None
    if not found or any(i < 0 for i in found) or len(set(found)) != len(found):
        raise argparse.ArgumentTypeError(f"expected distinct CUDA indices such as 0,2, got {text!r}")
    return found


def pytest_addoption(parser):
    parser.getgroup("llmopt", "llmopt benchmark").addoption(
        "--gpus", type=gpu_list, default=None, metavar="I[,I...]",
        help="under -n N: the CUDA devices of workers gw0, gw1, ... in turn (default: worker k uses "
             "cuda:(k mod GPUs)); at least N of them")


def is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config) -> bool:
    """This process hands the tests to xdist workers (and runs none itself)."""
    return not is_worker(config) and bool(config.getoption("numprocesses", None)) \
        and config.getoption("dist", "no") != "no"


def check_controller(config) -> None:
    """Refuse, in one line and before any work, what -n cannot do; make xdist keep a dataset's
    cells on one worker. Runs in the harness's pytest_configure, before the workers start."""
    if not is_controller(config):
        if config.getoption("gpus", None) and not is_worker(config):
            raise pytest.UsageError("--gpus only applies under pytest-xdist (-n N)")
        return
    workers = config.getoption("numprocesses")
    dist = config.getoption("dist")
    # xdist turns a plain -n (and --dist no) into "load" before any plugin sees it, so "load" cannot
    # be told from the default: both become loadgroup.
    if dist not in ("load", "loadgroup"):
        raise pytest.UsageError(f"pytest bench -n: --dist {dist} would split a dataset's cells across workers; "
                                "use --dist loadgroup (the default here)")
    config.option.dist = "loadgroup"
    gpus = config.getoption("gpus")
    if gpus is not None and workers > len(gpus):
        raise pytest.UsageError(f"-n {workers} needs {workers} GPUs, --gpus lists {len(gpus)}: one GPU per worker")
    device = config.getoption("device") or measure.default_device()
    if torch.device(device).type != "cuda":
        return
    if torch.device(device).index is not None:
        raise pytest.UsageError(f"--device {device} with -n: each worker binds its own GPU; use --gpus to choose them")
    count = torch.cuda.device_count()
    if gpus is None and workers > count:
        raise pytest.UsageError(f"-n {workers} needs {workers} GPUs, this machine has {count}: one GPU per worker")
    if gpus is not None and max(gpus) >= count:
        raise pytest.UsageError(f"--gpus {','.join(map(str, gpus))}: this machine has {count} CUDA GPU(s)")


def bind_worker(config) -> dict:
    """On a worker: its CPU cores and (on a GPU) its device, set before the session's Settings are
    built; returns the placement every record of it carries. Elsewhere: none."""
    if not is_worker(config):
        return {}
    worker = config.workerinput["workerid"]  # "gw3"
    index, count = int(worker.removeprefix("gw")), int(config.workerinput["workercount"])
    if hasattr(os, "sched_setaffinity"):  # Linux only
        cores = sorted(os.sched_getaffinity(0))
        share = cores[index * len(cores) // count:(index + 1) * len(cores) // count] or [cores[index % len(cores)]]
        os.sched_setaffinity(0, share)
        torch.set_num_threads(len(share))  # torch sized its thread pool for every core at import
    gpu = None
    device = config.getoption("device") or measure.default_device()
    if torch.device(device).type == "cuda":
        gpus = config.getoption("gpus")
        gpu = gpus[index] if gpus else index % torch.cuda.device_count()
        # CUDA_VISIBLE_DEVICES is too late: torch initialised CUDA when the harness was imported
        torch.cuda.set_device(gpu)
        config.option.device = f"cuda:{gpu}"
    return {"gpu_index": gpu, "xdist_worker": worker}


def portable(record: dict) -> dict:
    """The record as plain JSON types: execnet carries nothing else to the controller."""
    return json.loads(json.dumps(record, default=str))


def dataset_group(nodeid: str) -> str:
    """The scheduling group of a benchmark item: xdist's `@group` suffix where it added one, else
    the dataset, the first part of the item's parameter id (test_throughput[DATASET-TECHNIQUE]).

    xdist adds the suffix on the workers, but (3.8 with pytest 9) by setting an attribute pytest 9 no
    longer reads, and only when the worker's own command line says --dist loadgroup (a worker parses
    it anew); the xdist_group marks alone then group nothing."""
    if "@" in nodeid:
        return nodeid.rpartition("@")[2]
    name = nodeid.rpartition("::")[2]
    return name.partition("[")[2].partition("-")[0] or nodeid


def make_scheduler(config, log):
    """xdist's loadgroup scheduler, grouping by dataset_group (its documented override point,
    `_split_scope`, is how loadgroup itself differs from loadscope)."""
    from xdist.scheduler import LoadScopeScheduling

    class DatasetScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return dataset_group(nodeid)

    return DatasetScheduling(config, log)


class Collector:
    """On the controller: each worker's records, as they arrive on passed call reports, into the
    session's measure.Bench and pytest-benchmark's list of benchmarks (which it saves at
    sessionfinish, disabled or not)."""

    def __init__(self, config):
        self.config = config

    @pytest.hookimpl(tryfirst=True)  # before xdist's own (firstresult)
    def pytest_xdist_make_scheduler(self, config, log):
        return make_scheduler(config, log)

    def pytest_benchmark_update_machine_info(self, config, machine_info):
        machine_info.update(gpus_used=gpus_used(config.stash[BENCH].records),
                            xdist_workers=config.getoption("numprocesses"))

    def pytest_runtest_logreport(self, report):
        if report.when != "call" or not report.passed:
            return
        for name, record in report.user_properties:
            if name == RECORD:
                self.config.stash[BENCH].records.append(record)
                self.config._benchmarksession.benchmarks.append(self.benchmark(report.nodeid, record))

    def benchmark(self, nodeid: str, record: dict):
        """pytest-benchmark's own entry for a cell (its stats.Metadata: an internal class, the one
        its fixture makes; its `as_dict` writes what a saved run holds), over the rounds timed."""
        from pytest_benchmark.stats import Metadata

        session = self.config._benchmarksession
        name = nodeid.rpartition("::")[2]
        node = SimpleNamespace(name=name, fullname=nodeid, group=None, param=name.partition("[")[2].rstrip("]"),
                               params={"dataset": record["dataset"], "technique": record["technique"]},
                               extra_info=record, cprofile_stats=None, has_error=False)
        # as its fixture turns the session's options into a benchmark's (the keys vary between
        # pytest-benchmark versions: take those there are; Decimal seconds are not JSON)
        o = session.options
        options = {k: o[k] for k in ("disable_gc", "min_rounds", "precision", "confidence", "warmup") if k in o}
        options.update({k: float(o[k]) for k in ("max_time", "min_time") if o.get(k) is not None})
        if "timer" in o:
            options["timer"] = getattr(o["timer"], "target", str(o["timer"]))
        entry = Metadata(node, iterations=1, options=options)
        for seconds in record["round_wall_s"]:
            entry.stats.update(seconds)
        return entry


def register(config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): cells measured together, on one xdist worker")
    if is_controller(config) or is_worker(config):
        # pytest-benchmark's parting "Benchmarks are automatically disabled because xdist plugin is
        # active" (from worker gw0) is about its own timing; the cells here are timed by llmopt.timing
        warnings.filterwarnings("ignore", message="Benchmarks are automatically disabled because xdist",
                                module="pytest_benchmark")
    if is_controller(config):
        config.pluginmanager.register(Collector(config), "llmopt-xdist-collector")


def gpus_used(records: list[dict]) -> list[dict]:
    """machine_info's list of the GPUs a distributed run measured on."""
    used = sorted({r["gpu_index"] for r in records if r.get("gpu_index") is not None})
    return [{"index": i, "name": torch.cuda.get_device_name(i)} for i in used]
