"""Tests for llmopt.quality: hand-computed ROUGE-L, SQL normalisation, scoring."""

import os
from pathlib import Path

import pytest

from llmopt.data import Example, load_split
from llmopt.quality import METRIC_BY_DATASET, exact_match, normalize_sql, rouge_l, score


@pytest.fixture(scope="module")
def data_dir() -> Path:
    d = Path(os.environ.get("LLMOPT_DATA_DIR", Path(__file__).resolve().parents[1].parent
                            / "shared" / "datasets"))
    if not d.is_dir():
        pytest.skip(f"dataset directory {d} not found (set LLMOPT_DATA_DIR)")
    return d


# ---------------------------------------------------------------- ROUGE-L

@pytest.mark.parametrize("prediction,references,expected", [
    # LCS "the cat on the mat" = 5 of 6 tokens each side: P = R = F = 5/6
    ("the cat sat on the mat", ["the cat is on the mat"], 5 / 6),
    # LCS "a c" = 2: P = 2/4, R = 2/2, F = 2 * 0.5 * 1 / 1.5 = 2/3
    ("a b c d", ["a c"], 2 / 3),
    # textbook LCS (BCBA, length 4): P = 4/7, R = 4/6, F = 8/13
    ("A B C B D A B", ["B D C A B A"], 8 / 13),
    # order matters: LCS of "b a" and "a b" is 1, F = 1/2
    ("b a", ["a b"], 0.5),
    # lowercased \w+ tokens: punctuation and case are ignored
    ("Hello, World!", ["hello world"], 1.0),
    # best over references
    ("a b", ["c d", "a x", "x y"], 0.5),
    ("x y", ["c d"], 0.0),
    ("", ["a b"], 0.0),
    ("...", ["a b"], 0.0),
    ("a b", [], 0.0),
])
def test_rouge_l(prediction, references, expected):
    assert rouge_l(prediction, references) == pytest.approx(expected)


# ---------------------------------------------------------------- SQL exact match

@pytest.mark.parametrize("raw,normalised", [
    ("  SELECT count(*) FROM head WHERE age  >  56 ", "select count(*) from head where age > 56"),
    ("SELECT a FROM t WHERE b\t =  1;", "select a from t where b = 1"),
    ("SELECT a FROM t ; ", "select a from t"),
    ("SELECT a FROM t WHERE b!=1", "select a from t where b != 1"),
    ("SELECT a FROM t WHERE b  !=  'x'", "select a from t where b != 'x'"),
    # literals keep case, inner spacing and any ; or != inside them
    ('SELECT Name FROM T WHERE City = "San  Francisco"',
     'select name from t where city = "San  Francisco"'),
    ("SELECT a FROM t WHERE b = 'A!=B;'", "select a from t where b = 'A!=B;'"),
    ("SELECT a FROM t WHERE b = 'It''s' AND C = 1", "select a from t where b = 'It''s' and c = 1"),
])
def test_normalize_sql(raw, normalised):
    assert normalize_sql(raw) == normalised


def test_exact_match():
    gold = ['SELECT building_short_name FROM Apartment_Buildings WHERE building_manager = "Emma"']
    assert exact_match('select BUILDING_SHORT_NAME from apartment_buildings '
                       'where building_manager\t =  "Emma";', gold) == 1.0
    assert exact_match('SELECT building_short_name FROM Apartment_Buildings '
                       'WHERE building_manager = "emma"', gold) == 0.0  # value case matters
    # string match, not Spider's component-set match: reordered columns count as wrong
    assert exact_match("SELECT a, b FROM t", ["SELECT b, a FROM t"]) == 0.0
    assert exact_match("SELECT a FROM t", ["SELECT b FROM t", "select a from t"]) == 1.0
    assert exact_match("SELECT a FROM t", []) == 0.0


def test_dev_gold_sql_matches_targets(data_dir):
    # dev_gold.sql has the release's original spacing ("age  >  56", tabs); after
    # normalisation every line must match the loader's whitespace-collapsed reference.
    examples = load_split("spider", "eval", data_dir)
    with open(data_dir / "spider" / "dev_gold.sql", encoding="utf-8") as f:
        gold = [line.rstrip("\n").rsplit("\t", 1)[0] for line in f]
    assert len(gold) == len(examples) == 1034
    assert sum(g != ex.references[0] for g, ex in zip(gold, examples)) > 100
    assert score("spider", gold, examples) == ("exact_match", 100.0)


# ---------------------------------------------------------------- score

def _ex(*refs: str) -> Example:
    return Example(id="x", prompt="p", target=" " + refs[0], references=refs)


def test_score():
    assert set(METRIC_BY_DATASET) == {"spider", "dialogsum", "e2e_nlg"}
    examples = [_ex("SELECT a FROM t"), _ex("SELECT b FROM t")]
    assert score("spider", ["select a from t;", "SELECT c FROM t"], examples) == (
        "exact_match", 50.0)
    name, value = score("e2e_nlg", ["a b c d", "x"], [_ex("a c"), _ex("y", "x")])
    assert name == "rouge_l" and value == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert score("dialogsum", ["a b"], [_ex("a b")]) == ("rouge_l", 100.0)


def test_score_references_against_themselves(data_dir):
    examples = load_split("dialogsum", "eval", data_dir)
    assert score("dialogsum", [ex.references[2] for ex in examples], examples) == (
        "rouge_l", 100.0)


def test_score_errors():
    with pytest.raises(ValueError, match="wikisql"):
        score("wikisql", ["a"], [_ex("a")])
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        score("spider", ["a", "b"], [_ex("a")])
