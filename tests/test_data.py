"""Tests for llmopt.data: real-file counts and prompts, clear errors, hub/local equivalence."""

import csv
import json
import os
import sys
from pathlib import Path

import pytest

from llmopt import data
from llmopt.data import DATA_DIR_ENV, DataError, Example, load_split, resolve_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = Path(os.environ.get(DATA_DIR_ENV, Path(__file__).resolve().parents[1].parent
                            / "shared" / "datasets"))
    if not d.is_dir():
        pytest.skip(f"dataset directory {d} not found (set {DATA_DIR_ENV})")
    return d


@pytest.fixture(scope="session")
def real(data_dir):
    """load_split on the real files, each split read once per test session."""
    cache = {}

    def load(name, split):
        if (name, split) not in cache:
            cache[name, split] = load_split(name, split, data_dir)
        return cache[name, split]
    return load


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    # Tests name their data directory explicitly; the caller's environment must not leak in.
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(data.SPIDER_TABLES_ENV, raising=False)


# ---------------------------------------------------------------- real files


@pytest.mark.parametrize("name,split,count", [
    ("spider", "train", 7000), ("spider", "eval", 1034),
    ("dialogsum", "train", 12460), ("dialogsum", "eval", 500),
    ("e2e_nlg", "train", 42061), ("e2e_nlg", "eval", 630),
])
def test_counts_and_target_convention(real, name, split, count):
    examples = real(name, split)
    assert len(examples) == count
    assert len({ex.id for ex in examples}) == count
    for ex in examples:
        assert ex.target.startswith(" ") and not ex.target.startswith("  ")
        assert ex.target[1:] in ex.references  # e2e train: the row's own reference
    # e2e train examples of one MR share a references tuple: check each tuple once.
    for refs in {id(ex.references): ex.references for ex in examples}.values():
        assert all(r == r.strip() and r for r in refs)


def test_spider_prompt(real):
    ex = real("spider", "train")[0]
    assert ex == Example(
        id="train_0",
        prompt="Database: department_management\n"
               "department(Department_ID, Name, Creation, Ranking, Budget_in_Billions, "
               "Num_Employees)\n"
               "head(head_ID, name, born_state, age)\n"
               "management(department_ID, head_ID, temporary_acting)\n"
               "Question: How many heads of the departments are older than 56 ?\nSQL:",
        target=" SELECT count(*) FROM head WHERE age > 56",  # "age  >  56" in the file
        references=("SELECT count(*) FROM head WHERE age > 56",),
    )
    dev = real("spider", "eval")
    assert dev[0].id == "dev_0" and dev[0].target == " SELECT count(*) FROM singer"
    assert all("\t" not in ex.target and "  " not in ex.target for ex in dev)


def test_dialogsum_records(real, data_dir):
    train = real("dialogsum", "train")
    assert train[0].id == "train_0"
    assert train[0].prompt.startswith(
        "Dialogue:\n#Person1#: Hi, Mr. Smith. I'm Doctor Hawkins. Why are you here today?\n")
    assert train[0].prompt.endswith("#Person2#: Ok, thanks doctor.\nSummary:")
    assert train[0].target.startswith(" Mr. Smith's getting a check-up")
    assert len(train[0].references) == 1

    test = real("dialogsum", "eval")
    assert test[0].id == "test_0"
    assert all(len(ex.references) == 3 for ex in test)
    with open(data_dir / "dialogsum" / "dialogsum.test.jsonl", encoding="utf-8") as f:
        first = json.loads(f.readline())
    assert test[0].references == tuple(first[f"summary{k}"].strip() for k in (1, 2, 3))
    assert test[0].target == " " + first["summary1"].strip()


def test_e2e_records(real):
    train = real("e2e_nlg", "train")
    mr = ("name[The Vaults], eatType[pub], priceRange[more than £30], "
          "customer rating[5 out of 5], near[Café Adriatic]")
    assert train[0].prompt == f"Meaning representation: {mr}\nDescription:"
    assert train[0].target == " The Vaults pub near Café Adriatic has a 5 star rating.  Prices start at £30."
    # References are all the rows of this MR in the whole file (they are not contiguous).
    same_mr = [ex for ex in train if ex.prompt == train[0].prompt]
    assert len(train[0].references) == len(same_mr) > 1
    assert train[0].references == tuple(ex.target[1:] for ex in same_mr)

    test = real("e2e_nlg", "eval")
    assert test[0].id == "test_0"
    assert test[0].prompt == ("Meaning representation: name[Blue Spice], eatType[coffee shop], "
                              "area[city centre]\nDescription:")
    assert test[0].references == ("A coffee shop in the city centre area called Blue Spice.",
                                  "Blue Spice is a coffee shop in city centre.")
    assert sum(len(ex.references) for ex in test) == 4693
    assert len({ex.prompt for ex in test}) == 630


def test_env_var_names_data_dir(data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    assert resolve_data_dir(None) == data_dir
    assert resolve_data_dir("/elsewhere") == Path("/elsewhere")
    assert len(load_split("dialogsum", "eval")) == 500
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data_dir(None) is None


# ---------------------------------------------------------------- clear errors

TABLES = [{"db_id": "db1", "table_names_original": ["t"],
           "column_names_original": [[-1, "*"], [0, "a"], [0, "b"]]}]
SPIDER_ROW = {"db_id": "db1", "question": "Q?", "query": "SELECT a FROM t"}
DIALOG_ROW = {"fname": "train_0", "dialogue": "#Person1#: Hi.", "summary": "Greeting."}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _spider_dir(root: Path, rows, tables=TABLES) -> Path:
    _write(root / "spider" / "tables.json", json.dumps(tables))
    return _write(root / "spider" / "train_spider.json", json.dumps(rows))


def _error(*args) -> str:
    with pytest.raises(DataError) as info:
        load_split(*args)
    return str(info.value)


def test_tiny_spider_dir_loads(tmp_path):
    _spider_dir(tmp_path, [SPIDER_ROW])
    assert load_split("spider", "train", tmp_path) == [Example(
        "train_0", "Database: db1\nt(a, b)\nQuestion: Q?\nSQL:", " SELECT a FROM t",
        ("SELECT a FROM t",))]


def test_unknown_dataset_and_split(tmp_path):
    msg = _error("wikisql", "train", tmp_path)
    assert "wikisql" in msg and all(n in msg for n in data.DATASETS)
    assert "'dev'" in _error("spider", "dev", tmp_path)


def test_missing_directory_and_file(tmp_path):
    assert str(tmp_path / "nope") in _error("spider", "train", tmp_path / "nope")
    assert str(tmp_path / "dialogsum") in _error("dialogsum", "train", tmp_path)
    (tmp_path / "dialogsum").mkdir()
    assert str(tmp_path / "dialogsum" / "dialogsum.test.jsonl") in _error(
        "dialogsum", "eval", tmp_path)


def test_malformed_json(tmp_path):
    path = _write(tmp_path / "spider" / "train_spider.json", '[\n{"db_id": "db1",\n oops}\n]')
    _write(tmp_path / "spider" / "tables.json", json.dumps(TABLES))
    msg = _error("spider", "train", tmp_path)
    assert str(path) in msg and "line 3" in msg


def test_malformed_jsonl_line(tmp_path):
    path = _write(tmp_path / "dialogsum" / "dialogsum.train.jsonl",
                  json.dumps(DIALOG_ROW) + "\n" + '{"fname": "train_1",\n')
    msg = _error("dialogsum", "train", tmp_path)
    assert str(path) in msg and "line 2" in msg


@pytest.mark.parametrize("row,field", [
    ({k: v for k, v in DIALOG_ROW.items() if k != "summary"}, "summary"),
    ({**DIALOG_ROW, "dialogue": ["not", "a", "string"]}, "dialogue"),
])
def test_bad_jsonl_field(tmp_path, row, field):
    path = _write(tmp_path / "dialogsum" / "dialogsum.train.jsonl",
                  json.dumps(DIALOG_ROW) + "\n\n" + json.dumps(row) + "\n")
    msg = _error("dialogsum", "train", tmp_path)
    assert str(path) in msg and "line 3" in msg and repr(field) in msg


def test_bad_json_field_names_record(tmp_path):
    path = _spider_dir(tmp_path, [SPIDER_ROW, {**SPIDER_ROW, "query": None}])
    msg = _error("spider", "train", tmp_path)
    assert str(path) in msg and "record 1" in msg and "'query'" in msg


def test_unknown_db_id(tmp_path):
    path = _spider_dir(tmp_path, [SPIDER_ROW, {**SPIDER_ROW, "db_id": "missing_db"}])
    msg = _error("spider", "train", tmp_path)
    assert str(path) in msg and "record 1" in msg and "missing_db" in msg and "tables.json" in msg


def test_missing_or_bad_tables(tmp_path):
    _write(tmp_path / "spider" / "train_spider.json", json.dumps([SPIDER_ROW]))
    assert str(tmp_path / "spider" / "tables.json") in _error("spider", "train", tmp_path)
    _write(tmp_path / "spider" / "tables.json", json.dumps([{"db_id": "db1"}]))
    msg = _error("spider", "train", tmp_path)
    assert "tables.json: record 0" in msg and "'table_names_original'" in msg


def test_csv_bad_header(tmp_path):
    path = _write(tmp_path / "e2e_nlg" / "trainset.csv", "mr,text\n\"name[X]\",X is.\n")
    msg = _error("e2e_nlg", "train", tmp_path)
    assert str(path) in msg and "line 1" in msg and "ref" in msg


def test_csv_missing_column_in_row(tmp_path):
    path = _write(tmp_path / "e2e_nlg" / "testset_w_refs.csv",
                  'mr,ref\n"name[X]",X is.\n"name[Y]"\n')
    msg = _error("e2e_nlg", "eval", tmp_path)
    assert str(path) in msg and "line 3" in msg


def test_empty_split(tmp_path):
    path = _write(tmp_path / "e2e_nlg" / "trainset.csv", "mr,ref\n")
    msg = _error("e2e_nlg", "train", tmp_path)
    assert str(path) in msg and "no examples" in msg
    path = _write(tmp_path / "dialogsum" / "dialogsum.test.jsonl", "\n")
    assert str(path) in _error("dialogsum", "eval", tmp_path)


def test_hub_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    msg = _error("dialogsum", "train")
    assert "pip install llmopt[data]" in msg and DATA_DIR_ENV in msg


def test_hub_spider_needs_tables(monkeypatch):
    msg = _error("spider", "eval")
    assert "tables.json" in msg and data.SPIDER_TABLES_ENV in msg and "hub" in msg


# ---------------------------------------------------------------- hub path == local path

N = 200  # rows per file: enough to exercise grouping, small enough to stay fast


def _head_jsonl(src: Path, dst: Path, n: int) -> list[dict]:
    with open(src, encoding="utf-8") as f:
        lines = [f.readline() for _ in range(n)]
    _write(dst, "".join(lines))
    return [json.loads(line) for line in lines]


def _head_csv(src: Path, dst: Path, n: int) -> list[dict]:
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(zip(range(n + 1), csv.reader(f)))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(row for _, row in rows)
    header = rows[0][1]
    return [dict(zip(header, row)) for _, row in rows[1:]]


@pytest.fixture(scope="session")
def small_copy(data_dir, tmp_path_factory):
    """A truncated copy of the local files in a temp dir, and the same rows in hub shape."""
    tmp_path = tmp_path_factory.mktemp("small_copy")
    hub = {}
    spider_keys = ("db_id", "query", "question", "query_toks", "query_toks_no_value",
                   "question_toks")
    for split, fname in (("train", "train_spider.json"), ("validation", "dev.json")):
        rows = json.loads((data_dir / "spider" / fname).read_text(encoding="utf-8"))[:N]
        _write(tmp_path / "spider" / fname, json.dumps(rows))
        hub["xlangai/spider", split] = [{k: r[k] for k in spider_keys} for r in rows]
    tables = tmp_path / "spider" / "tables.json"
    tables.write_bytes((data_dir / "spider" / "tables.json").read_bytes())

    d = data_dir / "dialogsum"
    rows = _head_jsonl(d / "dialogsum.train.jsonl", tmp_path / "dialogsum" /
                       "dialogsum.train.jsonl", N)
    hub["knkarthick/dialogsum", "train"] = [
        {"id": r["fname"], "dialogue": r["dialogue"], "summary": r["summary"],
         "topic": r["topic"]} for r in rows]
    rows = _head_jsonl(d / "dialogsum.test.jsonl", tmp_path / "dialogsum" /
                       "dialogsum.test.jsonl", N // 3)
    hub["knkarthick/dialogsum", "test"] = [
        {"id": f"{r['fname']}_{k}", "dialogue": r["dialogue"], "summary": r[f"summary{k}"],
         "topic": r[f"topic{k}"]} for r in rows for k in (1, 2, 3)]

    for split, fname in (("train", "trainset.csv"), ("test", "testset_w_refs.csv")):
        rows = _head_csv(data_dir / "e2e_nlg" / fname, tmp_path / "e2e_nlg" / fname, N)
        hub["tuetschek/e2e_nlg", split] = [
            {"meaning_representation": r["mr"], "human_reference": r["ref"]} for r in rows]
    return tmp_path, tables, hub


@pytest.mark.parametrize("name", data.DATASETS)
@pytest.mark.parametrize("split", ["train", "eval"])
def test_hub_matches_local(small_copy, monkeypatch, name, split):
    datasets = pytest.importorskip("datasets")
    root, tables, hub = small_copy
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(hub[path, split])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setenv(data.SPIDER_TABLES_ENV, str(tables))
    local = load_split(name, split, root)
    from_hub = load_split(name, split)
    assert calls and calls[0][1] == ("spider" if name == "spider" else None)
    assert from_hub == local and len(local) > 10
