"""The regression gate as a pytest plugin (`--gate-baseline`): llmopt.compare.gate of this session's
records against a saved run of the same GPU model. The bench harness registers it.

Hooks only; the state lives in a `Gate` on the config's stash, and this run's records come from
the session's measure.Bench (the harness keeps it under BENCH), never from pytest-benchmark's
internals. It fails closed: a run that compared nothing, or that lacks baseline cells it did not
select out, fails. Under pytest-xdist it gates once, on the controller, over every worker's
records (llmopt.pytest_xdist brings them there), and cannot re-measure: the workers are gone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from . import compare, measure, options
from .models.gpt_neo import SHAPES

BENCH = pytest.StashKey[measure.Bench]()


@dataclass
class Gate:
    baseline: compare.Run | None
    machine_info: dict
    tolerance: float
    note: str  # what is gated against, or why nothing is
    summary: str | None = None
    failed: bool = False


GATE = pytest.StashKey[Gate]()


def pytest_addoption(parser):
    group = parser.getgroup("llmopt", "llmopt benchmark")
    group.addoption("--gate-baseline", default=None, metavar="PATH|latest",
                    help="fail the session when a cell's tokens/s falls significantly more than --gate-tolerance "
                         "below this saved run, its output changes, or a baseline cell was not measured; 'latest': "
                         "the newest saved run of this GPU model")
    group.addoption("--gate-tolerance", type=options.fraction, default=0.05, metavar="FRACTION",
                    help="allowed tokens/s drop per cell, as a fraction (default 0.05)")


def pytest_sessionstart(session):
    # Resolved before pytest-benchmark saves this run, so that `latest` never means this very run;
    # a bad baseline stops the session before any benchmark runs.
    config = session.config
    choice = config.getoption("--gate-baseline")
    if choice is None or hasattr(config, "workerinput"):  # under xdist the controller gates, once
        return
    tolerance = config.getoption("--gate-tolerance")
    machine_info = measure.machine_facts()
    this = compare.Run("this machine", machine_info, "now", [])
    path = Path(choice) if choice != "latest" else compare.latest_run(_storage_dir(config))
    if path is None:
        config.stash[GATE] = Gate(None, machine_info, tolerance,
                                  f"no saved run of {this.gpu} under {_storage_dir(config)}: nothing to compare, "
                                  f"not gating ({this.versions()})")
        return
    try:
        baseline = compare.load_run(path)
        compare.check_same_gpu(this, baseline)
    except (ValueError, FileNotFoundError) as exc:
        raise pytest.UsageError(f"--gate-baseline: {exc}") from None
    config.stash[GATE] = Gate(baseline, machine_info, tolerance,
                              f"against {baseline.describe()}, tolerance {tolerance:.1%}")


def _storage_dir(config) -> Path:
    storage = config.getoption("benchmark_storage")
    if not storage.startswith("file://"):
        raise pytest.UsageError(f"--gate-baseline latest needs a file:// --benchmark-storage, got {storage}")
    return Path(storage.removeprefix("file://"))


def pytest_report_header(config):
    gate = config.stash.get(GATE, None)
    return f"llmopt gate: {gate.note}" if gate else None


def selection(settings: options.Settings):
    """The cells a session asked for, as compare.gate's `selected`: its datasets, its techniques and,
    where the model is given as a shape, that shape's columns."""
    return compare.selected_by(settings.datasets, settings.techniques, settings.model if settings.model in SHAPES else None)


def pytest_sessionfinish(session, exitstatus):
    gate = session.config.stash.get(GATE, None)
    bench = session.config.stash.get(BENCH, None)
    if gate is None or gate.baseline is None:
        return
    records = bench.records if bench else []
    current = compare.Run("this run", gate.machine_info, datetime.now(timezone.utc).isoformat(), records)
    selected = selection(bench.settings) if bench else None
    failures = compare.gate(current, gate.baseline, gate.tolerance, selected=selected)
    suspects = compare.suspects(failures) if bench else []
    if suspects and session.config.getoption("dist", "no") != "no":
        # the cells were measured on xdist workers, gone by now: the verdict is on the first measurement
        session.config.get_terminal_writer().line(
            f"llmopt gate: not re-measuring {', '.join('/'.join(c) for c in suspects)} under xdist "
            "(the workers are gone): the verdict is on the first measurement")
    elif suspects:
        # a suspected regression is measured again, those cells only, before the gate fails
        session.config.get_terminal_writer().line(
            f"llmopt gate: re-measuring {', '.join('/'.join(c) for c in suspects)} before failing")
        current = current.with_remeasured(
            bench.remeasure([(current.cells[c]["dataset"], c[1]) for c in suspects if c in current.cells]))
        failures = compare.gate(current, gate.baseline, gate.tolerance, selected=selected)
    gate.summary = compare.render(current, gate.baseline, failures, gate.tolerance, selected=selected)
    gate.failed = bool(failures)
    if failures and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(wrapper=True)  # around every other summary: the verdict comes last
def pytest_terminal_summary(terminalreporter):
    result = yield
    gate = terminalreporter.config.stash.get(GATE, None)
    if gate:
        terminalreporter.write_sep("=", "llmopt gate", red=gate.failed, green=not gate.failed, bold=True)
        terminalreporter.write_line(gate.summary or gate.note)
    return result
