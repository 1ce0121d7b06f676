"""Regression comparison of saved benchmark runs (README, "Measurement noise and the
gate").

A run is a pytest-benchmark JSON file; its cells are the `extra_info` records keyed by
(dataset, technique). Runs of different GPU models are never compared: absolute tokens/s only mean
something beside the GPU that produced them. The gate fails closed: a run that compared nothing,
or lacks a cell the baseline has and the run asked for, fails.

Speed: between processes, eager decoding at this size moves 10-25% with nothing changed, so two
medians alone would raise false alarms. A cell is slower only when its median fell by more than the
tolerance AND a one-sided Mann-Whitney U test on the per-round rates (what asv and Google
Benchmark's compare.py do) finds the drop significant at `alpha`; with too few rounds for the test
ever to reach `alpha`, the medians decide alone and the verdict says so. A slower cell whose
speed-up over the same run's `naive` cell held is a machine effect (the whole host moved), not a
regression; the speed-up is a ratio measured in one run, so it cancels what the machine did.
`naive` itself has no such reference but the host: every round records the host's cost of one
launch around it (llmopt.host_load.launch_s), and a slower `naive` whose tokens/s times that cost
held (`host_normalized`) ran on a slower host, not slower code.

Correctness: a changed output hash is an alarm, but only between runs of the same weights (the
records' `checkpoint_sha256`, llmopt.checkpoints.fingerprint); another checkpoint decodes other
tokens by design."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist, median
from typing import Callable

from scipy.stats import mannwhitneyu

from .checkpoints import FINGERPRINT_KEY

Cell = tuple[str, str]  # (column, technique); the column is the dataset, at another shape `dataset@shape`

# The CPU and GPU default shapes: their cells keep the dataset's bare name. A cell of another shape
# names it, so that one run holds E2E at 125m and at 1.3b, and a 1.3b run compares with a 1.3b run.
UNNAMED_SHAPES = ("tiny", "125m")

# A cell measured on another workload is not comparable: its speed and its hash differ by design.
WORKLOAD_KEYS = ("model", "objective", "num_prompts", "max_new_tokens")
NAIVE = "naive"  # the technique speed-ups are quoted against
# Two holds of one H200 model ran the same eager cells at half and at full speed with the same
# kernels per token (docs/results/NVIDIA-H200/session7): the host's time per launch set the pace.
HOST_NOTE = 0.10  # a host launch cost that moved more than this is named beside the verdict
VERSIONS = (("driver", "driver_version"), ("CUDA", "cuda_version"), ("torch", "torch_version"),
            ("transformers", "transformers_version"), ("Python", "python_version"),
            ("CUBLAS_WORKSPACE_CONFIG", "cublas_workspace_config"))


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
            key = (column(r), r["technique"])
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

    def with_remeasured(self, records: list[dict]) -> Run:
        """This run with re-measured cells (`records`, as the measurement writes them) in place of
        its own: the gate's final verdict on `suspects` is made on the new samples."""
        new = {(column(r), r["technique"]) for r in records}
        if unknown := new - self.cells.keys():
            raise ValueError(f"{self.name}: re-measured cells it never measured: "
                             f"{', '.join(map(_name, sorted(unknown)))}")
        replaced = {id(self.cells[c]) for c in new}
        kept = [r for r in self.records if id(r) not in replaced]
        return Run(f"{self.name} (re-measured {', '.join(map(_name, sorted(new)))})", self.machine_info,
                   self.datetime, kept + list(records), self.commit)


def column(record: dict) -> str:
    """The matrix column a record fills: its dataset, with its shape beside it (`e2e_nlg@1.3b`)
    unless that is a default one."""
    return column_of(record["dataset"], record["shape"] if "shape" in record else _trained_shape(record))


def column_of(dataset: str, shape: str | None) -> str:
    return dataset if shape in (None, *UNNAMED_SHAPES) else f"{dataset}@{shape}"


def _trained_shape(record: dict) -> str | None:
    """The shape of a record saved before records carried it, read from its checkpoint's name
    (`train.checkpoint_dir`: dataset-shape-objective-key); None for a checkpoint made elsewhere."""
    prefix = f"{record['dataset']}-"
    name = record.get("checkpoint") or ""
    shape = name[len(prefix):].split("-")[0] if name.startswith(prefix) else ""
    return shape if re.fullmatch(r"tiny|\d+(\.\d+)?[mb]", shape) else None


def load_run(path: str | Path) -> Run:
    """A pytest-benchmark JSON file (`--benchmark-save` / `--benchmark-json`) as a Run."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        if isinstance(doc, list):  # records without the machine: which GPU made them is unknown
            raise ValueError(f"{path}: a list of records (`llmopt bench --json`), not a saved run: "
                             "use one saved by `pytest bench/ --benchmark-save NAME` or `--benchmark-json FILE`")
        benchmarks, machine_info = doc["benchmarks"], doc["machine_info"]
        records = [b["extra_info"] for b in benchmarks]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
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
    cell: Cell | None  # None: the run as a whole ("empty")
    # "speed", "output" (a correctness alarm), "workload" (not comparable), "missing" (a baseline
    # cell the run asked for but did not measure) or "empty" (nothing was compared)
    kind: str
    message: str


def selected_by(datasets, techniques, shape: str | None = None) -> Callable[[Cell], bool]:
    """`gate`'s `selected` for a run that asked for these datasets (or columns) and techniques, at
    this model shape (None: at any)."""
    datasets, techniques = set(datasets), set(techniques)

    def selected(cell: Cell) -> bool:
        dataset = cell[0].partition("@")[0]
        return ((dataset in datasets or cell[0] in datasets) and cell[1] in techniques
                and (shape is None or cell[0] == column_of(dataset, shape)))
    return selected


def only_in(run: Run, other: Run) -> list[Cell]:
    return [c for c in run.cells if c not in other.cells]


# -- one comparison of two samples --------------------------------------------------------------

@dataclass(frozen=True)
class Shift:
    """How a rate (tokens/s, or a speed-up over naive) moved from the baseline's samples to the
    current's. `change` is the ratio of the medians - 1 (what the tolerance is applied to).
    `low`..`high` is a 95% interval on the ratio - 1: the distribution-free (Moses) interval of the
    Hodges-Lehmann estimate, i.e. order statistics of the pairwise log-ratios picked by the normal
    approximation of the Mann-Whitney statistic; with too few rounds for that it widens to the full
    range of the pairwise ratios. `p` is the one-sided Mann-Whitney U p-value that the current rates
    are lower, None when the rounds are too few for the test ever to reach alpha."""

    change: float
    low: float
    high: float
    p: float | None

    def beyond(self, tolerance: float) -> bool:
        return self.change < -tolerance

    def fell(self, tolerance: float, alpha: float) -> bool:
        """Down by more than the tolerance, and significantly so where a test is possible (with too
        few rounds the medians decide alone: never a silent pass)."""
        return self.beyond(tolerance) and (self.p is None or self.p < alpha)

    def describe(self, alpha: float) -> str:
        return f"{self.change:+.1%} [{self.low:+.1%}, {self.high:+.1%}], " + (
            f"p={self.p:.3g}" if self.p is not None else f"too few rounds for a test at alpha={alpha:g}")


def shift(base_median: float, base: list[float], cur_median: float, cur: list[float], alpha: float) -> Shift:
    m, n = len(base), len(cur)
    logs = sorted(math.log(c) - math.log(b) for c in cur for b in base)
    # the interval runs from the C-th smallest to the C-th largest pairwise difference (C counted from 1)
    c = math.floor(m * n / 2 - NormalDist().inv_cdf(0.975) * math.sqrt(m * n * (m + n + 1) / 12))
    k = max(c - 1, 0)
    # the smallest p-value the exact test can give is 1 / C(m + n, m) (every current round below every baseline one)
    p = float(mannwhitneyu(cur, base, alternative="less").pvalue) if 1 / math.comb(m + n, m) < alpha else None
    return Shift(cur_median / base_median - 1, math.exp(logs[k]) - 1, math.exp(logs[-1 - k]) - 1, p)


def rates(record: dict) -> tuple[float, list[float]]:
    """A cell's median tokens/s and per-round rates (older runs may hold one median alone)."""
    return record["tokens_per_s"], list(record.get("tokens_per_s_rounds") or [record["tokens_per_s"]])


def speedups(run: Run, cell: Cell) -> tuple[float, list[float]] | None:
    """A cell's speed-up over the same run's naive cell of its dataset: the record's own when the
    measurement wrote one, else from the naive cell (per round when both have as many rounds)."""
    record = run.cells[cell]
    if "speedup_over_naive" in record:
        median = record["speedup_over_naive"]
        return median, list(record.get("speedup_over_naive_rounds") or [median])
    naive = run.cells.get((cell[0], NAIVE))
    if naive is None:
        return None
    (median, rounds), (naive_median, naive_rounds) = rates(record), rates(naive)
    if len(rounds) != len(naive_rounds):
        return median / naive_median, [median / naive_median]
    return median / naive_median, [r / q for r, q in zip(rounds, naive_rounds)]


def host_normalized(record: dict) -> tuple[float, list[float]] | None:
    """A cell's per-round tokens/s times the host's cost of one launch around each round: its speed
    with the host's own speed divided out (an eager step, a few hundred launches, moves with it).
    None for a record without the probe (older runs, or rounds that do not line up)."""
    launches, rounds = record.get("round_launch_s"), record.get("tokens_per_s_rounds")
    if not launches or not rounds or len(launches) != len(rounds):
        return None
    values = [r * s for r, s in zip(rounds, launches)]
    return median(values), values


# -- the verdict --------------------------------------------------------------------------------


@dataclass
class Row:
    """One compared cell: how its speed moved, and what that means."""
    cell: Cell
    base: dict
    cur: dict
    speed: Shift | None = None  # None: not comparable (another workload)
    speedup: Shift | None = None  # None: the naive cell itself, or no naive cell to divide by
    host: Shift | None = None  # of host_normalized, where there is no speed-up; None without the probe
    outputs_compared: bool = False
    kind: str = "ok"  # of the speed verdict: "ok", "not significant", "machine", "speed" or "workload"
    verdict: str = "ok"  # the same in words, for the table (which adds an output alarm)


@dataclass
class Judgement:
    rows: list[Row]
    failures: list[Failure]
    notes: list[str]  # run-wide lines for render: cells not selected, the machine, other checkpoints


def judge(current: Run, baseline: Run, tolerance: float = 0.05, alpha: float = 0.05,
          selected: Callable[[Cell], bool] | None = None) -> Judgement:
    """Every cell of `baseline` against `current` (see the module docstring). `selected` says which
    cells the current run asked for (`selected_by`); None: every baseline cell is expected."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance is a fraction in [0, 1), got {tolerance}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is a significance level in (0, 1), got {alpha}")
    check_same_gpu(current, baseline)
    rows, failures, notes = [], [], []
    for cell in baseline.cells:
        if cell in current.cells:
            rows.append(_compare_cell(current, baseline, cell, alpha, failures))
        elif selected is None or selected(cell):
            failures.append(Failure(cell, "missing", "in the baseline, asked for, not measured in this run"))
    if not_selected := [c for c in only_in(baseline, current) if selected is not None and not selected(c)]:
        notes.append("not selected, not gated: " + ", ".join(map(_name, not_selected)))
    if not rows:
        failures.append(Failure(None, "empty", "no cell was compared: this run measured none of the baseline's cells"))

    timed = [r for r in rows if r.speed is not None]
    fell = [r for r in timed if r.speed.fell(tolerance, alpha)]
    # most cells, naive among them, fell together: the host, not the code, moved
    moved = len(fell) > len(timed) / 2 and any(r.cell[1] == NAIVE for r in fell)
    if moved:
        notes.append(f"the whole run moved together: {len(fell)} of {len(timed)} cells, naive among them, fell "
                     f"beyond {tolerance:.1%}, a machine effect (or a change every technique shares: rerun on a quiet "
                     f"host to tell)")
    for row in timed:
        row.kind, row.verdict = _speed_verdict(row, tolerance, alpha, moved)
        if row.kind == "speed":
            failures.append(Failure(row.cell, "speed", _speed_message(row, alpha)))

    other = {(_short(r.base.get(FINGERPRINT_KEY)), _short(r.cur.get(FINGERPRINT_KEY)))
             for r in timed if not r.outputs_compared}
    if other:
        notes.append("outputs not compared: the baseline measured another checkpoint ("
                     + ", ".join(f"baseline {b} vs current {c}" for b, c in sorted(other)) + ")")
    if (moved_host := host_change(baseline, current)) is not None:
        notes.append(moved_host)
    if changed := software_changes(baseline, current):
        notes.append("the software differs, so speed may too: " + ", ".join(changed))
    if changed := setting_changes(rows):
        notes.append("a technique's settings differ, so its speed may too: " + "; ".join(changed))
    return Judgement(rows, failures, notes)


def differences(before: dict, after: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """"key old -> new" for each key both dicts hold with different values (a key one lacks, as an
    older record does, is unknown, not different)."""
    return [f"{k} {before[k]} -> {after[k]}" for k in before if k in after and k not in skip and before[k] != after[k]]


# the strategy config's keys that are measurements, not settings
MEASURED_CONFIG = ("setup_s", "drafter_train_time_s")


def setting_changes(rows: list[Row]) -> list[str]:
    """Per compared cell, what its strategy's config says differently in the two runs, e.g. a
    default that changed ("e2e_nlg/best: decode_attention sdpa_efficient -> sdpa_cudnn")."""
    changes = []
    for row in rows:
        if differs := differences(row.base.get("config", {}), row.cur.get("config", {}), MEASURED_CONFIG):
            changes.append(f"{_name(row.cell)}: {', '.join(differs)}")
    return changes


def software_changes(baseline: Run, current: Run) -> list[str]:
    """What VERSIONS records differently in two runs ("torch 2.11 -> 2.12"); a key a run lacks
    (an older run) is unknown, not changed."""
    changes = []
    for label, key in VERSIONS:
        before, after = baseline.machine_info.get(key), current.machine_info.get(key)
        if key in baseline.machine_info and key in current.machine_info and before != after:
            changes.append(f"{label} {before or 'unset'} -> {after or 'unset'}")
    return changes


def host_op_s(run: Run) -> float | None:
    """The median of the run's records' `host_op_s` (llmopt.hardware.host_op_s); None for a run
    that did not record it (older runs)."""
    found = [r["host_op_s"] for r in run.records if r.get("host_op_s")]
    return median(found) if found else None


def host_change(baseline: Run, current: Run) -> str | None:
    """A note when the host issues a tiny op more than HOST_NOTE slower or faster than the
    baseline's host did: eager cells, bound by launches, move with it whatever the code did."""
    before, after = host_op_s(baseline), host_op_s(current)
    if before is None or after is None or abs(after / before - 1) <= HOST_NOTE:
        return None
    return (f"the host's cost per launch moved {after / before - 1:+.0%} from the baseline's ({before * 1e6:.1f} -> "
            f"{after * 1e6:.1f} us a tiny op): eager cells, bound by launches, move with the host")


def workload(record: dict) -> dict:
    """The keys that make two cells comparable. A trained checkpoint is named by its recipe
    ("checkpoint"), while "model" is what was typed: a shape, or a path that differs between hosts
    for the same checkpoint."""
    keys = {k: record[k] for k in WORKLOAD_KEYS if k in record}
    if record.get("checkpoint"):
        keys["model"] = record["checkpoint"]
    return keys


def _compare_cell(current: Run, baseline: Run, cell: Cell, alpha: float, failures: list[Failure]) -> Row:
    base, cur = baseline.cells[cell], current.cells[cell]
    row = Row(cell, base, cur)
    # a key an older run did not record yet is unknown, not different
    if differs := differences(workload(base), workload(cur)):
        failures.append(Failure(cell, "workload", "not comparable: " + ", ".join(differs)))
        row.kind, row.verdict = "workload", "NOT COMPARABLE"
        return row
    row.speed = shift(*rates(base), *rates(cur), alpha)
    if cell[1] != NAIVE and (b := speedups(baseline, cell)) and (c := speedups(current, cell)):
        row.speedup = shift(*b, *c, alpha)
    elif (b := host_normalized(base)) and (c := host_normalized(cur)):
        row.host = shift(*b, *c, alpha)
    # equal fingerprints (or neither run recorded one, as before fingerprints): the same weights
    row.outputs_compared = base.get(FINGERPRINT_KEY) == cur.get(FINGERPRINT_KEY)
    if row.outputs_compared and base.get("output_sha256") != cur.get("output_sha256"):
        failures.append(Failure(cell, "output", f"output_sha256 {_short(base.get('output_sha256'))} -> "
                                                f"{_short(cur.get('output_sha256'))}"))
    return row


def _speed_verdict(row: Row, tolerance: float, alpha: float, moved: bool) -> tuple[str, str]:
    """(kind, words for the table) of a timed cell: "ok", "not significant", "machine" or "speed"."""
    speed, speedup = row.speed, row.speedup
    few = " (too few rounds for a test)" if speed.p is None else ""
    if not speed.fell(tolerance, alpha):
        if speed.beyond(tolerance):
            return "not significant", f"not significant (p={speed.p:.3g})"
        return "ok", "ok" + few
    if speedup is None:  # the naive cell, or no naive cell to divide by: its host is its reference
        if moved:
            return "machine", "machine effect (the whole run moved)"
        if row.host is not None and not row.host.beyond(tolerance):
            return "machine", f"machine effect (tokens/s x the host's launch cost held: {row.host.change:+.1%})"
        return "speed", "SLOWER" + few
    if speedup.fell(tolerance, alpha):
        return "speed", "SLOWER" + few
    if speedup.beyond(tolerance):
        return "not significant", f"slower, speed-up drop not significant (p={speedup.p:.3g})"
    return "machine", "machine effect (speed-up over naive held)"


def _speed_message(row: Row, alpha: float) -> str:
    base, cur = row.base["tokens_per_s"], row.cur["tokens_per_s"]
    message = f"{cur:.1f} tokens/s, baseline {base:.1f}: {row.speed.describe(alpha)}"
    if row.speedup is not None:
        message += f"; speed-up over naive {row.speedup.describe(alpha)}"
    if row.host is not None:
        message += f"; tokens/s x the host's launch cost {row.host.describe(alpha)}"
    return message


def gate(current: Run, baseline: Run, tolerance: float = 0.05, alpha: float = 0.05,
         selected: Callable[[Cell], bool] | None = None) -> list[Failure]:
    """The failures of `current` against `baseline` (`judge`): slower cells, changed outputs, cells
    of another workload, baseline cells the run asked for but lacks, and a run that compared nothing."""
    return judge(current, baseline, tolerance, alpha, selected).failures


def suspects(failures: list[Failure]) -> list[Cell]:
    """The cells to re-measure before failing on speed: each slower cell and the naive cell of its
    dataset (its speed-up is a ratio to naive measured in the same run, so both are measured again)."""
    slower = [f.cell for f in failures if f.kind == "speed"]
    return list(dict.fromkeys(c for cell in slower for c in (cell, (cell[0], NAIVE))))


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "none"


def _name(cell: Cell) -> str:
    return "/".join(cell)


def table(current: Run, baseline: Run, failures: list[Failure], tolerance: float = 0.05, alpha: float = 0.05) -> str:
    """One aligned row per shared cell: tokens/s before and after, the change with its 95% interval
    (`Shift`), the test's p-value, the change of the speed-up over naive, same output?, verdict."""
    rows = [("cell", "baseline tok/s", "current tok/s", "change [95% interval]", "p", "speed-up change",
             "same output", "verdict")]
    for row in judge(current, baseline, tolerance, alpha).rows:
        base, cur, speed = row.base["tokens_per_s"], row.cur["tokens_per_s"], row.speed
        same = ("yes" if row.base.get("output_sha256") == row.cur.get("output_sha256") else "NO") \
            if row.outputs_compared else "not compared"
        alarm = any(f.cell == row.cell and f.kind == "output" for f in failures)
        verdict = {(False, True): "OUTPUT CHANGED", (True, True): f"{row.verdict}, OUTPUT CHANGED"}.get(
            (row.verdict != "ok", alarm), row.verdict)
        rows.append((_name(row.cell), f"{base:.1f}", f"{cur:.1f}",
                     f"{speed.change:+.1%} [{speed.low:+.1%}, {speed.high:+.1%}]" if speed else "-",
                     f"{speed.p:.3g}" if speed and speed.p is not None else "-",
                     f"{row.speedup.change:+.1%}" if row.speedup else "-", same, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) if i in (0, 7) else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                     .rstrip() for r in rows)


def render(current: Run, baseline: Run, failures: list[Failure], tolerance: float, alpha: float = 0.05,
           selected: Callable[[Cell], bool] | None = None) -> str:
    """The full comparison as text: both runs' facts, the table, run-wide notes (cells not selected,
    a machine effect, another checkpoint), unmatched cells, failures by kind, and the verdict line."""
    lines = [f"baseline {baseline.describe()}", f"current  {current.describe()}",
             f"tolerance: tokens/s may fall {tolerance:.1%} below the baseline; a drop counts when a one-sided "
             f"Mann-Whitney U test on the rounds gives p < {alpha:g}, or by the medians alone with too few rounds",
             "", table(current, baseline, failures, tolerance, alpha)]
    lines += judge(current, baseline, tolerance, alpha, selected).notes
    if cells := only_in(current, baseline):
        lines.append("only in current (not gated): " + ", ".join(map(_name, cells)))
    for kind, title in (("empty", "nothing compared"), ("missing", "missing (in the baseline, not measured)"),
                        ("speed", "speed regressions"), ("output", "output changed (correctness alarm)"),
                        ("workload", "workload differs (not comparable)")):
        found = [f for f in failures if f.kind == kind]
        if found:
            lines.append(f"{title}:")
            lines += [f"  {_name(f.cell) if f.cell else 'run'}: {f.message}" for f in found]
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
