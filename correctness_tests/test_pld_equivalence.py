"""Property: prompt lookup decoding emits exactly the tokens of plain greedy decoding.

Random tiny GPT-Neo configs (local windows shorter than some prompts), self-repeating prompts,
random draft lengths and n-gram ranges, EOS picked from the greedy output; float64 on CPU."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt.spec_stream.lookup import LookupDecoder, StaticLookupDecoder

from greedy_cases import assert_decodes_like_greedy, random_model, runs, tiny_configs


@st.composite
def cases(draw):
    config = draw(tiny_configs())
    min_ngram = draw(st.integers(1, 3))
    return dict(config=config, seed=draw(st.integers(0, 999)), num_draft=draw(st.integers(1, 12)),
                min_ngram=min_ngram, max_ngram=draw(st.integers(min_ngram, 4)), run=draw(runs(config.vocab_size)))


@settings(max_examples=80, derandomize=True, deadline=None)
@given(cases())
@torch.inference_mode()
def test_pld_decoding_equals_greedy(case):
    model = random_model(case["config"], case["seed"])
    decoder = LookupDecoder(model, case["num_draft"], case["max_ngram"], case["min_ngram"])
    assert_decodes_like_greedy(model, decoder, case["run"])


@settings(max_examples=60, derandomize=True, deadline=None)
@given(cases(), st.booleans())
@torch.inference_mode()
def test_pld_static_chain_step_equals_greedy(case, fused):
    """pld+graphs' step, uncaptured: the chain verified over a static cache with padding rows."""
    model = random_model(case["config"], case["seed"])
    if fused:
        model.fuse_qkv()
    decoder = StaticLookupDecoder(model, case["num_draft"], case["max_ngram"], case["min_ngram"])
    assert_decodes_like_greedy(model, decoder, case["run"])
