"""Property: draft-model speculative decoding emits exactly the tokens of plain greedy decoding.

A random tiny target and an untrained random draft model (another tiny shape, same vocabulary), or
the target as its own draft (every draft accepted: long accepted runs, EOS and max_new_tokens
inside them); random draft lengths, self-repeating prompts longer than the windows; float64."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt.spec_stream.draft_model import DraftModelDecoder, StaticDraftModelDecoder

from greedy_cases import assert_decodes_like_greedy, random_model, runs, tiny_configs


@st.composite
def cases(draw):
    config = draw(tiny_configs())
    draft = draw(st.none() | tiny_configs())  # None: the target drafts for itself
    if draft is not None:
        draft.vocab_size = config.vocab_size
    return dict(config=config, draft=draft, seed=draw(st.integers(0, 999)), k=draw(st.integers(1, 8)),
                run=draw(runs(config.vocab_size)))


@settings(max_examples=80, derandomize=True, deadline=None)
@given(cases(), st.booleans())
@torch.inference_mode()
def test_sps_decoding_equals_greedy(case, static):
    """Over dynamic caches, or with sps+graphs' static step (uncaptured)."""
    target = random_model(case["config"], case["seed"])
    draft = target if case["draft"] is None else random_model(case["draft"], case["seed"] + 1)
    decoder = (StaticDraftModelDecoder if static else DraftModelDecoder)(target, draft, case["k"])
    assert_decodes_like_greedy(target, decoder, case["run"])
