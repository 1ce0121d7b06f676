"""Output-quality metrics: SQL exact match (Spider) and ROUGE-L (DialogSum, E2E NLG).

Plain Python, no extra dependencies; used to check that a speed optimisation did not change
what the model generates in a way that matters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from llmopt.data import Example

# A quoted SQL string literal ('' or "" escape a quote inside it).
_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_WORD = re.compile(r"\w+")


def normalize_sql(s: str) -> str:
    """Canonical spelling of a SQL string for exact match.

    Collapses whitespace, lowercases everything outside quoted string literals (keywords and
    identifiers are case-insensitive, values are not), writes ``!=`` as `` != `` and drops a
    trailing ``;``.
    """
    parts, pos = [], 0
    for m in _LITERAL.finditer(s):
        parts.append(_normalize_code(s[pos:m.start()]))
        parts.append(m.group())  # literal kept verbatim
        pos = m.end()
    parts.append(_normalize_code(s[pos:]))
    out = "".join(parts).strip()
    if out.endswith(";"):
        out = out[:-1].rstrip()
    return out


def _normalize_code(s: str) -> str:
    s = re.sub(r"\s*!=\s*", " != ", s.lower())
    return re.sub(r"\s+", " ", s)


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0.

    This is normalised *string* exact match (see :func:`normalize_sql`), stricter than Spider's
    official component-set match: e.g. a reordered SELECT list or WHERE clause counts as wrong.
    """
    p = normalize_sql(prediction)
    return float(any(p == normalize_sql(r) for r in references))


def _tokens(s: str) -> list[str]:
    return _WORD.findall(s.lower())


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, O(len(a) * len(b)) DP keeping one row."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F1 (beta = 1) on lowercased ``\\w+`` tokens, best over the references."""
    pred = _tokens(prediction)
    best = 0.0
    for ref in references:
        ref_toks = _tokens(ref)
        lcs = _lcs(pred, ref_toks) if pred and ref_toks else 0
        if lcs:
            precision, recall = lcs / len(pred), lcs / len(ref_toks)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


METRIC_BY_DATASET: dict[str, tuple[str, Callable[[str, Sequence[str]], float]]] = {
    "spider": ("exact_match", exact_match),
    "dialogsum": ("rouge_l", rouge_l),
    "e2e_nlg": ("rouge_l", rouge_l),
}


def score(dataset: str, predictions: list[str], examples: list[Example]) -> tuple[str, float]:
    """(metric name, mean metric * 100) of ``predictions`` against ``examples[i].references``."""
    if dataset not in METRIC_BY_DATASET:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(METRIC_BY_DATASET)}")
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    if not examples:
        raise ValueError("no examples to score")
    name, metric = METRIC_BY_DATASET[dataset]
    total = sum(metric(p, ex.references) for p, ex in zip(predictions, examples))
    return name, 100.0 * total / len(examples)
