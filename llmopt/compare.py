"""Regression comparison of saved benchmark runs (benchmark-protocol.md, "Regression comparison").

A run is a pytest-benchmark JSON file; its cells are the `extra_info` records keyed by
(dataset, technique). Speed is gated per cell with a tolerance; a changed output hash is a
correctness alarm and is reported apart from speed. Runs of different GPU models are never
compared: absolute tokens/s only mean something beside the GPU that produced them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

Cell = tuple[str, str]  # (dataset, technique)

# A cell measured on another workload is not comparable: its speed and its hash differ by design.
WORKLOAD_KEYS = ("model", "objective", "num_prompts", "max_new_tokens")
VERSIONS = (("driver", "driver_version"), ("CUDA", "cuda_version"), ("torch", "torch_version"),
            ("transformers", "transformers_version"), ("Python", "python_version"))


class GpuMismatch(ValueError):
    """Two runs of different GPU models: comparing their tokens/s would be meaningless."""


@dataclass
class Run:
    name: str
    machine_info: dict
    datetime: str
    records: list[dict]  # every extra_info, simulated ones included (plots draw them)
    commit: str | None = None
    doc: dict | None = field(default=None, repr=False)  # the file as read (merge writes it back out)
    cells: dict[Cell, dict] = field(init=False)

    def __post_init__(self):
        self.cells = {}
        for r in self.records:
            if r.get("simulated") or "dataset" not in r or "technique" not in r:
                continue  # not a measured cell of the matrix
            key = (r["dataset"], r["technique"])
            if key in self.cells:
                raise ValueError(f"{self.name}: two records for {key[0]}/{key[1]}")
            self.cells[key] = r

    @property
    def gpu(self) -> str:
        return self.machine_info.get("gpu_name") or "cpu"

    def versions(self) -> str:
        return ", ".join(f"{label} {self.machine_info[key]}" for label, key in VERSIONS if self.machine_info.get(key))

    def describe(self) -> str:
        versions = self.versions()
        return f"{self.name}: {self.gpu}{f' ({versions})' if versions else ''}, {self.datetime}"


def load_run(path: str | Path) -> Run:
    """A pytest-benchmark JSON file (`--benchmark-save` / `--benchmark-json`) as a Run."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        benchmarks, machine_info = doc["benchmarks"], doc["machine_info"]
        records = [b["extra_info"] for b in benchmarks]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file ({type(exc).__name__}: {exc})") from None
    return Run(str(path), machine_info, doc.get("datetime", "?"), records, (doc.get("commit_info") or {}).get("id"), doc)


def latest_run(storage: str | Path) -> Path | None:
    """The newest run saved under a pytest-benchmark storage directory (any machine id), by its
    recorded datetime; None when there is none."""
    files = Path(storage).glob("*/[0-9][0-9][0-9][0-9]_*.json")  # pytest-benchmark's NNNN_name.json
    return max(files, key=lambda f: (load_run(f).datetime, f.name), default=None)


def check_same_gpu(current: Run, baseline: Run) -> None:
    if current.gpu != baseline.gpu:
        raise GpuMismatch(
            f"refusing to compare runs of different GPU models ({baseline.gpu} vs {current.gpu}): "
            f"tokens/s only compare on the same GPU model\n"
            f"  baseline {baseline.describe()}\n  current  {current.describe()}")


@dataclass(frozen=True)
class Failure:
    cell: Cell
    kind: str  # "speed", "output" (a correctness alarm) or "workload" (not comparable)
    message: str


def shared_cells(current: Run, baseline: Run) -> list[Cell]:
    return [c for c in baseline.cells if c in current.cells]


def only_in(run: Run, other: Run) -> list[Cell]:
    return [c for c in run.cells if c not in other.cells]


def gate(current: Run, baseline: Run, tolerance: float = 0.05) -> list[Failure]:
    """Failures of `current` against `baseline`: tokens/s more than `tolerance` (a fraction)
    below the baseline, a changed output hash, or a cell measured on another workload.
    Cells present in only one run are not failures (see `only_in`)."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance is a fraction in [0, 1), got {tolerance}")
    check_same_gpu(current, baseline)
    failures = []
    for cell in shared_cells(current, baseline):
        base, cur = baseline.cells[cell], current.cells[cell]
        # a key an older run did not record yet is unknown, not different
        differs = [f"{k} {base[k]} -> {cur[k]}" for k in WORKLOAD_KEYS if k in base and k in cur and base[k] != cur[k]]
        if differs:
            failures.append(Failure(cell, "workload", "not comparable: " + ", ".join(differs)))
            continue
        floor = base["tokens_per_s"] * (1 - tolerance)
        if cur["tokens_per_s"] < floor:
            failures.append(Failure(cell, "speed", f"{cur['tokens_per_s']:.1f} tokens/s < {floor:.1f} "
                                                   f"(baseline {base['tokens_per_s']:.1f} - {tolerance:.0%})"))
        if base.get("output_sha256") != cur.get("output_sha256"):
            failures.append(Failure(cell, "output", f"output_sha256 {_short(base.get('output_sha256'))} -> "
                                                    f"{_short(cur.get('output_sha256'))}"))
    return failures


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "none"


def _name(cell: Cell) -> str:
    return "/".join(cell)


def table(current: Run, baseline: Run, failures: list[Failure]) -> str:
    """One aligned row per shared cell: tokens/s before and after, change, same output?, verdict."""
    verdicts = {"speed": "SLOWER", "output": "OUTPUT CHANGED", "workload": "NOT COMPARABLE"}
    rows = [("cell", "baseline tok/s", "current tok/s", "change", "same output", "verdict")]
    for cell in shared_cells(current, baseline):
        base, cur = baseline.cells[cell], current.cells[cell]
        change = cur["tokens_per_s"] / base["tokens_per_s"] - 1
        same = base.get("output_sha256") == cur.get("output_sha256")
        verdict = ", ".join(verdicts[f.kind] for f in failures if f.cell == cell) or "ok"
        rows.append((_name(cell), f"{base['tokens_per_s']:.1f}", f"{cur['tokens_per_s']:.1f}",
                     f"{change:+.1%}", "yes" if same else "NO", verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) if i in (0, 5) else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                     .rstrip() for r in rows)


def render(current: Run, baseline: Run, failures: list[Failure], tolerance: float) -> str:
    """The full comparison as text: both runs' facts, the table, unmatched cells, failures by kind."""
    lines = [f"baseline {baseline.describe()}", f"current  {current.describe()}",
             f"tolerance: tokens/s may fall {tolerance:.1%} below the baseline", "", table(current, baseline, failures)]
    for run, other, label in ((baseline, current, "baseline"), (current, baseline, "current")):
        if cells := only_in(run, other):
            lines.append(f"only in {label} (not gated): " + ", ".join(map(_name, cells)))
    for kind, title in (("speed", "speed regressions"), ("output", "output changed (correctness alarm)"),
                        ("workload", "workload differs (not comparable)")):
        found = [f for f in failures if f.kind == kind]
        if found:
            lines.append(f"{title}:")
            lines += [f"  {_name(f.cell)}: {f.message}" for f in found]
    lines.append(f"gate: FAILED ({len(failures)} failure{'s' * (len(failures) != 1)})" if failures else "gate: passed")
    return "\n".join(lines)


def merge(paths: list[str | Path]) -> dict:
    """One pytest-benchmark document from several runs of one GPU model that split the matrix
    between them (say one dataset per GPU of a host): the first run's header, every run's
    benchmarks. Refuses runs of different GPU models and a cell measured twice."""
    if not paths:
        raise ValueError("nothing to merge")
    runs = [load_run(p) for p in paths]
    for run in runs[1:]:
        check_same_gpu(run, runs[0])
    seen: dict[Cell, str] = {}
    for run in runs:
        for cell in run.cells:
            if cell in seen:
                raise ValueError(f"{_name(cell)} is in both {seen[cell]} and {run.name}")
            seen[cell] = run.name
    merged = {**runs[0].doc, "benchmarks": [b for run in runs for b in run.doc["benchmarks"]]}
    merged["merged_from"] = [{"file": Path(run.name).name, "datetime": run.datetime} for run in runs]
    return merged
