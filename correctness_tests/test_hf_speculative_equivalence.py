"""Property: transformers' own speculative decoders, as the stock references `hf+pld` (prompt lookup)
and `hf+sps` (assisted generation with a draft model) run them, emit exactly plain greedy's tokens.

The same random tiny GPT-Neo cases as the other peers (float64 on CPU, prompts longer than the
window, EOS inside an accepted run), saved as checkpoints and loaded by transformers; fewer examples,
since each loads its models anew."""

import tempfile
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt.generation import greedy
from llmopt.strategies import get_strategy

from greedy_cases import CLOCK, random_model, runs, tiny_configs


@st.composite
def cases(draw):
    config = draw(tiny_configs())
    return dict(config=config, seed=draw(st.integers(0, 999)), run=draw(runs(config.vocab_size)),
                num_draft=draw(st.integers(1, 12)), max_ngram=draw(st.integers(1, 4)), k=draw(st.integers(1, 6)),
                draft_seed=draw(st.integers(0, 999)))


def expected_tokens(model, run):
    plain = greedy(model, run["prompt"], run["max_new_tokens"], None, CLOCK).tokens
    eos = None if run["eos_pick"] is None else plain[run["eos_pick"] % len(plain)]
    return eos, greedy(model, run["prompt"], run["max_new_tokens"], eos, CLOCK)


@settings(max_examples=25, derandomize=True, deadline=None)
@given(cases())
def test_stock_prompt_lookup_and_assisted_generation_equal_greedy(case):
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        check_case(case, Path(tmp) / "target", Path(tmp) / "draft")


def check_case(case, target, draft):
    model = random_model(case["config"], case["seed"])
    model.save_pretrained(target)
    random_model(case["config"], case["draft_seed"]).save_pretrained(draft)  # an untrained draft
    eos, expected = expected_tokens(model, case["run"])
    for name, options in (("hf+pld", dict(num_draft=case["num_draft"], max_ngram=case["max_ngram"])),
                          ("hf+sps", dict(draft=draft, k=case["k"]))):
        strategy = get_strategy(name, dtype="float64", **options)
        strategy.prepare(target, "cpu")
        out = strategy.generate(case["run"]["prompt"], case["run"]["max_new_tokens"], eos)
        assert out.tokens == expected.tokens, name
        assert 1 <= out.forward_calls <= expected.forward_calls, name
