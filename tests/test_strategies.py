"""The strategies on CPU: token-identical to transformers, exact stops, clear errors."""

import pytest

from llmopt.strategies import STRATEGIES, get_strategy
from llmopt.strategies.techniques import parse_dtype

from helpers import random_prompts, save_tiny_checkpoint

VOCAB = 61


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    save_tiny_checkpoint(path, VOCAB, window_size=8)
    return path


def prompts(n=8, seed=0):
    return random_prompts(n, VOCAB, 30, seed)


def run(name, checkpoint, max_new=40, eos=None, **options):
    strategy = get_strategy(name, **options)
    strategy.prepare(checkpoint, "cpu")
    return [strategy.generate(p, max_new, eos) for p in prompts()]


def test_registry():
    assert {"hf", "naive", "half"} <= set(STRATEGIES)
    with pytest.raises(ValueError, match="unknown technique 'warp'; known:"):
        get_strategy("warp")
    with pytest.raises(ValueError, match="unknown dtype"):
        parse_dtype("fp8")
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        get_strategy("half", dtype="float32")


def test_naive_is_token_identical_to_transformers(checkpoint):
    ours, theirs = run("naive", checkpoint), run("hf", checkpoint)
    assert [g.tokens for g in ours] == [g.tokens for g in theirs]
    assert len({tuple(g.tokens) for g in ours}) > 1  # the model really varies with the prompt
    for g in ours:
        assert g.forward_calls == len(g.tokens) and g.forward_s > 0 and g.ttft_s > 0


def test_stops_exactly_at_eos(checkpoint):
    free = run("naive", checkpoint)
    eos = free[0].tokens[5]  # a token the first prompt is known to produce
    stopped = run("naive", checkpoint, eos=eos)
    for full, cut in zip(free, stopped):
        expected = full.tokens[: full.tokens.index(eos) + 1] if eos in full.tokens else full.tokens
        assert cut.tokens == expected
    assert [g.tokens for g in run("hf", checkpoint, eos=eos)] == [g.tokens for g in stopped]


def test_max_new_tokens_is_respected(checkpoint):
    for n in (1, 3):
        assert all(len(g.tokens) == n for g in run("naive", checkpoint, max_new=n))
        assert all(len(g.tokens) == n for g in run("hf", checkpoint, max_new=n))


def test_half_precision_runs_and_mostly_agrees(checkpoint):
    half = run("half", checkpoint, dtype="bfloat16")  # bf16 matmuls run on any CPU
    full = run("naive", checkpoint)
    assert all(len(g.tokens) == 40 for g in half)
    assert half[0].tokens[:2] == full[0].tokens[:2]


def test_strategy_options_reach_every_technique_containing_the_part_a_preset_too():
    """Session 10 on the H200: `--strategy-options '{"graphs": {"runtime": "torch.compile"}}'` left
    `best` (ss+flash2+graphs) on cuda_graph, since only the parts as written were looked up."""
    from llmopt import options

    run = options.settings({"techniques": ["best", "half+graphs", "naive"], "device": "cpu",
                            "strategy_options": {"graphs": {"runtime": "torch.compile"}}})
    assert run.options_for("best") == run.options_for("half+graphs") == {"runtime": "torch.compile"}
    assert run.options_for("naive") == {}
    only_best = options.settings({"techniques": ["best"], "device": "cpu",
                                  "strategy_options": {"graphs": {"bucket": 64}, "best": {"bucket": 128}}})
    assert only_best.options_for("best") == {"bucket": 128}  # the entry for the name as written wins
    # a composed name is an entry of its own: one technique gets an option its parts' others would refuse
    one = options.settings({"techniques": ["half+graphs", "graphs", "naive"], "device": "cpu",
                            "strategy_options": {"graphs": {"bucket": 64}, "half+graphs": {"bucket": 128}}})
    assert one.options_for("half+graphs") == {"bucket": 128} and one.options_for("graphs") == {"bucket": 64}
    with pytest.raises(ValueError, match="part of no technique"):
        options.settings({"techniques": ["naive"], "device": "cpu", "strategy_options": {"graphs": {}}})
