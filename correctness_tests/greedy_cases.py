"""What the peers' equivalence properties share (imported as `greedy_cases`: pytest puts this
folder on sys.path): random tiny GPT-Neo targets in float64, prompts that repeat themselves (so
drafts get accepted), and the check that a decoder emits plain greedy decoding's tokens."""

import torch
from hypothesis import strategies as st

from llmopt.generation import Clock, greedy
from llmopt.models.gpt_neo import GPTNeo, make_config

CLOCK = Clock("cpu")


@st.composite
def tiny_configs(draw, max_positions: int = 96):
    """Tiny GPT-Neo shapes whose local window is often shorter than the prompt."""
    layers, heads = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    head_dim = draw(st.integers(-(-8 // heads), 24 // heads))  # hidden size 8..24
    return make_config("tiny", vocab_size=draw(st.integers(8, 48)), hidden_size=heads * head_dim,
                       num_layers=layers, num_heads=heads, window_size=draw(st.integers(2, 16)),
                       max_position_embeddings=max_positions,
                       initializer_range=draw(st.sampled_from([0.1, 0.3, 1.0])))


def random_model(config, seed: int) -> GPTNeo:
    return GPTNeo.random(config, seed=seed, dtype=torch.float64).eval()


@st.composite
def prompts(draw, vocab: int):
    """A random chunk, repeated and perturbed: longer than most windows, with n-grams recurring."""
    chunk = draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=10))
    prompt = chunk * draw(st.integers(1, 4)) + draw(st.lists(st.integers(0, vocab - 1), max_size=6))
    return prompt[:40]


@st.composite
def runs(draw, vocab: int):
    """A prompt, max_new_tokens, and an EOS pick: None, or the index of a token of the greedy output
    (so EOS often lands inside an accepted run)."""
    return dict(prompt=draw(prompts(vocab)), max_new_tokens=draw(st.integers(1, 40)),
                eos_pick=draw(st.none() | st.integers(0, 39)))


def assert_decodes_like_greedy(model: GPTNeo, decoder, run) -> None:
    """`decoder` (a DraftLoop) emits plain greedy decoding's tokens, one target forward per step."""
    prompt, max_new = run["prompt"], run["max_new_tokens"]
    plain = greedy(model, prompt, max_new, None, CLOCK).tokens
    eos = None if run["eos_pick"] is None else plain[run["eos_pick"] % len(plain)]
    expected = greedy(model, prompt, max_new, eos, CLOCK)
    out = decoder.generate(prompt, max_new, eos, CLOCK)
    assert out.tokens == expected.tokens
    assert out.forward_calls == 1 + len(out.stats["accepted_per_step"]) <= expected.forward_calls
    assert all(a <= p for a, p in zip(out.stats["accepted_per_depth"], out.stats["proposed_per_depth"]))
