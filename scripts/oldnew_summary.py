"""The refactor's speed over several hosts: `validation_job.sh oldnew` runs, one directory per host.

    python scripts/oldnew_summary.py OUT.md DIR [DIR ...]

Each DIR holds old_1.json new_1.json old_2.json [new_2.json ...], run in that order (old new old new)
on one machine. Per host and cell: every process's median tokens/s in run order, each new process
against the geometric mean of the old processes just before and after it (so a host drifting
linearly cancels), and the old code's own spread (max / min - 1). Then `llmopt compare` at its
defaults over every ordered pair of processes of a host: how often the gate fails old -> new, against
how often it fails identical code (old -> old, new -> new). A saved pair has no re-measurement."""
import math
import statistics
import sys
from itertools import permutations
from pathlib import Path

from llmopt import compare


def processes(directory: Path) -> list[tuple[str, compare.Run]]:
    names = sorted((p.stem for p in directory.glob("*_[0-9]*.json") if p.stat().st_size and p.stem[:3] in ("old", "new")),
                   key=lambda n: (int(n.split("_")[1]), n != "old_" + n.split("_")[1]))
    return [(n, compare.load_run(directory / f"{n}.json")) for n in names]


def median(run: compare.Run, technique: str) -> float:
    return next(r["tokens_per_s"] for cell, r in run.cells.items() if cell[1] == technique)


def main(out: str, *dirs: str) -> None:
    lines, ratios, gate_counts = [], {}, {"old -> new": [0, 0], "new -> old": [0, 0], "identical code": [0, 0]}
    for d in map(Path, dirs):
        runs = processes(d)
        techniques = [cell[1] for cell in runs[0][1].cells]
        lines += [f"## {d.name}: {', '.join(n for n, _ in runs)}", "",
                  "| technique | tokens/s per process, in run order | new / old neighbours | old code's spread |",
                  "|---|---|---|---:|"]
        for t in techniques:
            rates = [median(run, t) for _, run in runs]
            new_vs_old = []
            for i, (name, _) in enumerate(runs):
                if name.startswith("new"):
                    near = [rates[j] for j in (i - 1, i + 1) if 0 <= j < len(runs) and runs[j][0].startswith("old")]
                    new_vs_old.append(rates[i] / math.exp(statistics.fmean(map(math.log, near))))
            ratios.setdefault(t, []).extend(new_vs_old)
            olds = [r for (n, _), r in zip(runs, rates) if n.startswith("old")]
            lines.append(f"| {t} | {' · '.join(f'{r:.0f}' for r in rates)} | "
                         f"{' · '.join(f'{x - 1:+.1%}' for x in new_vs_old)} | {max(olds) / min(olds) - 1:.1%} |")
        lines += ["", "| baseline -> current | gate | slower cells |", "|---|---|---|"]
        for (bn, base), (cn, cur) in permutations(runs, 2):
            failures = compare.gate(cur, base)
            kind = "identical code" if bn[:3] == cn[:3] else f"{bn[:3]} -> {cn[:3]}"
            gate_counts[kind][0] += bool(failures); gate_counts[kind][1] += 1
            lines.append(f"| {bn} -> {cn} | {'FAILED' if failures else 'passed'} | "
                         f"{', '.join(f.cell[1] for f in failures if f.cell) or '-'} |")
        lines.append("")
    head = ["# The refactor's speed, host by host (`llmopt compare` at its defaults)", "",
            "| pairs | gate failed |", "|---|---:|",
            *(f"| {k} | {f} of {n} |" for k, (f, n) in gate_counts.items()), "",
            "| technique | new / old neighbours, every new process | median |", "|---|---|---:|",
            *(f"| {t} | {' · '.join(f'{x - 1:+.1%}' for x in xs)} | {statistics.median(xs) - 1:+.1%} |"
              for t, xs in ratios.items()), ""]
    Path(out).write_text("\n".join(head + lines) + "\n")
    print("\n".join(head + lines))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
