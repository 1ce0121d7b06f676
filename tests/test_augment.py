"""Tests for llmopt.augment: consistent, deterministic renaming of Spider schema names."""

import os
import random
import re
from pathlib import Path

import pytest

from llmopt import train as training
from llmopt.augment import SQL_KEYWORDS, augment_split, pseudo_word, rename_names
from llmopt.data import DATA_DIR_ENV, Example, load_split

LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"")


def spider_example(i, db, schema, question, sql):
    return Example(f"train_{i}", f"Database: {db}\n{schema}\nQuestion: {question}\nSQL:", " " + sql, (sql,))


CONCERT = spider_example(
    0, "concert_singer",
    "stadium(Stadium_ID, Location, Name, Capacity)\n"
    "singer(Singer_ID, Name, Country, Song_Name, Age)\n"
    "singer_in_concert(concert_ID, Singer_ID)",
    "How many singers from each country? List the Singer names and their COUNTRIES, not 'Singer Lane'.",
    "SELECT T1.Name , count(*) FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID "
    "WHERE T1.Song_Name != 'Singer Lane' AND T1.country LIKE \"%age%\" GROUP BY T1.country")
KEYWORDY = spider_example(
    1, "shop", "orders(order_id, count, name, Age)\nitems(id, desc, order_id)",
    "What is the average age of orders named Bo?",
    "SELECT avg(Age) FROM orders WHERE name = 'Bo' ORDER BY count DESC")


@pytest.fixture(scope="session")
def spider_train():
    d = Path(os.environ.get(DATA_DIR_ENV, Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
    if not (d / "spider" / "train_spider.json").is_file():
        pytest.skip(f"Spider not found under {d} (set {DATA_DIR_ENV})")
    return load_split("spider", "train", d)


def parts(text):  # lower-case word parts with a plural/possessive ending dropped
    return {re.sub(r"(?:'s|s'|es|s)$", "", w) for w in re.findall(r"[a-z]+(?:'s|s')?", text.lower())} | \
        set(re.findall(r"[a-z]+", text.lower()))


def renamed_pairs(old, new):
    """{old name: new name} of the schema names that changed, read off the schema lines."""
    def names(ex):
        lines = ex.prompt.split("\n")[1:-2]
        return [n.strip() for line in lines for n in re.split(r"[(),]", line) if n.strip()]
    return {a.lower(): b.lower() for a, b in zip(names(old), names(new)) if a != b}


def check_consistent(old, new):
    """Structure, literals and keywords kept; each renamed name is gone (as a word part, plural or
    not) from prompt and SQL, and its pseudo-word appears in both."""
    lines = new.prompt.split("\n")
    assert lines[0].startswith("Database: ") and lines[-2].startswith("Question: ") and lines[-1] == "SQL:"
    assert len(lines) == len(old.prompt.split("\n"))
    assert new.target == " " + new.references[0]
    old_sql, new_sql = old.target[1:], new.target[1:]
    # literals and keywords untouched: the same sequence, and the same number of SQL words
    assert LITERAL.findall(old_sql) == LITERAL.findall(new_sql)
    kw = lambda s: [w.upper() for w in re.findall(r"[A-Za-z_]+", LITERAL.sub("", s)) if w.upper() in SQL_KEYWORDS]
    assert kw(old_sql) == kw(new_sql)
    words = lambda s: re.findall(r"[A-Za-z0-9_]+", LITERAL.sub("''", s))
    assert len(words(old_sql)) == len(words(new_sql))
    pairs = {a: b for a, b in renamed_pairs(old, new).items() if b.isalpha()}  # whole names replaced
    assert pairs
    values = parts(" ".join(LITERAL.findall(old_sql)))  # quoted values may repeat a name in the question
    for name, word in pairs.items():
        assert 4 <= len(word) <= (9 if word[-1] != "s" else 11)  # a "singers" table if "singer" is picked
        assert word.upper() not in SQL_KEYWORDS
        assert word in parts(new.prompt), (old.id, name, word)
        if name in {w.lower() for w in words(old_sql)}:  # (not a name only renamed through a picked part)
            assert word in parts(new_sql), (old.id, name, word)
        if name.isalpha():  # a whole name (not one containing a renamed part): gone everywhere
            assert name not in parts(new.prompt + LITERAL.sub("", new_sql)) or name in values, (old.id, name)
    return pairs


def test_hand_made_example_renamed_everywhere_consistently():
    new = rename_names(CONCERT, random.Random(0), 1.0)
    pairs = renamed_pairs(CONCERT, new)
    # every name of length >= 3 that the SQL uses was picked (fraction 1); "concert_ID" is not used
    singer, name, country, song = pairs["singer"], pairs["name"], pairs["country"], pairs["song_name"]
    assert pairs["singer_id"] != singer and "concert_id" not in pairs and "stadium" not in pairs
    assert len(set(pairs.values())) == len(pairs)
    assert new.prompt.startswith(f"Database: concert_{singer}\n")
    sic = pairs["singer_in_concert"]  # used by the SQL itself: its own word (longest name wins)
    assert f"\n{sic}(concert_ID, " in new.prompt
    q = new.prompt.split("\n")[-2]
    # plurals (also "-ies" of "country"), capitalisation, and the quoted literal value kept
    assert q == (f"Question: How many {singer}s from each {country}? List the {singer.capitalize()} {name}s "
                 f"and their {country.upper()}S, not 'Singer Lane'.")
    assert new.target == (
        f" SELECT T1.{name.capitalize()} , count(*) FROM {singer} AS T1 JOIN {sic} AS T2 "
        f"ON T1.{pairs['singer_id'].capitalize()} = T2.{pairs['singer_id'].capitalize()} "
        f"WHERE T1.{song.capitalize()} != 'Singer Lane' AND T1.{country} LIKE \"%age%\" GROUP BY T1.{country}")
    assert check_consistent(CONCERT, new) == pairs
    assert all(4 <= len(w) <= 9 and w.isalpha() for w in pairs.values())
    # a picked name inside a longer, unpicked identifier is renamed there too
    ex = spider_example(2, "concert_singer", "singer(Singer_ID, Name)\nsinger_in_concert(concert_ID, Singer_ID)",
                        "Count the singers.", "SELECT count(*) FROM singer")
    new = rename_names(ex, random.Random(0), 1.0)
    word = renamed_pairs(ex, new)["singer"]
    w = word.capitalize()
    assert new.prompt == (f"Database: concert_{word}\n{word}({w}_ID, Name)\n{word}_in_concert(concert_ID, "
                          f"{w}_ID)\nQuestion: Count the {word}s.\nSQL:")
    assert new.references == (f"SELECT count(*) FROM {word}",)
    check_consistent(ex, new)


def test_keywords_short_names_and_substrings_are_never_touched():
    new = rename_names(KEYWORDY, random.Random(3), 1.0)
    pairs = renamed_pairs(KEYWORDY, new)
    # "count" and "desc" equal keywords; "id" is short; "order_id" and "items" are unused by the SQL
    assert set(pairs) == {"orders", "name", "age"}
    q = new.prompt.split("\n")[-2]
    assert "average" in q and f"{pairs['orders']}s" not in q and f"{pairs['name']}d" not in q
    assert f" {pairs['age']} of {pairs['orders']} named Bo?" in q  # "named" is not "name"
    assert new.target == f" SELECT avg({pairs['age'].capitalize()}) FROM {pairs['orders']} WHERE {pairs['name']} = 'Bo' ORDER BY count DESC"
    assert "items(id, desc, order_id)" in new.prompt
    check_consistent(KEYWORDY, new)


def test_deterministic_and_fraction_zero_is_identity():
    assert rename_names(CONCERT, random.Random(7), 0.5) == rename_names(CONCERT, random.Random(7), 0.5)
    assert rename_names(CONCERT, random.Random(7), 0.0) is CONCERT
    outs = {rename_names(CONCERT, random.Random(s), 0.5) for s in range(20)}
    assert len(outs) > 10  # the draws matter
    words = [pseudo_word(random.Random(s)) for s in range(200)]
    assert all(4 <= len(w) <= 9 and w.isalpha() and w.islower() for w in words) and len(set(words)) > 150


def test_real_spider_records(spider_train):
    sample = spider_train[::35]  # 200 records across the databases
    rng = random.Random(0)
    renamed = 0
    for ex in sample:
        new = rename_names(ex, rng, 1.0)
        assert rename_names(ex, random.Random(1), 0.0) is ex
        if new == ex:
            continue
        renamed += 1
        check_consistent(ex, new)
    assert renamed > 0.8 * len(sample)
    # same seed, same variants
    assert augment_split(sample[:20], 2, 0.5, 4) == augment_split(sample[:20], 2, 0.5, 4)


def test_augment_split_layout():
    out = augment_split([CONCERT, KEYWORDY], 3, 0.5, seed=1)
    assert out[:2] == [CONCERT, KEYWORDY] and len(out) == 8
    assert [e.id for e in out[2:]] == [f"train_{i}~aug{k}" for k in (1, 2, 3) for i in (0, 1)]
    assert len({e.prompt for e in out[2::2]}) > 1  # each copy has its own draws
    assert augment_split([CONCERT], 0, 0.5, 1) == [CONCERT]
    with pytest.raises(ValueError):
        augment_split([CONCERT], -1, 0.5, 1)


@pytest.mark.filterwarnings("ignore:.*token limit")
def test_trainer_trains_on_the_augmented_split(tmp_path, monkeypatch):
    examples = [CONCERT, KEYWORDY] * 4
    monkeypatch.setattr(training.data, "load_split", lambda name, split, data_dir=None: examples)
    sizes = []
    real_encode = training.encode_split
    monkeypatch.setattr(training, "encode_split", lambda ex, *a: sizes.append(len(ex)) or real_encode(ex, *a))
    recipe = training.default_recipe("spider", "tiny", steps=1, vocab_size=300, augment_copies=2)
    assert recipe.key() != training.default_recipe("spider", "tiny", steps=1, vocab_size=300).key()
    training.train("spider", recipe, tmp_path / "ck", device="cpu", progress=False)
    assert sizes == [3 * len(examples), len(examples)]  # training split grew, eval split did not
    with pytest.raises(ValueError, match="Spider"):
        training.train("e2e_nlg", training.default_recipe("e2e_nlg", "tiny", steps=1, augment_copies=1),
                       tmp_path / "e2e", device="cpu", progress=False)
