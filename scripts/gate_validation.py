"""Validate the regression gate like a classifier, on the GPU runner (README, "Measurement noise and
the gate"): N identical benchmark processes must pass against each other (false alarms over all
ordered pairs), a process with one cell made 10% slower must fail against each of them (misses),
and a process with one cell's output changed must raise the correctness alarm. Optionally K more
processes with `--interleave off` show what interleaving the cells buys.

    python scripts/gate_validation.py --runs 5 --sequential-runs 2 [--dataset e2e_nlg]
        [--techniques naive,graphs,ss,best] [--model 125m] [--out docs/results/<GPU>] [-- PYTEST ARGS]

Each run is `pytest bench/` in a new process (its JSON under OUT/runs/); the injections come from
scripts/gate_inject.py, a pytest plugin only this script installs. Writes OUT/gate-validation.json
and OUT/gate-validation.md. `--reuse` re-analyses the runs already under OUT/runs/."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmopt import compare  # noqa: E402  (after the path: run from a checkout)
from llmopt.names import slug  # noqa: E402


def bench(out: Path, name: str, args, extra: list[str], inject: str | None = None, interleave: str = "cells") -> Path:
    """One `pytest bench/` process; returns its JSON."""
    path = out / "runs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "scripts"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", str(ROOT / "bench"), "-q", "--datasets", args.dataset,
               "--techniques", args.techniques, "--model", args.model, "--interleave", interleave,
               f"--benchmark-json={path}", *extra]
    if inject:
        env["GATE_INJECT"] = inject
        command[3:3] = ["-p", "gate_inject"]
    # pinned to --cpus: a process that lands on other cores each time is one suspect of the
    # between-process spread; the job runs this beside the unpinned runs to measure it
    pin = (lambda: os.sched_setaffinity(0, args.cpus)) if args.cpus else None
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, preexec_fn=pin)
    (out / "runs" / f"{name}.log").write_text(result.stdout + result.stderr)
    print(f"{name}: exit {result.returncode} in {time.perf_counter() - start:.0f} s", flush=True)
    if result.returncode != 0 or not path.is_file():
        raise SystemExit(f"{name} failed; see {out / 'runs' / (name + '.log')}")
    return path


def cpu_list(text: str) -> set[int]:
    """"2-3,6" -> {2, 3, 6}, the notation of taskset -c."""
    cpus = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CPU list like 2-3,6: {text!r}") from None
    available = os.sched_getaffinity(0)
    if not cpus or not cpus <= available:
        raise argparse.ArgumentTypeError(f"CPUs {text} are not all available here: {sorted(available)}")
    return cpus


def spread(values: list[float]) -> float:
    return max(values) / min(values) - 1


def per_cell(runs: list[compare.Run]) -> dict[str, dict]:
    """Each cell's tokens/s and speed-up over naive across runs, with the spread (max / min - 1)."""
    table = {}
    for cell in runs[0].cells:
        rates = [r.cells[cell]["tokens_per_s"] for r in runs]
        row = {"tokens_per_s": rates, "tokens_per_s_spread": spread(rates),
               "converged": [r.cells[cell].get("converged") for r in runs],
               "rounds": [r.cells[cell].get("rounds") for r in runs]}
        ups = [compare.speedups(r, cell) for r in runs]
        if cell[1] != compare.NAIVE and all(ups):
            row["speedup"] = [u[0] for u in ups]
            row["speedup_spread"] = spread(row["speedup"])
        table["/".join(cell)] = row
    return table


# Statistics of a cell's rounds that could be reported instead of the median: which one spreads least
# between processes is a measured choice (issue: "measure which method cuts the spread most")
STATISTICS = {"median of all rounds": lambda x: float(np.median(x)), "upper quartile": lambda x: float(np.percentile(x, 75)),
              "fastest round": lambda x: float(np.max(x))}
HOST_COUNTERS = ("round_other_cpu_s", "round_steal_s", "round_involuntary_switches")
LAUNCH = "round_launch_s"


def has_host_load(record: dict) -> bool:  # runs before llmopt.host_load, or off Linux, lack it
    return all(k in record for k in HOST_COUNTERS)


def statistic_spreads(runs: list[compare.Run]) -> dict[str, dict[str, float]]:
    """Per cell, the between-process spread of tokens/s under each candidate statistic, and of the
    median of tokens/s x the host's launch cost (`compare.host_normalized`, the gate's reference
    for naive) where every run probed it: how much of the spread the host's own speed explains."""
    table = {}
    for cell in runs[0].cells:
        table["/".join(cell)] = row = {name: spread([f(compare.rates(r.cells[cell])[1]) for r in runs])
                                       for name, f in STATISTICS.items()}
        if all(normalized := [compare.host_normalized(r.cells[cell]) for r in runs]):
            row["x launch cost"] = spread([n[0] for n in normalized])
    return table


def speedup_spreads(runs: list[compare.Run]) -> dict[str, dict[str, float]]:
    """Per cell, the between-process spread of its speed-up over naive: the median of same-cycle
    ratios (what the gate reads) against the ratio of the two cells' reported medians."""
    table = {}
    for cell in runs[0].cells:
        naive = (cell[0], compare.NAIVE)
        ups = [compare.speedups(r, cell) for r in runs]
        if cell[1] == compare.NAIVE or naive not in runs[0].cells or not all(ups):
            continue
        table["/".join(cell)] = {
            "median of paired ratios": spread([u[0] for u in ups]),
            "ratio of medians": spread([r.cells[cell]["tokens_per_s"] / r.cells[naive]["tokens_per_s"] for r in runs])}
    return table


def host_correlations(runs: list[compare.Run]) -> dict[str, dict[str, float | None]]:
    """Per cell, Spearman's rank correlation, over every round of every run, between a round's time
    per token and each host counter (llmopt.host_load): which kind of host load the slow rounds had."""
    table = {}
    for cell in runs[0].cells:
        records = [r.cells[cell] for r in runs]
        if not all(map(has_host_load, records)):
            continue
        seconds_per_token = [1 / x for rec in records for x in compare.rates(rec)[1]]
        row = {}
        # the launch probe beside each round (llmopt.host_load.launch_s), where the runs recorded it
        for key in HOST_COUNTERS + (LAUNCH,) * all(LAUNCH in rec for rec in records):
            counter = [c for rec in records for c in rec[key]]
            rho = spearmanr(seconds_per_token, counter).statistic if len(set(counter)) > 1 else None
            row[key.removeprefix("round_")] = None if rho is None or np.isnan(rho) else float(rho)
        table["/".join(cell)] = row
    return table


def host_load_per_run(runs: list[compare.Run], names: list[str]) -> dict[str, dict[str, float]]:
    """Per run, the host counters summed over every timed round of every cell, per second of those
    rounds: a process that was slow throughout (not in single rounds) shows here or nowhere."""
    table = {}
    for name, run in zip(names, runs):
        records = [rec for rec in run.cells.values() if has_host_load(rec)]
        seconds = sum(sum(rec.get("round_wall_s") or []) for rec in records)
        if records and seconds > 0:
            table[name] = {k.removeprefix("round_"): sum(sum(rec[k]) for rec in records) / seconds for k in HOST_COUNTERS}
            # the host's cost of one launch in this process: eager cells move with it
            op_s = compare.host_op_s(run)
            table[name]["launch_us"] = None if op_s is None else op_s * 1e6
    return table


def verdicts(baseline: compare.Run, current: compare.Run) -> list[dict]:
    return [{"cell": "/".join(f.cell) if f.cell else None, "kind": f.kind, "message": f.message}
            for f in compare.gate(current, baseline)]


def analyse(out: Path, runs: list[Path], sequential: list[Path], slow: Path | None, changed: Path | None,
            slow_cell: str, changed_cell: str) -> dict:
    loaded = [compare.load_run(p) for p in runs]
    pairs = []
    for a, b in itertools.permutations(range(len(loaded)), 2):
        pairs.append({"baseline": runs[a].stem, "current": runs[b].stem, "failures": verdicts(loaded[a], loaded[b])})
    result = {
        "gpu": loaded[0].gpu, "versions": loaded[0].versions(),
        "identical_runs": per_cell(loaded),
        "statistic_spreads": statistic_spreads(loaded),
        "speedup_spreads": speedup_spreads(loaded),
        "host_correlations": host_correlations(loaded),
        "host_load_per_run": host_load_per_run(loaded, [p.stem for p in runs]),
        "ordered_pairs": len(pairs),
        "false_failures": sum(bool(p["failures"]) for p in pairs),
        "pairs": pairs,
    }
    if sequential:
        result["sequential_runs"] = per_cell([compare.load_run(p) for p in sequential])
    for label, path, cell, kind in (("slowdown", slow, slow_cell, "speed"), ("output_change", changed, changed_cell, "output")):
        if path is None:
            continue
        injected = compare.load_run(path)
        found = [verdicts(base, injected) for base in loaded]
        caught = [any(f["kind"] == kind and f["cell"] == cell for f in v) for v in found]
        others = [[f for f in v if f["cell"] != cell] for v in found]
        result[label] = {"cell": cell, "caught": sum(caught), "of": len(caught),
                         "other_failures": sum(bool(o) for o in others), "failures": found}
    return result


def _joined(values, fmt: str) -> str:
    return " / ".join(fmt.format(v) for v in values)


def cell_table(rows: dict[str, dict]) -> list[str]:
    lines = ["| cell | tokens/s per run | spread | speed-up over naive per run | spread | rounds | converged |",
             "|---|---|---:|---|---:|---|---|"]
    for cell, row in rows.items():
        ups = row.get("speedup")
        lines.append("| " + " | ".join([
            cell, _joined(row["tokens_per_s"], "{:.0f}"), f"{row['tokens_per_s_spread']:.1%}",
            _joined(ups, "{:.2f}") if ups else "–", f"{row['speedup_spread']:.1%}" if ups else "–",
            "/".join(map(str, row["rounds"])), "/".join("y" if c else "n" for c in row["converged"])]) + " |")
    return lines


def keyed_table(first: str, rows: dict[str, dict], fmt: str) -> list[str]:
    """A Markdown table of {name: {column: value}}, one row per name; None is shown as "–"."""
    columns = list(next(iter(rows.values())))
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    return lines + [f"| {name} | " + " | ".join("–" if row[c] is None else fmt.format(row[c]) for c in columns) + " |"
                    for name, row in rows.items()]


def markdown(result: dict) -> str:
    lines = [f"# Gate validation: {result['gpu']}", "", f"Software: {result['versions']}.", "",
             "Identical `pytest bench/` runs, each a new process (`--interleave cells`, the default):", "",
             *cell_table(result["identical_runs"])]
    if "sequential_runs" in result:
        lines += ["", "The same cells one after another (`--interleave off`), each run a new process:", "",
                  *cell_table(result["sequential_runs"])]
    for key, first, fmt, title in (
            ("statistic_spreads", "cell", "{:.1%}", "Between-process spread of tokens/s by the statistic taken over a "
             "cell's rounds (the reported figure is the median after the outlier rule):"),
            ("speedup_spreads", "cell", "{:.1%}", "Between-process spread of the speed-up over naive by how it is "
             "formed (the reported one is the median of same-cycle ratios):"),
            ("host_correlations", "cell", "{:+.2f}", "Spearman correlation, over all rounds of the identical runs, of a "
             "round's time per token with what else the host did meanwhile (`llmopt/host_load.py`):"),
            ("host_load_per_run", "run", "{:.3g}", "The host's load per second of timed rounds, per run (other "
             "CPU-seconds, steal CPU-seconds, preemptions of the benchmark process), and the host's cost of one tiny "
             "launch in microseconds (`host_op_s`):")):
        if result.get(key):
            lines += ["", title, "", *keyed_table(first, result[key], fmt)]
    lines += ["", f"Gate at its defaults over all {result['ordered_pairs']} ordered pairs of identical runs: "
              f"**{result['false_failures']} false failures**."]
    for label, title in (("slowdown", "Injected 10% slowdown"), ("output_change", "Injected output change")):
        if label in result:
            r = result[label]
            lines.append(f"{title} of `{r['cell']}`: caught against {r['caught']} of {r['of']} baselines "
                         f"(other cells failing: {r['other_failures']}).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sequential-runs", type=int, default=0)
    parser.add_argument("--dataset", default="e2e_nlg")
    parser.add_argument("--techniques", default="naive,graphs,ss,best")
    parser.add_argument("--model", default="125m")
    parser.add_argument("--slow", default="graphs", help="the technique slowed by 10%% (default graphs)")
    parser.add_argument("--changed", default="ss", help="the technique whose output is changed (default ss)")
    parser.add_argument("--injections", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the slowed and the changed process (default yes)")
    parser.add_argument("--cpus", type=cpu_list, help="pin every bench process to these CPUs, e.g. 2-3 or 2,5 (Linux)")
    parser.add_argument("--out", type=Path, help="default docs/results/<GPU model>")
    parser.add_argument("--reuse", action="store_true", help="analyse the runs already under OUT/runs (those that finished)")
    parser.add_argument("--resume", action="store_true", help="run only the runs not yet under OUT/runs, then analyse all")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if args.out is None:
        import torch

        args.out = ROOT / "docs" / "results" / slug(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    out = args.out
    names = [f"identical_{i + 1}" for i in range(args.runs)]
    seq_names = [f"sequential_{i + 1}" for i in range(args.sequential_runs)]
    # the order makes a cut-off run useful: two identical runs and both injections first
    injected = ["slowdown", "output_change"] if args.injections else []
    plan = [*names[:2], *injected, *names[2:], *seq_names]
    if not args.reuse:
        for name in plan:
            if args.resume and (out / "runs" / f"{name}.json").is_file():
                continue
            inject = {"slowdown": f"slow:{args.slow}:0.10", "output_change": f"output:{args.changed}"}.get(name)
            bench(out, name, args, extra, inject=inject, interleave="off" if name.startswith("sequential") else "cells")

    def done(name):  # with --reuse, what a cut-off job finished
        path = out / "runs" / f"{name}.json"
        return path if path.is_file() else None
    runs, sequential = [p for p in map(done, names) if p], [p for p in map(done, seq_names) if p]
    slow, changed = done("slowdown"), done("output_change")
    result = analyse(out, runs, sequential, slow, changed, f"{args.dataset}/{args.slow}", f"{args.dataset}/{args.changed}")
    (out / "gate-validation.json").write_text(json.dumps(result, indent=2))
    (out / "gate-validation.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
