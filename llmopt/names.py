"""How saved runs' cells are titled, ordered and named on disk: what the report and its figures
share (both import it, neither imports the other for it)."""

from __future__ import annotations

import re

from .compare import Run
from .strategies.techniques import DRAFTING, parse_technique, technique_parts

DATASET_TITLES = {"spider": "Spider", "dialogsum": "DialogSum", "e2e_nlg": "E2E-NLG"}


def title(column: str) -> str:
    """A column's title: its dataset's, with a shape that is not the default (`E2E-NLG, 1.3b`)."""
    dataset, _, shape = column.partition("@")
    return DATASET_TITLES.get(dataset, dataset) + (f", {shape}" if shape else "")


def slug(name: str) -> str:
    """A file-name-safe form of a GPU or run name."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-")


def datasets(runs: list[Run]) -> list[str]:
    """The runs' columns: known datasets in the project's order, each before its other shapes, then
    any others as they appear."""
    seen = dict.fromkeys(d for run in runs for d, _ in run.cells)
    order = {dataset: i for i, dataset in enumerate(DATASET_TITLES)}
    rank = {d: order.get(d.partition("@")[0], len(order)) for d in seen}
    return sorted(seen, key=lambda d: (rank[d], rank[d] < len(order) and "@" in d))  # stable: others as seen


def parts(technique: str) -> set[str]:
    """What a saved cell ran, a preset expanded (`best` -> ss, flash2, graphs); a name the grammar
    no longer takes, as written."""
    try:
        return set(parse_technique(technique).parts)
    except ValueError:
        return set(technique_parts(technique))


def drafting(technique: str) -> set[str]:
    """The drafting method a saved cell ran (empty for plain decoding)."""
    return parts(technique) & set(DRAFTING)


def techniques(runs: list[Run]) -> list[str]:
    """Techniques in the order the runs measured them."""
    return list(dict.fromkeys(t for run in runs for _, t in run.cells))
