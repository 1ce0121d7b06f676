"""Load the benchmark datasets (Spider, DialogSum, E2E NLG) as prompt/target examples.

Two sources give identical :class:`Example` lists:

* a local directory laid out like the authors' releases (``<dir>/spider/train_spider.json``,
  ``<dir>/dialogsum/dialogsum.train.jsonl``, ``<dir>/e2e_nlg/trainset.csv``, ...), named by the
  ``data_dir`` argument or ``$LLMOPT_DATA_DIR``;
* otherwise the Hugging Face hub (needs the optional ``datasets`` package).

Both sources are first turned into the same "local-shaped" records (with a label per record for
error messages), and one builder per dataset turns those into examples.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATASETS = ("spider", "dialogsum", "e2e_nlg")
SPLITS = ("train", "eval")
DATA_DIR_ENV = "LLMOPT_DATA_DIR"
SPIDER_TABLES_ENV = "LLMOPT_SPIDER_TABLES"

# name -> split -> file under <data_dir>/<name>/
_FILES = {
    "spider": {"train": "train_spider.json", "eval": "dev.json"},
    "dialogsum": {"train": "dialogsum.train.jsonl", "eval": "dialogsum.test.jsonl"},
    "e2e_nlg": {"train": "trainset.csv", "eval": "testset_w_refs.csv"},
}
# name -> (hub id, config, {split: hub split})
_HUB = {
    "spider": ("xlangai/spider", "spider", {"train": "train", "eval": "validation"}),
    "dialogsum": ("knkarthick/dialogsum", None, {"train": "train", "eval": "test"}),
    "e2e_nlg": ("tuetschek/e2e_nlg", None, {"train": "train", "eval": "test"}),
}


class DataError(ValueError):
    """Bad or missing input data; the message names the file (and record/field) at fault."""


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str  # text given to the model
    target: str  # one reference with a single leading space, so prompt + target tokenises naturally
    references: tuple[str, ...]  # all references, plain text (no leading space)


# A record is (label, fields): label says where it came from, e.g. "/x/dev.json: record 3".
Record = tuple[str, dict]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """Explicit ``data_dir``, else ``$LLMOPT_DATA_DIR``, else None (meaning: use the hub)."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    return None if data_dir is None else Path(data_dir).expanduser()


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None) -> list[Example]:
    """Examples of ``split`` ("train" or "eval") of dataset ``name``, in file order."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; known splits: {', '.join(SPLITS)}")
    root = resolve_data_dir(data_dir)
    if root is None:
        tables = os.environ.get(SPIDER_TABLES_ENV)
        tables_path = Path(tables).expanduser() if tables else None
    else:
        path = _dataset_dir(root, name) / _FILES[name][split]
        tables_path = path.parent / "tables.json"
    # Read the schemas first so a missing tables.json fails before any download.
    schemas = _spider_schemas(tables_path) if name == "spider" else {}
    if root is None:
        source, records = _hub_records(name, split)
    else:
        source, records = str(path), _read_local(path)

    if name == "spider":
        examples = _spider(records, split, schemas)
    elif name == "dialogsum":
        examples = _dialogsum(records, split)
    else:
        examples = _e2e(records, split)
    if not examples:
        raise DataError(f"{source}: no examples in the {split} split of {name}")
    return examples


# ---------------------------------------------------------------- builders


def _spider(records: list[Record], split: str, schemas: dict[str, str]) -> list[Example]:
    prefix = "train" if split == "train" else "dev"
    out = []
    for i, (where, rec) in enumerate(records):
        db_id = _field(rec, "db_id", where)
        if db_id not in schemas:
            raise DataError(f"{where}: db_id {db_id!r} is not in tables.json")
        question = _field(rec, "question", where).strip()
        # Gold queries have stray tabs and doubled spaces ("age  >  56"); collapse them.
        query = " ".join(_field(rec, "query", where).split())
        prompt = f"Database: {db_id}\n{schemas[db_id]}\nQuestion: {question}\nSQL:"
        out.append(Example(f"{prefix}_{i}", prompt, " " + query, (query,)))
    return out


def _dialogsum(records: list[Record], split: str) -> list[Example]:
    keys = ("summary",) if split == "train" else ("summary1", "summary2", "summary3")
    out = []
    for where, rec in records:
        refs = tuple(_field(rec, k, where).strip() for k in keys)
        # 1629 dialogues end in stray spaces; strip so the prompt ends "...\nSummary:" cleanly.
        dialogue = _field(rec, "dialogue", where).strip()
        prompt = f"Dialogue:\n{dialogue}\nSummary:"
        out.append(Example(_field(rec, "fname", where), prompt, " " + refs[0], refs))
    return out


def _e2e(records: list[Record], split: str) -> list[Example]:
    # Rows sharing an MR are alternative references; train rows of one MR are not contiguous,
    # so group over the whole file (dicts keep first-appearance order).
    rows = [(_field(rec, "mr", where).strip(), _field(rec, "ref", where).strip())
            for where, rec in records]
    refs: dict[str, list[str]] = {}
    for mr, ref in rows:
        refs.setdefault(mr, []).append(ref)
    grouped = {mr: tuple(r) for mr, r in refs.items()}

    def prompt(mr: str) -> str:
        return f"Meaning representation: {mr}\nDescription:"

    if split == "train":  # one example per row, so every reference gets trained on
        return [Example(f"train_{i}", prompt(mr), " " + ref, grouped[mr])
                for i, (mr, ref) in enumerate(rows)]
    return [Example(f"test_{i}", prompt(mr), " " + r[0], r)
            for i, (mr, r) in enumerate(grouped.items())]


def _spider_schemas(path: Path | None) -> dict[str, str]:
    """db_id -> one "table(col1, col2, ...)" line per table, from Spider's tables.json."""
    if path is None:
        raise DataError(
            "Spider database schemas (tables.json) are not on the Hugging Face hub; set "
            f"${SPIDER_TABLES_ENV} to the tables.json of the Spider release, or pass a data "
            f"directory (or set ${DATA_DIR_ENV}) containing spider/tables.json")
    schemas = {}
    for where, db in _read_json(path):
        db_id = _field(db, "db_id", where)
        tables = _field(db, "table_names_original", where, list)
        columns: list[list[str]] = [[] for _ in tables]
        for col in _field(db, "column_names_original", where, list):
            ok = (isinstance(col, list) and len(col) == 2 and isinstance(col[0], int)
                  and isinstance(col[1], str) and -1 <= col[0] < len(tables))
            if not ok:
                raise DataError(f"{where}: field 'column_names_original' has a bad entry {col!r}")
            if col[0] >= 0:  # table -1 is the "*" pseudo-column
                columns[col[0]].append(col[1])
        schemas[db_id] = "\n".join(f"{t}({', '.join(c)})" for t, c in zip(tables, columns))
    return schemas


def _field(rec: dict, key: str, where: str, kind: type = str):
    if key not in rec:
        raise DataError(f"{where}: missing field {key!r}")
    value = rec[key]
    if not isinstance(value, kind):
        raise DataError(f"{where}: field {key!r} should be a {kind.__name__}, "
                        f"got {type(value).__name__}")
    return value


# ---------------------------------------------------------------- local files


def _dataset_dir(root: Path, name: str) -> Path:
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist (from the data_dir argument or "
                        f"${DATA_DIR_ENV})")
    d = root / name
    if not d.is_dir():
        raise DataError(f"dataset directory {d} does not exist")
    return d


def _read_local(path: Path) -> list[Record]:
    if path.suffix == ".json":
        return _read_json(path)
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    return _read_csv(path, ("mr", "ref"))


def _open(path: Path, **kw):
    try:
        return open(path, encoding="utf-8", **kw)
    except FileNotFoundError:
        raise DataError(f"file {path} does not exist") from None


def _read_json(path: Path) -> list[Record]:
    with _open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: malformed JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return _check_objects([(f"{path}: record {i}", r) for i, r in enumerate(data)])


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append((f"{path}: line {n}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {n}: malformed JSON: {e.msg}") from None
    return _check_objects(records)


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[Record]:
    records = []
    with _open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None or any(c not in header for c in columns):
                raise DataError(f"{path}: line 1: header {header} lacks column(s) "
                                f"{[c for c in columns if c not in (header or [])]}")
            for row in reader:
                where = f"{path}: line {reader.line_num}"
                if len(row) != len(header):
                    raise DataError(f"{where}: expected {len(header)} fields "
                                    f"({', '.join(header)}), got {len(row)}")
                records.append((where, dict(zip(header, row))))
        except csv.Error as e:
            raise DataError(f"{path}: line {reader.line_num}: malformed CSV: {e}") from None
    return records


def _check_objects(records: list[Record]) -> list[Record]:
    for where, rec in records:
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    return records


# ---------------------------------------------------------------- hub


def _hub_records(name: str, split: str) -> tuple[str, list[Record]]:
    """Hub rows of one split, renamed to the local files' field names."""
    try:
        import datasets  # optional dependency: only the hub path needs it
    except ImportError:
        raise DataError(
            f"loading {name} from the Hugging Face hub needs the 'datasets' package: "
            f"pip install llmopt[data], or pass a local data directory (or set ${DATA_DIR_ENV})"
        ) from None
    hub_id, config, splits = _HUB[name]
    source = f"hub {hub_id} ({splits[split]} split)"
    try:
        rows = datasets.load_dataset(hub_id, config, split=splits[split])
    except Exception as e:  # network, auth, cache problems: say which dataset and the way out
        raise DataError(f"{source}: could not load ({e}); pass a local data directory "
                        f"or set ${DATA_DIR_ENV}") from e
    records = [(f"{source}: record {i}", dict(r)) for i, r in enumerate(rows)]
    return source, _HUB_RENAME[name](records, split)


def _spider_hub(records: list[Record], split: str) -> list[Record]:
    return records  # same field names as train_spider.json / dev.json


def _dialogsum_hub(records: list[Record], split: str) -> list[Record]:
    if split == "train":
        return [(w, {**r, "fname": _field(r, "id", w)}) for w, r in records]
    # The hub's test split has one row per reference, ids "test_N_1..3": group them back
    # into one record with summary1..3 like dialogsum.test.jsonl.
    first: dict[str, Record] = {}
    summaries: dict[str, list[str]] = {}
    for where, rec in records:
        fname = _field(rec, "id", where).rsplit("_", 1)[0]
        first.setdefault(fname, (where, rec))
        summaries.setdefault(fname, []).append(_field(rec, "summary", where))
    return [(where, {**rec, "fname": fname,
                     **{f"summary{k}": s for k, s in enumerate(summaries[fname], 1)}})
            for fname, (where, rec) in first.items()]


def _e2e_hub(records: list[Record], split: str) -> list[Record]:
    return [(w, {"mr": _field(r, "meaning_representation", w),
                 "ref": _field(r, "human_reference", w)}) for w, r in records]


_HUB_RENAME: dict[str, Callable[[list[Record], str], list[Record]]] = {
    "spider": _spider_hub, "dialogsum": _dialogsum_hub, "e2e_nlg": _e2e_hub,
}
