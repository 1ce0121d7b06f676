"""Prompt lookup decoding: the n-gram lookup (latest match wins, longest n first, no match), the
chain's acceptance count, the strategy against naive, and the grammar around it."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt.generation import Clock
from llmopt.models.gpt_neo import GPTNeo, make_config
from llmopt.spec_stream.chain import accept_chain
from llmopt.spec_stream.lookup import LookupDecoder, NgramIndex
from llmopt.strategies import GROUPS, expand_techniques, get_strategy

from helpers import random_prompts, save_tiny_checkpoint


def lookup_by_scanning(tokens, k, min_n, max_n):
    """The reference: scan back for the latest earlier occurrence of the longest suffix."""
    for n in range(min(max_n, len(tokens)), min_n - 1, -1):
        suffix = tokens[len(tokens) - n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start: start + n] == suffix:
                extended = list(tokens)
                for i in range(k):  # what followed, the draft itself included (a periodic loop)
                    extended.append(extended[start + n + i])
                return extended[len(tokens):]
    return []


def test_the_latest_match_wins():
    index = NgramIndex(1, 3, [7, 1, 2, 8, 1, 2, 9, 4, 1, 2])
    assert index.lookup(2) == [9, 4]  # "1 2" was followed by 8 and later by 9


def test_the_longest_ngram_wins_over_a_later_shorter_one():
    index = NgramIndex(1, 3, [5, 1, 2, 3, 6, 0, 2, 3, 4, 1, 2, 3])
    assert index.lookup(1) == [6]  # "1 2 3" beats the later "2 3 4"
    assert NgramIndex(1, 2, index.tokens).lookup(1) == [4]  # without trigrams, "2 3" -> 4 (latest)


def test_no_match_drafts_nothing():
    assert NgramIndex(1, 3, [1, 2, 3, 4]).lookup(5) == []
    assert NgramIndex(2, 3, [1, 2, 3, 1]).lookup(5) == []  # "1" recurs, but unigrams are off
    assert NgramIndex(1, 3, [1]).lookup(5) == []
    assert NgramIndex(1, 3, [1, 1, 2]).lookup(0) == []


def test_a_match_near_the_end_repeats_its_period():
    assert NgramIndex(1, 3, [4, 4, 4]).lookup(5) == [4] * 5  # "4 4" at 0 was followed by the last 4
    assert NgramIndex(1, 3, [9, 1, 2, 1, 2]).lookup(5) == [1, 2, 1, 2, 1]  # "1 2" -> "1 2" then its period


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=30), st.integers(1, 3), st.integers(0, 2), st.integers(1, 6),
       st.integers(0, 30))
def test_the_index_equals_scanning_back(tokens, min_n, extra, k, split):
    max_n = min_n + extra
    index = NgramIndex(min_n, max_n, tokens[:split])
    index.extend(tokens[split:])  # built in two parts, as decoding extends it
    assert index.lookup(k) == lookup_by_scanning(tokens, k, min_n, max_n)


def test_acceptance_counts_the_verified_prefix():
    assert accept_chain([], [5]) == 0
    assert accept_chain([1, 2, 3], [1, 2, 3, 4]) == 3
    assert accept_chain([1, 2, 3], [1, 9, 3, 4]) == 1  # a later match after a miss does not count
    assert accept_chain([1, 2, 3], [0, 2, 3, 4]) == 0


@torch.inference_mode()
def test_a_repeating_output_is_drafted_and_accepted():
    """A model whose greedy output cycles: after one period every draft is right."""
    config = make_config("tiny", vocab_size=5, num_layers=1, num_heads=1, hidden_size=8, window_size=4,
                         max_position_embeddings=128)
    model = GPTNeo.random(config, seed=0, dtype=torch.float64)
    with torch.no_grad():  # a model that copies its position's token into the next: ignore attention
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight.copy_(torch.eye(5, 8, dtype=torch.float64) * 10)
    decoder = LookupDecoder(model, num_draft=4)
    out = decoder.generate([1, 2, 3, 1, 2, 3, 1, 2], 20, None, Clock("cpu"))
    assert len(set(out.tokens)) == 1 and sum(out.stats["accepted_per_step"]) > 10
    assert out.forward_calls < 10
    assert out.stats["accepted_per_depth"][0] <= out.stats["proposed_per_depth"][0]


def test_strategy_matches_naive(tmp_path):
    save_tiny_checkpoint(tmp_path, 30, window_size=8)
    naive = get_strategy("naive", dtype="float64")
    naive.prepare(tmp_path, "cpu")
    pld = get_strategy("pld", dtype="float64", num_draft=5, max_ngram=2)
    pld.prepare(tmp_path, "cpu")
    assert pld.config() == {"dtype": "float64", "attention_provider": "eager", "runtime": "eager",
                            "techniques": "pld", "num_draft": 5, "max_ngram": 2, "min_ngram": 1,
                            "extra_parameters": 0, "extra_parameter_bytes": 0, "drafter_train_time_s": None}
    for prompt in random_prompts(6, 30, 40) + [[3, 4, 5] * 8]:
        expected = naive.generate(prompt, 30, 7)
        out = pld.generate(prompt, 30, 7)
        assert out.tokens == expected.tokens and out.forward_calls <= expected.forward_calls
        assert len(out.stats["accepted_per_depth"]) == len(out.stats["proposed_per_depth"]) == 5


def test_pld_with_graphs_runs_its_static_chain_step_and_matches_naive(tmp_path):
    save_tiny_checkpoint(tmp_path, 30, window_size=8)
    naive = get_strategy("naive", dtype="float64")
    naive.prepare(tmp_path, "cpu")
    pld = get_strategy("pld+graphs", dtype="float64", num_draft=5, runtime="static", bucket=32)
    pld.prepare(tmp_path, "cpu")  # runtime static: the step uncaptured, as on a CPU it must be
    config = pld.config()
    assert (config["runtime"], config["techniques"], config["graph_bucket"]) == ("static", "pld+graphs", 32)
    for prompt in random_prompts(4, 30, 40) + [[3, 4, 5] * 8]:
        expected = naive.generate(prompt, 30, 7)
        out = pld.generate(prompt, 30, 7)
        assert out.tokens == expected.tokens and out.forward_calls <= expected.forward_calls
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        get_strategy("pld+graphs").prepare(tmp_path, "cpu")  # captured (the default runtime) on a CPU
    with pytest.raises(ValueError, match="options of graphs"):
        get_strategy("pld", runtime="static")


def test_pld_composes_with_a_precision_only():
    assert get_strategy("pld").dtype == torch.float32
    assert get_strategy("pld+half").dtype == torch.float16
    assert get_strategy("pld+bf16").dtype == torch.bfloat16
    assert get_strategy("pld+half", dtype="bfloat16").dtype == torch.bfloat16
    assert get_strategy("pld").objective == "lm"
    stock = get_strategy("hf+pld", num_draft=5)  # transformers' own prompt lookup, the stock reference
    assert stock.name == "hf+pld" and stock.config()["num_draft"] == 5 and stock.config()["extra_parameters"] == 0
    bad = {"pld+ss": "both drafting methods", "sps+flash2": "sps\\+flash2 is not built yet", "medusa+flash2": "medusa\\+flash2 is not built yet; compose medusa with: medusa\\+half, medusa\\+bf16, medusa\\+half\\+graphs",
           "pld+flash2": "pld\\+flash2 is not built yet", "pld+hf+sps": "hf .* combines only with pld or sps",
           "pld+half+bf16": "conflicting precisions"}
    for name, why in bad.items():
        with pytest.raises(ValueError, match=why):
            get_strategy(name)
    for options, why in [({"num_draft": 0}, "num_draft"), ({"min_ngram": 3, "max_ngram": 2}, "min_ngram"),
                         ({"min_ngram": 0}, "min_ngram")]:
        with pytest.raises(ValueError, match=why):
            get_strategy("pld", **options)


def test_the_peers_group_expands_in_place():
    assert "pld" in GROUPS["peers"]
    assert expand_techniques(["naive", "peers", "ss", "pld"]) == ["naive", *GROUPS["peers"], "ss"]
    assert expand_techniques(["half"]) == ["half"]
