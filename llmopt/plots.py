"""Figures that explain the tables: where speculative decoding pays (tokens/s against acceptance
ratio, the plain techniques as reference lines) and where a decoding step's time goes (draft /
forward / verify+commit). Drawn on matplotlib's Agg canvas without pyplot: no global state, no
display needed."""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .compare import Run, column
from .names import datasets, drafting, techniques, title

STEP_PARTS = (("step_prepare_s", "draft (tree, masks, a draft model's forwards)", "#f2a541"),
              ("step_forward_s", "forward", "#3d6fb6"),
              ("step_verify_s", "verify + commit", "#c8553d"))
# matplotlib's tab20, dark shades first: up to 20 techniques without a repeated colour
COLORS = colormaps["tab20"].colors[0::2] + colormaps["tab20"].colors[1::2]


def _figure(n: int, panel_width: float = 5.2) -> Figure:
    fig = Figure(figsize=(panel_width * n + 0.6, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120, metadata={"Software": None})  # no version stamp: same run, same bytes
    return path


def _colors(run: Run) -> dict[str, str]:
    """One colour per technique, the same in every panel."""
    names = techniques([run]) + [r["technique"] for r in run.records if r.get("simulated")]
    return {t: COLORS[i % len(COLORS)] for i, t in enumerate(dict.fromkeys(names))}


def acceptance_plot(run: Run, path: str | Path) -> Path:
    """Per dataset: measured speculative cells (records with `acceptance_ratio`) as filled points,
    simulated sweep points (`simulated: true`) as a dashed line of hollow points, and every
    non-speculative technique as a horizontal line at its tokens/s."""
    colors = _colors(run)
    names = datasets([run]) or [None]
    fig = _figure(len(names))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, dataset in zip(axes, names):
        cells = [r for (d, _), r in run.cells.items() if d == dataset]
        simulated = sorted((r for r in run.records if r.get("simulated") and "dataset" in r and column(r) == dataset),
                           key=lambda r: (r["technique"], r["acceptance_ratio"]))
        top = max([r["tokens_per_s"] for r in cells + simulated], default=1.0)
        for r in cells:
            if "acceptance_ratio" in r:
                ax.scatter(r["acceptance_ratio"], r["tokens_per_s"], s=60, color=colors[r["technique"]],
                           zorder=3, label=f"{r['technique']} (measured)")
            else:  # a stock reference drafts, but transformers does not say how many tokens it proposed
                drafts = drafting(r["technique"])
                ax.axhline(r["tokens_per_s"], color=colors[r["technique"]], lw=1.5, ls=":" if drafts else "-", alpha=0.8,
                           label=f"{r['technique']} ({'acceptance not recorded' if drafts else 'no drafting'})")
        for technique in dict.fromkeys(r["technique"] for r in simulated):
            points = [r for r in simulated if r["technique"] == technique]
            ax.plot([r["acceptance_ratio"] for r in points], [r["tokens_per_s"] for r in points], ls="--", marker="o",
                    mfc="white", color=colors[technique], zorder=2, label=f"{technique} (simulated)")
        if not any("acceptance_ratio" in r for r in cells) and not simulated:
            ax.text(0.5, 0.06, "no speculative technique in this run", transform=ax.transAxes, ha="center",
                    color="0.4", fontsize=9)
        ax.set(xlim=(0, 1), ylim=(0, top * 1.15), xlabel="acceptance ratio (accepted / proposed draft tokens)",
               ylabel="tokens/s", title=title(dataset) if dataset else "no cells")
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"{run.gpu}: tokens/s against acceptance ratio\n(batch 1, greedy)")
    return _save(fig, Path(path))


def simulated_sizes_plot(records: list[dict], path: str | Path) -> Path:
    """The simulated sweeps with random weights (scripts/ss_simulate.py --random-weights): speed-up
    over the plain captured twin against accepted tokens per step, one line per model size; where
    a line crosses 1.0 the technique starts to pay at that size."""
    fig = _figure(1, 6.4)
    ax = fig.subplots()
    sizes = list(dict.fromkeys(r["simulated_model"] for r in records))
    for i, size in enumerate(sizes):
        points = sorted((r for r in records if r["simulated_model"] == size), key=lambda r: r["mean_accepted_tokens"])
        ax.plot([r["mean_accepted_tokens"] for r in points], [r["speedup_over_naive"] for r in points], ls="--",
                marker="o", mfc="white", color=COLORS[i % len(COLORS)], label=f"{points[0]['technique']}, {size}")
    ax.axhline(1.0, color="0.3", lw=1, label="break-even (the plain captured twin)")
    ax.set(xlabel="accepted tokens per step (root included)", ylabel="speed-up over the plain captured twin",
           xlim=(1, None), ylim=(0, None))
    ax.grid(alpha=0.3)
    _legend(fig, [ax])
    fig.suptitle("SIMULATED drafts on the real captured step, random weights\n(batch 1, greedy; E2E prompts)")
    return _save(fig, Path(path))


def step_time_plot(run: Run, path: str | Path) -> Path:
    """Per dataset, one stacked bar per technique: mean time per target forward step, in ms."""
    names = datasets([run]) or [None]
    bars = max((sum(1 for d, _ in run.cells if d == name) for name in names), default=1)
    fig = _figure(len(names), max(5.2, 0.42 * bars + 1.0))
    axes = fig.subplots(1, len(names), squeeze=False, sharey=True)[0]
    top = 0.0
    for ax, dataset in zip(axes, names):
        cells = [r for (d, _), r in run.cells.items() if d == dataset and "step_forward_s" in r]
        x = range(len(cells))
        bottom = [0.0] * len(cells)
        for key, label, color in STEP_PARTS:
            ms = [1000 * (r.get(key) or 0.0) for r in cells]
            ax.bar(x, ms, bottom=bottom, color=color, label=label, width=0.6)
            bottom = [b + m for b, m in zip(bottom, ms)]
        for i, total in enumerate(bottom):
            ax.annotate(f"{total:.2f}", (i, total), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
        ax.set_xticks(list(x), [r["technique"] for r in cells], rotation=50, ha="right", rotation_mode="anchor")
        ax.set(xlabel="technique", title=title(dataset) if dataset else "no cells")
        ax.grid(axis="y", alpha=0.3)
        top = max([top, *bottom])
    axes[0].set(ylabel="ms per step (one target forward)", ylim=(0, 1.12 * top or 1))
    _legend(fig, axes)
    fig.suptitle(f"{run.gpu}: time per decoding step\n(batch 1, greedy; one step = one target forward)")
    return _save(fig, Path(path))


def _legend(fig: Figure, axes) -> None:
    """One legend under the panels, each label once."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        width = fig.get_figwidth()
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", frameon=False,
                   ncol=max(1, min(len(entries), int(width / 2.6))))
