"""Markdown results from saved runs: per run (one GPU) the tokens/s table the original project
published (techniques x datasets, median with min–max), the speed-up over `naive` of the same run
and the cell details; with several runs, tokens/s side by side across GPUs. The output depends
only on the input files, so a committed report changes only when a run does."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .compare import Run, load_run
from .names import datasets, drafting, parts, slug, techniques, title
from .strategies.techniques import plain_twin as techniques_plain_twin

QUALITY_TITLES = {"exact_match": "EM", "rouge_l": "ROUGE-L"}
DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
REPORT = "benchmarks.md"


def _spread(r: dict) -> str:
    """Min–max as the README writes it: whole tokens/s once they reach three digits."""
    digits = 0 if r["tokens_per_s_max"] >= 100 else 1
    return f"{r['tokens_per_s_min']:.{digits}f}–{r['tokens_per_s_max']:.{digits}f}"


def _speedup(run: Run, cell: tuple[str, str]) -> str:
    """The speed-up over the same run's `naive` as the benchmark recorded it (the median of
    same-cycle ratios, the gate's), else, for runs that predate it, the ratio of the medians."""
    record, naive = run.cells[cell], run.cells.get((cell[0], "naive"))
    if record.get("speedup_over_naive") is not None:
        return f"{record['speedup_over_naive']:.2f}×"
    return f"{record['tokens_per_s'] / naive['tokens_per_s']:.2f}×" if naive else "–"


def _label(run: Run, technique: str) -> str:
    dtypes = dict.fromkeys(DTYPES.get(r.get("dtype"), r.get("dtype")) for (_, t), r in run.cells.items() if t == technique)
    dtypes.pop(None, None)
    return f"{technique} ({', '.join(dtypes)})" if dtypes else technique


def _grid(run: Run, names: list[str], cell_text) -> list[str]:
    """Rows = techniques, columns = datasets."""
    lines = ["| technique | " + " | ".join(title(d) for d in names) + " |",
             "|---" + "|---:" * len(names) + "|"]
    for t in techniques([run]):
        lines.append(f"| {_label(run, t)} | " + " | ".join(
            cell_text((d, t)) if (d, t) in run.cells else "–" for d in names) + " |")
    return lines


def _facts(run: Run) -> list[str]:
    info, cells = run.machine_info, list(run.cells.values())
    # a model given as a directory path is named by its checkpoint (dataset, shape, objective, key)
    models = sorted({str(c["checkpoint"] if c.get("checkpoint") and str(c.get("model")).startswith("/") else c.get("model"))
                     for c in cells})
    workload = {k: sorted({str(c.get(k)) for c in cells}) for k in ("num_prompts", "max_new_tokens")}
    rounds = sorted({len(c.get("tokens_per_s_rounds") or []) for c in cells}) or [0]
    gpus = f" × {info['gpu_count']}" if (info.get("gpu_count") or 1) > 1 else ""
    merged = ", ".join(f"`{m['file']}`" for m in (run.doc or {}).get("merged_from") or [])
    span = str(rounds[0]) if len(rounds) == 1 else f"{rounds[0]}–{rounds[-1]}"
    return [f"- GPU: {run.gpu}{gpus}",
            f"- date: {run.datetime[:16].replace('T', ' ')} UTC",
            f"- software: {run.versions()}",
            f"- workload: model {', '.join(models)}; {'/'.join(workload['num_prompts'])} prompts, "
            f"up to {'/'.join(workload['max_new_tokens'])} new tokens, "
            f"{span} rounds",
            f"- saved run: `{run.name}`" + (f", commit {run.commit}" if run.commit and run.commit != "unknown" else "")
            + (f"; merged from {merged} (date, software and commit: the first's)" if merged else "")]


def _maybe(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _details(run: Run, names: list[str]) -> list[str]:
    lines = ["| technique | dataset | mean accepted tokens | acceptance | peak memory (MiB) | quality | match naive | "
             "floor fraction | kernels/token | device busy |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in techniques([run]):
        for d in names:
            r = run.cells.get((d, t))
            if r is None:
                continue
            peak = r.get("peak_memory_bytes")
            acceptance = r.get("acceptance_ratio")
            match = r.get("match_naive")
            quality = (f"{QUALITY_TITLES.get(r['quality_metric'], r['quality_metric'])} {r['quality']:.1f}"
                       if r.get("quality_metric") else "–")
            lines.append(f"| {t} | {title(d)} | {r['mean_accepted_tokens']:.2f} | {'–' if acceptance is None else f'{acceptance:.2f}'} | "
                         f"{'–' if peak is None else f'{peak / 2**20:.0f}'} | {quality} | "
                         f"{'–' if match is None else f'{match:.2f}'} | {_maybe(r.get('bandwidth_floor_fraction'), '.2f')} | "
                         f"{_maybe(r.get('kernels_per_token'), '.0f')} | {_maybe(r.get('device_busy_fraction'), '.2f')} |")
    return lines


def plain_twin(run: Run, cell: tuple[str, str]) -> str | None:
    """The technique a drafting cell should beat (techniques.plain_twin), if the run has it; saved
    names are read by `names.parts` (a name the grammar no longer takes, as written)."""
    dataset, technique = cell
    return techniques_plain_twin(technique, [t for d, t in run.cells if d == dataset], parts)


def _over_twin(run: Run, cell: tuple[str, str]) -> str:
    """× the plain captured twin: the recorded paired median with its interval (the twin timed in
    the same cycles), else the ratio of the two medians; "–" without a twin in the run."""
    r = run.cells[cell]
    twin = plain_twin(run, cell)
    if twin is None:
        return "–"
    if r.get("twin") == twin and r.get("speedup_over_twin") is not None:
        ci = r.get("speedup_over_twin_ci")
        return f"{r['speedup_over_twin']:.2f}×" + (f" [{ci[0]:.2f}–{ci[1]:.2f}]" if ci else "") + f" (`{twin}`)"
    return f"{r['tokens_per_s'] / run.cells[cell[0], twin]['tokens_per_s']:.2f}× (`{twin}`, ratio of medians)"


def _count(n) -> str:
    return "–" if n is None else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def _bytes(n) -> str:
    return "–" if n is None else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _extra(r: dict) -> str:
    """Extra parameters with their bytes ("3.1 k (6.0 KiB)"); "–" for a record from before they were kept."""
    n = r.get("extra_parameters")
    return "–" if n is None else f"{_count(n)} ({_bytes(r.get('extra_parameter_bytes'))})"


def peers(run: Run, names: list[str]) -> list[str]:
    """Speculative Streaming against its peers: every drafting cell (ss, pld, sps, medusa and their
    compositions) with its speed-ups, accepted tokens per step, what it adds to the model and
    what its training took (the checkpoint's, and the drafter's for a peer trained apart)."""
    lines = ["| dataset | method | tokens/s | × naive | × plain captured twin | accepted tokens/step | "
             "extra parameters | checkpoint training | drafter training |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for d in names:
        for t in techniques([run]):
            r = run.cells.get((d, t))
            if r is None or not drafting(t):
                continue
            over_twin = _over_twin(run, (d, t))
            seconds = [r.get("checkpoint_train_time_s"), r.get("drafter_train_time_s")]
            lines.append(f"| {title(d)} | {_label(run, t)} | {r['tokens_per_s']:.1f} | {_speedup(run, (d, t))} | "
                         f"{over_twin} | {r['mean_accepted_tokens']:.2f} | "
                         f"{_extra(r)} | "
                         + " | ".join("–" if x is None else f"{x:.0f} s" for x in seconds) + " |")
    return lines if len(lines) > 2 else []


def run_section(run: Run, figures: list[tuple[str, str]] = ()) -> list[str]:
    names = datasets([run])
    lines = [f"## {run.gpu}", "", *_facts(run), "",
             "tokens/s, median over rounds (min–max):", "",
             *_grid(run, names, lambda c: f"{run.cells[c]['tokens_per_s']:.1f} ({_spread(run.cells[c])})"),
             ""]
    if any(t == "naive" for _, t in run.cells):
        lines += ["Speed-up over `naive` (same run; the median of same-cycle ratios where recorded, else the ratio "
                  "of medians):", "", *_grid(run, names, lambda c: _speedup(run, c)), ""]
    if table := peers(run, names):
        lines += ["Speculative Streaming and its peers (each drafting method, against `naive` as in the speed-up "
                  "table and against its plain captured twin: the median of same-cycle ratios with its interval "
                  "where recorded, else the ratio of medians):", "", *table, ""]
    lines += ["Per cell: mean accepted tokens per target forward, acceptance ratio of drafted tokens, "
              "peak GPU memory, quality of the outputs, share of prompts identical to plain greedy decoding, "
              "the share of the bandwidth floor reached, device kernels per token and the share of a token's "
              "time the device was busy (kernel time, from a profiled child process, over the measured time):", "",
              *_details(run, names), ""]
    for title, file in figures:
        lines += [f"![{title}]({file})", ""]
    return lines


def _column_titles(runs: list[Run]) -> list[str]:
    """GPU names, with the saved run's file name where a GPU appears twice."""
    gpus = [run.gpu for run in runs]
    return [g if gpus.count(g) == 1 else f"{g} ({Path(run.name).stem})" for g, run in zip(gpus, runs)]


def across_gpus(runs: list[Run]) -> list[str]:
    lines = ["## Across GPUs", "",
             "tokens/s median (speed-up over `naive` of the same run); absolute numbers compare only "
             "beside their GPU:", "",
             "| technique | dataset | " + " | ".join(_column_titles(runs)) + " |",
             "|---|---" + "|---:" * len(runs) + "|"]
    for t in techniques(runs):
        for d in datasets(runs):
            if not any((d, t) in run.cells for run in runs):
                continue
            values = [f"{run.cells[d, t]['tokens_per_s']:.1f} ({_speedup(run, (d, t))})" if (d, t) in run.cells else "–"
                      for run in runs]
            lines.append(f"| {t} | {title(d)} | " + " | ".join(values) + " |")
    return lines + [""]


def markdown(runs: list[Run], figures: dict[str, list[tuple[str, str]]] | None = None) -> str:
    """The report; `figures` maps a run's name to (title, file) pairs to embed."""
    figures = figures or {}
    lines = ["# Benchmark results", "",
             "Batch 1, greedy decoding; tokens/s = generated tokens / wall time of the generate calls "
             "(see the benchmark protocol). Written by `llmopt report` from "
             + ", ".join(f"`{run.name}`" for run in runs) + ".", ""]
    if len(runs) > 1:
        lines += across_gpus(runs)
    for run in runs:
        lines += run_section(run, figures.get(run.name, []))
    return "\n".join(lines).rstrip() + "\n"


README_START, README_END = "<!-- llmopt report: start -->", "<!-- llmopt report: end -->"


def readme_block(runs: list[Run], report: Path) -> str:
    """The README's results: per saved run its GPU, date and software, and tokens/s (speed-up over
    `naive`) per technique and dataset, with a link to the full report."""
    lines = [README_START, "<!-- generated by `llmopt report --readme`: edit outside these markers -->", ""]
    for run in runs:
        names = datasets([run])
        lines += [f"**{run.gpu}**, {run.datetime[:10]}; {run.versions()}; saved run `{run.name}`", "",
                  *_grid(run, names, lambda c, run=run: f"{run.cells[c]['tokens_per_s']:.1f} ({_speedup(run, c)})"),
                  ""]
    lines += [f"tokens/s median over rounds (speed-up over `naive` of the same run). Full report, per-cell "
              f"details and plots: [{report.as_posix()}]({report.as_posix()}).", README_END]
    return "\n".join(lines)


def update_readme(readme: Path, runs: list[Run], report: Path) -> None:
    """Replace the block between the README's markers with `readme_block`."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no '{README_START}' ... '{README_END}' block to fill")
    readme.write_text(text[:start] + readme_block(runs, report) + text[end + len(README_END):])


SIZES_PLOT = "simulated-sizes.png"


def simulated_sizes_section(records: list[dict], figures: list[tuple[str, str]], sources: list[str] = ()) -> str:
    """The random-weight sweeps: per size and draft accuracy, accepted tokens per step and the
    speed-up over the plain captured twin timed in the same process ("" without any); `sources`:
    the sweeps' file names, said under the heading."""
    if not records:
        return ""
    lines = ["", "## SIMULATED drafts at model sizes without a trained checkpoint", "",
             "`scripts/ss_simulate.py --random-weights`: random weights, the real captured step, draft tokens "
             "right at a controlled rate (never a measurement of trained streams). Speed-up over the plain "
             "captured twin timed in the same process, median tokens/s over rounds (min–max)"
             + (f"; from {', '.join(f'`{s}`' for s in sources)}" if sources else "") + ":", "",
             "| size | technique | draft accuracy | accepted tokens/step | tokens/s | × plain twin |",
             "|---|---|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['simulated_model']} | {r['technique']} | {r['draft_accuracy']:.2f} | "
                     f"{r['mean_accepted_tokens']:.2f} | {r['tokens_per_s']:.1f} ({r['tokens_per_s_min']:.0f}–"
                     f"{r['tokens_per_s_max']:.0f}) | {r['speedup_over_naive']:.2f}× |")
    lines += [""] + [f"![{title}]({name})" for title, name in figures]
    return "\n".join(lines) + "\n"


def join_simulated(runs: list[Run], records: list[dict]) -> None:
    """Add a simulated sweep's records to the runs they belong to: those with a measured cell of the
    same dataset and checkpoint (the sweep ran that model), or the only run given."""
    for r in records:
        home = [run for run in runs if any(c.get("checkpoint") == r.get("checkpoint") and c["dataset"] == r.get("dataset")
                                           for c in run.cells.values())] if r.get("checkpoint") else []
        if not home and len(runs) == 1:
            home = runs
        if not home:
            raise ValueError(f"the simulated {r.get('dataset')} sweep of checkpoint {r.get('checkpoint')} matches "
                             "no saved run given: pass the run that measured that checkpoint")
        for run in home:
            run.records.append(r)


def write(paths: list[str | Path], out: str | Path, simulated: list[str | Path] = (),
          readme: str | Path | None = None) -> list[Path]:
    """Write the Markdown report of the saved runs at `paths` into `out`, with two PNG figures per
    run when matplotlib (the `plot` extra) is installed. `simulated`: JSON lists from
    scripts/ss_simulate.py, each made on the GPU of the run that measured its checkpoints, whose
    `simulated: true` records join that run's acceptance plot (never its tables; join_simulated).
    `readme`: a README whose marked block gets the results tables (`update_readme`). Returns the
    files written."""
    runs = [load_run(p) for p in paths]
    sizes, sources = [], []  # the sweeps with random weights: their own section and figure, no run's
    for sweep in simulated:
        records = [r for r in json.loads(Path(sweep).read_text()) if r.get("simulated")]
        if any(r.get("random_weights") for r in records):
            sizes += [r for r in records if r.get("random_weights")]
            sources.append(Path(sweep).name)
        join_simulated(runs, [r for r in records if not r.get("random_weights")])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures, written = {}, []
    try:
        from . import plots  # lazily: matplotlib is an optional dependency (the `plot` extra)
    except ImportError:
        print("llmopt report: matplotlib is not installed (pip install -e '.[plot]'): no plots", file=sys.stderr)
    else:
        for run in runs:
            stem = f"{slug(run.gpu)}-{slug(Path(run.name).stem)}"
            pairs = [("tokens/s against acceptance ratio", plots.acceptance_plot(run, out / f"{stem}-acceptance.png")),
                     ("time per decoding step", plots.step_time_plot(run, out / f"{stem}-step-time.png"))]
            figures[run.name] = [(title, path.name) for title, path in pairs]
            written += [path for _, path in pairs]
        if sizes:
            written.append(plots.simulated_sizes_plot(sizes, out / SIZES_PLOT))
            figures[SIZES_PLOT] = [("simulated speed-up by model size", SIZES_PLOT)]
    report = out / REPORT
    report.write_text(markdown(runs, figures) + simulated_sizes_section(sizes, figures.get(SIZES_PLOT, []), sources))
    if readme is not None:
        update_readme(Path(readme), runs, Path(os.path.relpath(report, Path(readme).parent)))
        written.append(Path(readme))
    return [report, *written]
