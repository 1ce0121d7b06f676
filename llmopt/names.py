"""How saved runs' cells are titled, ordered and named on disk: what the report and its figures
share (both import it, neither imports the other for it)."""

from __future__ import annotations

import re

from .compare import Run

DATASET_TITLES = {"spider": "Spider", "dialogsum": "DialogSum", "e2e_nlg": "E2E-NLG"}


def slug(name: str) -> str:
    """A file-name-safe form of a GPU or run name."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-")


def datasets(runs: list[Run]) -> list[str]:
    """Known datasets in the project's order, then any others as they appear."""
    seen = dict.fromkeys(d for run in runs for d, _ in run.cells)
    return [d for d in DATASET_TITLES if d in seen] + [d for d in seen if d not in DATASET_TITLES]


def techniques(runs: list[Run]) -> list[str]:
    """Techniques in the order the runs measured them."""
    return list(dict.fromkeys(t for run in runs for _, t in run.cells))
