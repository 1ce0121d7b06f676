"""Property: Medusa decoding emits exactly the tokens of plain greedy decoding.

Random tiny GPT-Neo configs (local windows shorter than some prompts), untrained random heads
(their own matrices or the shared LM head), or fresh heads (blocks at zero: every head guesses the
next token, often right on repeating outputs), random draft trees, self-repeating prompts, EOS
picked from the greedy output; float64 on CPU."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt.spec_stream.medusa import MedusaDecoder, MedusaModel, StaticMedusaDecoder

from greedy_cases import assert_decodes_like_greedy, random_model, runs, tiny_configs


@st.composite
def cases(draw):
    config = draw(tiny_configs())
    gamma = draw(st.integers(1, 4))
    return dict(config=config, seed=draw(st.integers(0, 999)), gamma=gamma, share_head=draw(st.booleans()),
                fresh=draw(st.booleans()), topk=tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=gamma))),
                run=draw(runs(config.vocab_size)))


@settings(max_examples=80, derandomize=True, deadline=None)
@given(cases(), st.booleans())
@torch.inference_mode()
def test_medusa_decoding_equals_greedy(case, static):
    """Over the dynamic cache, or with medusa+graphs' static step (uncaptured), its steps queued
    before the previous verdict is read or not."""
    base = random_model(case["config"], case["seed"])
    build = MedusaModel.from_base if case["fresh"] else MedusaModel.random
    model = build(base, case["gamma"], case["share_head"])
    decoder = (StaticMedusaDecoder if static else MedusaDecoder)(model, case["topk"])
    for queue_ahead in (False, True) if static else (False,):
        decoder.queue_ahead = queue_ahead
        assert_decodes_like_greedy(base, decoder, case["run"])
