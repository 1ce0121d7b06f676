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
    order = list(DATASET_TITLES)
    known = sorted((d for d in seen if d.partition("@")[0] in DATASET_TITLES),
                   key=lambda d: (order.index(d.partition("@")[0]), "@" in d))
    return known + [d for d in seen if d.partition("@")[0] not in DATASET_TITLES]


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
