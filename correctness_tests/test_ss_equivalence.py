"""Property: Speculative Streaming decoding emits exactly the tokens of plain greedy decoding.

Random tiny GPT-Neo configs (local windows shorter than some prompts), random and untrained
streams, random draft trees, prompts, lengths and EOS ids, tree pruning off or at random thresholds,
both attention implementations (eager, which the `ss` preset runs, and sdpa); float64 on CPU, so
near-ties cannot excuse a mismatch. The static tree step (what ss+graphs captures) likewise, with
its rows padded or not, and with its steps queued ahead or not.
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt.models.gpt_neo import make_config
from llmopt.spec_stream import Decoder, SpecStreamModel
from llmopt.spec_stream.static import StaticTreeDecoder
from llmopt.capture import GraphRunner
from llmopt.generation import Clock, greedy

CLOCK = Clock("cpu")


@st.composite
def cases(draw):
    layers, heads = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    head_dim = draw(st.integers(-(-8 // heads), 32 // heads))  # hidden size 8..32
    vocab = draw(st.integers(16, 64))
    config = make_config("tiny", vocab_size=vocab, hidden_size=heads * head_dim, num_layers=layers,
                         num_heads=heads, window_size=draw(st.integers(2, 16)), max_position_embeddings=96,
                         initializer_range=draw(st.sampled_from([0.1, 0.3, 1.0])))
    gamma = draw(st.integers(1, 4))
    return dict(
        config=config, gamma=gamma, num_stream_layers=draw(st.integers(1, layers)), seed=draw(st.integers(0, 999)),
        topk=tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=gamma))),
        prompt=draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=24)),
        max_new_tokens=draw(st.integers(1, 40)), eos_id=draw(st.none() | st.integers(0, vocab - 1)),
        attention=draw(st.sampled_from(["eager", "sdpa"])),
        prune=draw(st.just(0.0) | st.sampled_from([1e-3, 0.05, 0.3, 1.0]) | st.floats(1e-4, 0.6)),
    )


def model_of(case) -> SpecStreamModel:
    model = SpecStreamModel.random(case["config"], case["gamma"], case["num_stream_layers"], seed=case["seed"],
                                   dtype=torch.float64)
    model.set_attention(case["attention"])
    return model


def assert_decodes_like_greedy(model, decoder, case) -> None:
    """`decoder` emits plain greedy decoding's tokens, in fewer forward calls (one per step)."""
    prompt, max_new, eos = case["prompt"], case["max_new_tokens"], case["eos_id"]
    out = decoder.generate(prompt, max_new, eos, CLOCK)
    expected = greedy(model.base, prompt, max_new, eos, CLOCK)
    assert out.tokens == expected.tokens
    assert out.forward_calls == 1 + len(out.stats["accepted_per_step"]) <= expected.forward_calls


@settings(max_examples=300, derandomize=True, deadline=None)
@given(cases())
@torch.inference_mode()
def test_ss_decoding_equals_greedy(case):
    model = model_of(case)
    ids = torch.tensor([case["prompt"]])
    torch.testing.assert_close(model(ids)[0], model.base(ids), rtol=0, atol=1e-10)
    assert_decodes_like_greedy(model, Decoder(model, case["topk"], prune=case["prune"]), case)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(cases(), st.integers(1, 64))
@torch.inference_mode()
def test_static_tree_step_equals_greedy(case, bucket):
    """The static-shape step that ss+graphs captures (run uncaptured on CPU, through the bucketed
    runner) emits plain greedy decoding's tokens, also with each step queued before the previous
    verdict is read (queue_ahead: a step past EOS or max_new_tokens runs and is dropped)."""
    model = model_of(case)
    decoder = StaticTreeDecoder(model, case["topk"])
    decoder.runner = GraphRunner(decoder, "static", bucket)
    for queue_ahead in (False, True):
        decoder.queue_ahead = queue_ahead
        assert_decodes_like_greedy(model, decoder, case)


@settings(max_examples=100, derandomize=True, deadline=None)
@given(cases(), st.integers(1, 64), st.sampled_from([2, 8, 16]))
@torch.inference_mode()
def test_padded_tree_step_equals_greedy(case, bucket, pad_rows):
    """With its rows padded to a multiple of `pad_rows`, the static tree step still emits plain greedy
    decoding's tokens: padding nodes are seen by no tree node and never accepted or committed."""
    model = model_of(case)
    decoder = StaticTreeDecoder(model, case["topk"], pad_rows=pad_rows)
    assert decoder.nodes % pad_rows == 0 and decoder.nodes >= decoder.tree.size
    decoder.runner = GraphRunner(decoder, "static", bucket)
    assert_decodes_like_greedy(model, decoder, case)
