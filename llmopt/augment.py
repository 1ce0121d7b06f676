"""Training-time augmentation for Spider that teaches the model to copy names from its prompt.

A model trained from scratch on Spider memorises the training databases' table and column names
and, on the unseen databases of the dev set, writes SQL over the wrong tables. `rename_names`
replaces a random subset of the schema names used by the target SQL with random pronounceable
pseudo-words, consistently in the database id, the schema lines, the question and the SQL (and
the references), so that the only way to predict those names is to copy them from the prompt.

Matching rules (the same function is applied to every part, so the renamed SQL stays valid
against the renamed schema):

* case-insensitive; each occurrence keeps its own capitalisation pattern (lower, Capitalised,
  UPPER) in the replacement;
* a name matches only as a whole word part: not preceded by a letter, and followed by a
  non-letter after an optional plural/possessive ending ("s", "es", "'s", "s'"; a name ending
  in "y" also matches its "-ies" plural). So "singer" also renames "singers" and
  "singer_in_concert", but "age" leaves "average" and "manager" alone. Letter-only boundaries
  do not depend on case, so schema and SQL spelt in different cases are renamed alike;
* names shorter than 3 characters and names equal to an SQL keyword are never picked; SQL
  keywords, SQL string literals ('...' / "...") and the prompt's fixed words ("Database:",
  "Question:", "SQL:") are never altered, and neither are the places where the question quotes
  the value of one of the SQL's string literals (so values stay copyable).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from . import data

SQL_KEYWORDS = frozenset(
    "SELECT FROM WHERE JOIN ON AS AND OR NOT IN LIKE GROUP BY ORDER HAVING LIMIT DESC ASC COUNT "
    "SUM AVG MIN MAX DISTINCT UNION INTERSECT EXCEPT BETWEEN IS NULL".split())
MIN_NAME_LEN = 3

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "pl", "st", "tr", "th", "sh", "ch")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "", "n", "r", "l", "k", "s", "m")
_LITERAL = re.compile(r"'[^']*(?:'|$)|\"[^\"]*(?:\"|$)")
_SQL_WORD = re.compile(r"[A-Za-z0-9_]+")
_WORD_PARTS = re.compile(r"[A-Za-z]+")
_SCHEMA_LINE = re.compile(r"^(.*?)\((.*)\)$")


def rename_names(example: data.Example, rng: random.Random, fraction: float) -> data.Example:
    """`example` with each schema name used by its SQL replaced, with probability `fraction`, by
    a fresh pseudo-word (see the module docstring). Deterministic given `rng`'s state; the
    example itself is returned when nothing is picked (so `fraction=0` is the identity)."""
    db_id, schema, question = _parse_prompt(example)
    sql = example.target[1:] if example.target.startswith(" ") else example.target
    used = {w.lower() for part, is_lit in _split_sql(sql) if not is_lit for w in _SQL_WORD.findall(part)}
    candidates, seen = [], set()
    for name in _schema_names(schema):
        key = name.lower()
        if (key in seen or key not in used or len(name) < MIN_NAME_LEN or key.upper() in SQL_KEYWORDS
                or not re.search(r"[A-Za-z]", name)):
            continue
        seen.add(key)
        candidates.append(name)
    picked = [name for name in candidates if rng.random() < fraction]
    if not picked:
        return example

    texts = [example.prompt, example.target, *example.references]
    taken = {w.lower() for t in texts for w in _WORD_PARTS.findall(t)}
    mapping: dict[str, str] = {}
    for name in picked:
        word = pseudo_word(rng)
        while word in taken or word.upper() in SQL_KEYWORDS:
            word = pseudo_word(rng)
        taken.add(word)
        mapping[name.lower()] = word
    renamer = _Renamer(mapping)

    values = [lit[1:-1].strip("% ") for s in (sql, *example.references)
              for lit, is_lit in _split_sql(s) if is_lit and len(lit) >= 2]
    new_question = _sub_outside(question, _spans(question, values), renamer)
    new_schema = "\n".join(renamer(line) for line in schema)
    prompt = f"Database: {renamer(db_id)}\n{new_schema}\nQuestion: {new_question}\nSQL:"
    target = (" " if example.target.startswith(" ") else "") + rename_sql(sql, renamer)
    refs = tuple(rename_sql(r, renamer) for r in example.references)
    return data.Example(example.id, prompt, target, refs)


def augment_split(examples: Iterable[data.Example], copies: int, fraction: float, seed: int) -> list[data.Example]:
    """The examples followed by `copies` renamed variants of each (copy k of example "x" is
    "x~augk"); every variant draws its own names and pseudo-words from one seeded stream."""
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    originals = list(examples)
    rng = random.Random(seed)
    out = list(originals)
    for k in range(1, copies + 1):
        for ex in originals:
            new = rename_names(ex, rng, fraction)
            out.append(data.Example(f"{ex.id}~aug{k}", new.prompt, new.target, new.references))
    return out


def pseudo_word(rng: random.Random) -> str:
    """A lower-case pronounceable letters-only word of 4 to 9 letters (consonant-vowel syllables)."""
    while True:  # whole syllables only (no cut consonant clusters); retry the rare overshoot
        length, word = rng.randint(4, 9), ""
        while len(word) < length:
            word += rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        if len(word) <= 9:
            return word


def rename_sql(sql: str, renamer) -> str:
    """`renamer` applied to the SQL's words, except keywords and quoted string literals."""
    out = []
    for part, is_lit in _split_sql(sql):
        if is_lit:
            out.append(part)
        else:
            out.append(_SQL_WORD.sub(lambda m: m.group() if m.group().upper() in SQL_KEYWORDS
                                     else renamer(m.group()), part))
    return "".join(out)


class _Renamer:
    """Callable text -> text replacing every matching occurrence of the mapped names at once."""

    def __init__(self, mapping: dict[str, str]):
        forms = {}  # lower-case surface form -> (replacement, is "-ies" plural)
        for name, word in mapping.items():
            forms[name] = (word, False)
            if name.endswith("y") and len(name) > MIN_NAME_LEN:
                forms.setdefault(name[:-1] + "ies", (word, True))
        alternatives = "|".join(re.escape(f) for f in sorted(forms, key=lambda f: (-len(f), f)))
        self.forms = forms
        self.pattern = re.compile(
            rf"(?<![A-Za-z])(?P<stem>(?i:{alternatives}))(?P<suf>(?i:'s|s'|es|s)?)(?![A-Za-z])")

    def _replace(self, m: re.Match) -> str:
        stem, suffix = m.group("stem"), m.group("suf")
        word, ies = self.forms[stem.lower()]
        if ies:  # "countries" -> "<word>s"
            suffix = ("S" if stem.isupper() else "s") + suffix
        return _match_case(word, stem) + suffix

    def __call__(self, text: str) -> str:
        return self.pattern.sub(self._replace, text)


def _match_case(word: str, like: str) -> str:
    letters = [c for c in like if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return word.upper()
    if letters and like.lstrip("_0123456789")[:1].isupper():
        return word.capitalize()
    return word


def _parse_prompt(example: data.Example) -> tuple[str, list[str], str]:
    lines = example.prompt.split("\n")
    q = max((i for i, line in enumerate(lines) if line.startswith("Question: ")), default=None)
    if not lines[0].startswith("Database: ") or q is None or lines[-1] != "SQL:" or q == len(lines) - 1:
        raise ValueError(f"{example.id}: not a Spider prompt (Database: ... / schema / Question: ... / SQL:)")
    question = "\n".join(lines[q:-1])[len("Question: "):]
    return lines[0][len("Database: "):], lines[1:q], question


def _schema_names(schema: list[str]) -> list[str]:
    names = []
    for line in schema:
        m = _SCHEMA_LINE.match(line)
        if m is None:
            continue
        names.append(m.group(1).strip())
        names += [c.strip() for c in m.group(2).split(",") if c.strip()]
    return names


def _split_sql(sql: str) -> list[tuple[str, bool]]:
    """(piece, is a quoted string literal) pieces that concatenate back to `sql`."""
    out, pos = [], 0
    for m in _LITERAL.finditer(sql):
        if m.start() > pos:
            out.append((sql[pos:m.start()], False))
        out.append((m.group(), True))
        pos = m.end()
    if pos < len(sql):
        out.append((sql[pos:], False))
    return out


def _spans(text: str, values: list[str]) -> list[tuple[int, int]]:
    """Where `text` quotes one of `values` (case-insensitive, not inside a longer word)."""
    spans = []
    for v in values:
        if v:
            pattern = rf"(?<![A-Za-z0-9])(?i:{re.escape(v)})(?![A-Za-z0-9])"
            spans += [m.span() for m in re.finditer(pattern, text)]
    return sorted(spans)


def _sub_outside(text: str, spans: list[tuple[int, int]], fn) -> str:
    """`fn` applied to the parts of `text` outside the (possibly overlapping) spans."""
    out, pos = [], 0
    for a, b in spans:
        if b <= pos:
            continue
        a = max(a, pos)
        out += [fn(text[pos:a]), text[a:b]]
        pos = b
    out.append(fn(text[pos:]))
    return "".join(out)
