"""Speculative Streaming tree pruning (paper §3.2): early-exit logits after layer N - Ns drop
unlikely draft nodes before the MSA layers. Pruning only removes draft candidates, so the output
must stay exactly plain greedy decoding's, and every layer's KV cache must hold prefix + accepted
path although the bottom layers processed the whole tree and the top ones only the kept nodes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt.models.gpt_neo import make_config
from llmopt.spec_stream import Decoder, SpecStreamModel
from llmopt.strategies import get_strategy
from llmopt.generation import Clock, greedy

from helpers import perfect_stream_logits

CLOCK = Clock("cpu")


def random_model(gamma=3, num_stream_layers=2, layers=3, window=4, vocab=40, seed=0, attention="eager",
                 init=0.3):
    config = make_config("tiny", vocab_size=vocab, hidden_size=32, num_layers=layers, num_heads=2,
                         window_size=window, max_position_embeddings=128, initializer_range=init)
    model = SpecStreamModel.random(config, gamma, num_stream_layers, seed=seed, dtype=torch.float64).eval()
    model.set_attention(attention)
    return model


def transition_probs(model, dec, state, ids, positions):
    """Early-exit p(node's token | parent) of every tree node, computed from scratch on a copy of
    the cache: ln_f + LM head on the hidden states after layer N - Ns."""
    base, tree = model.base, dec.tree
    cache = base.new_cache()
    cache.keys, cache.values = list(state.cache.keys), list(state.cache.values)
    split = len(base.transformer.h) - model.num_stream_layers
    x = base.embed(ids[None], positions)
    x = base.run_blocks(x, base.masks(len(cache), positions, tree.ancestors), cache, range(split))
    probs = base.head(x)[0].softmax(-1)
    return probs[tree.parent_index, ids]


def plain_cache(model, tokens):
    cache = model.base.new_cache()
    model.base(torch.tensor([tokens]), cache)
    return cache


def assert_cache_equals_plain(model, state, tokens):
    """Every layer holds exactly the keys/values plain decoding of `tokens` builds, in order."""
    plain = plain_cache(model, tokens)
    for layer in range(len(model.base.transformer.h)):
        for got, want in ((state.cache.keys[layer], plain.keys[layer]), (state.cache.values[layer], plain.values[layer])):
            assert got.shape == want.shape, f"layer {layer}: {tuple(got.shape)} vs {tuple(want.shape)}"
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- greedy equivalence

@st.composite
def cases(draw):
    layers = draw(st.integers(1, 4))
    vocab = draw(st.integers(16, 48))
    config = make_config("tiny", vocab_size=vocab, hidden_size=16, num_layers=layers, num_heads=2,
                         window_size=draw(st.integers(2, 12)), max_position_embeddings=80,
                         initializer_range=draw(st.sampled_from([0.3, 1.0, 3.0])))
    gamma = draw(st.integers(1, 4))
    return dict(
        config=config, gamma=gamma, num_stream_layers=draw(st.integers(1, layers)), seed=draw(st.integers(0, 999)),
        topk=tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=gamma))),
        prune=draw(st.sampled_from([1e-3, 0.01, 0.05, 0.2, 0.5, 1.0]) | st.floats(1e-4, 0.6)),
        prompt=draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=16)),
        max_new_tokens=draw(st.integers(1, 30)), eos_id=draw(st.none() | st.integers(0, vocab - 1)),
        attention=draw(st.sampled_from(["eager", "sdpa"])),
    )


@settings(max_examples=60, derandomize=True, deadline=None)
@given(cases())
def test_pruned_decoding_equals_greedy(case):
    model = SpecStreamModel.random(case["config"], case["gamma"], case["num_stream_layers"], seed=case["seed"],
                                   dtype=torch.float64)
    model.set_attention(case["attention"])
    prompt, max_new, eos = case["prompt"], case["max_new_tokens"], case["eos_id"]
    with torch.inference_mode():
        out = Decoder(model, case["topk"], prune=case["prune"]).generate(prompt, max_new, eos, CLOCK)
        expected = greedy(model.base, prompt, max_new, eos, CLOCK)
    assert out.tokens == expected.tokens
    assert out.forward_calls == 1 + len(out.stats["accepted_per_step"]) <= expected.forward_calls
    size = 1 + sum(torch.tensor(case["topk"][:g]).prod().item() for g in range(1, len(case["topk"]) + 1))
    assert all(1 <= k <= size for k in out.stats["kept_per_step"])


def test_pruning_everything_but_the_root_is_plain_decoding():
    model = random_model()
    prompt = [3, 1, 4, 1, 5]
    out = Decoder(model, (2, 2, 1), prune=1.0).generate(prompt, 12, None, CLOCK)
    expected = greedy(model.base, prompt, 12, None, CLOCK)
    assert out.tokens == expected.tokens and out.forward_calls == expected.forward_calls
    assert out.stats["kept_per_step"] == [1] * 11 and out.stats["accepted_per_step"] == [0] * 11
    assert out.stats["proposed_per_depth"] == [0, 0, 0]  # nothing reached verification


@pytest.mark.parametrize("topk", [(1, 1, 1), (2, 2, 1)])
def test_threshold_zero_is_the_unpruned_decoder(topk):
    model = random_model(seed=1)
    gen = torch.Generator().manual_seed(0)
    for length in (1, 7):
        prompt = torch.randint(0, 40, (length,), generator=gen).tolist()
        plain = Decoder(model, topk).generate(prompt, 20, None, CLOCK)
        off = Decoder(model, topk, prune=0.0).generate(prompt, 20, None, CLOCK)
        # a threshold nothing falls below takes the pruning code path but keeps every node
        tiny = Decoder(model, topk, prune=1e-300).generate(prompt, 20, None, CLOCK)
        for out in (off, tiny):
            assert out.tokens == plain.tokens
            assert out.forward_calls == plain.forward_calls
            assert out.stats == plain.stats
        assert set(plain.stats["kept_per_step"]) == {Decoder(model, topk).tree.size}


def test_prune_threshold_is_validated():
    with pytest.raises(ValueError, match="threshold"):
        Decoder(random_model(), (1, 1), prune=1.5)
    with pytest.raises(ValueError, match="prune"):
        get_strategy("ss", prune=-0.1)


# ---------------------------------------------------------------- what is pruned, and where

def test_keeps_exactly_the_nodes_whose_path_clears_the_threshold():
    model = random_model(gamma=3, layers=4, num_stream_layers=2, init=1.0)
    dec = Decoder(model, (3, 2, 2))
    state = dec.start([5, 9, 2, 7, 7, 1])
    ids, positions, masks = dec.step_inputs(state)
    probs = transition_probs(model, dec, state, ids, positions)
    tree, seen = dec.tree, set()
    ranked = sorted(probs[1:].tolist())
    # midway between consecutive probabilities: no threshold sits on a boundary
    for threshold in [(a + b) / 2 for a, b in zip(ranked, ranked[1:])][::2] + [0.99]:
        dec.prune = threshold
        expected = [n for n in range(tree.size) if all(probs[a] >= threshold for a in tree.paths[n][1:])]
        cache = model.base.new_cache()
        cache.keys, cache.values = list(state.cache.keys), list(state.cache.values)
        probe = type(state)(cache, state.root, state.stream_logits)
        dec.forward(probe, ids, positions, masks)
        nodes = list(range(tree.size)) if probe.pruned is None else probe.pruned.nodes
        assert nodes == expected, threshold
        seen.add(len(nodes))
    assert len(seen) > 4 and 1 in seen  # thresholds from keeping almost all to the root alone


class RowCounter:
    """Counts the rows entering each block (its first LayerNorm) during a forward."""

    def __init__(self, model):
        self.rows = {}
        self.handles = [block.ln_1.register_forward_hook(self.hook(i)) for i, block in enumerate(model.base.transformer.h)]

    def hook(self, i):
        def record(module, args, output):
            self.rows[i] = args[0].shape[1]
        return record

    def close(self):
        for h in self.handles:
            h.remove()


def test_high_threshold_cuts_the_rows_of_the_msa_layers():
    model = random_model(gamma=3, layers=4, num_stream_layers=2)
    g, split = model.gamma, 2
    prompt = [1, 2, 3, 4, 5, 6]
    for threshold, fewer in ((0.0, False), (0.5, True)):
        dec = Decoder(model, (3, 3, 2), prune=threshold)
        n = dec.tree.size
        state = dec.start(prompt)
        counter = RowCounter(model)
        try:
            ids, positions, masks = dec.step_inputs(state)
            dec.forward(state, ids, positions, masks)
        finally:
            counter.close()
        kept = n if state.pruned is None else len(state.pruned.nodes)
        assert [counter.rows[i] for i in range(split)] == [n] * split  # the bottom layers see the whole tree
        assert [counter.rows[i] for i in range(split, 4)] == [kept * (1 + g)] * 2  # main + γ streams per kept node
        if fewer:
            assert kept < n / 2
        else:
            assert kept == n
        # the bottom layers cached the whole tree, the MSA layers only the kept nodes
        assert [state.cache.keys[i].shape[2] for i in range(4)] == [len(prompt) + n] * split + [len(prompt) + kept] * 2
    out = Decoder(model, (3, 3, 2), prune=0.5).generate(prompt, 16, None, CLOCK)
    assert out.tokens == greedy(model.base, prompt, 16, None, CLOCK).tokens
    assert max(out.stats["kept_per_step"]) < n


# ---------------------------------------------------------------- the per-layer KV commit

@pytest.mark.parametrize("num_stream_layers", [1, 2, 3])  # 3 of 3: no bottom layers
@pytest.mark.parametrize("rank", [0, 1])  # 0: along the top-1 chain (slice); 1: a side branch (gather)
def test_pruned_step_commits_every_layer_like_plain_decoding(rank, num_stream_layers):
    """The early exit is steered to favour the true continuation, so wrong nodes are pruned but the
    true path survives: its full-tree and kept-row indices differ (rank 1), and every layer must
    still end up with prefix + accepted path."""
    model = random_model(gamma=3, layers=3, num_stream_layers=num_stream_layers, window=4)
    prompt = [3, 14, 15, 9, 2, 6]
    truth = greedy(model.base, prompt, 9, None, CLOCK).tokens
    dec = Decoder(model, (2, 2, 2), prune=0.2)
    state = dec.start(prompt)
    emitted = [truth[0]]
    favoured = torch.zeros(40, dtype=torch.float64)
    favoured[truth] = 30.0  # every early-exit row: mass spread over the true tokens only
    model.early_exit = lambda x: favoured.expand(*x.shape[:-1], 40)
    try:
        for _ in range(2):
            state.stream_logits = perfect_stream_logits(truth[len(emitted): len(emitted) + 3], 40, rank)
            ids, positions, masks = dec.step_inputs(state)
            main, streams = dec.forward(state, ids, positions, masks)
            assert state.pruned is not None and len(state.pruned.nodes) < dec.tree.size
            assert main.shape[1] == streams.shape[1] == len(state.pruned.nodes)
            if rank:  # the accepted path sits at different indices in the full tree and the kept rows
                assert state.pruned.nodes != list(range(len(state.pruned.nodes)))
            new, accepted = dec.verify(state, ids, main, streams)
            assert accepted == 3 and new == truth[len(emitted): len(emitted) + 4]
            emitted += new
            assert state.root.tolist() == emitted[-1:]
            assert_cache_equals_plain(model, state, prompt + emitted[:-1])
            committed = torch.tensor([prompt + emitted[:-1]])
            _, streams = model(committed, stream_start=committed.shape[1] - 1)
            torch.testing.assert_close(state.stream_logits, streams[0, -1], rtol=0, atol=1e-12)
    finally:
        del model.early_exit


@pytest.mark.parametrize("topk", [(2, 2, 2), (3, 1, 1)])
def test_every_layer_matches_plain_decoding_after_each_pruned_step(topk):
    """Real early exit, a whole generation: after every step each layer's cache is the plain one."""
    model = random_model(gamma=3, layers=4, num_stream_layers=2, init=1.0, seed=3)
    prompt = [7, 3, 3, 8, 1]
    dec = Decoder(model, topk, prune=0.05)
    state = dec.start(prompt)
    emitted = [int(state.root)]
    pruned_steps = 0
    while len(emitted) < 24:
        ids, positions, masks = dec.step_inputs(state)
        main, streams = dec.forward(state, ids, positions, masks)
        pruned_steps += state.pruned is not None
        new, _ = dec.verify(state, ids, main, streams)
        emitted += new
        assert_cache_equals_plain(model, state, prompt + emitted[:-1])
    assert pruned_steps > 0
    assert emitted[:24] == greedy(model.base, prompt, 24, None, CLOCK).tokens


# ---------------------------------------------------------------- the strategy

def test_strategy_prune_option(tmp_path):
    random_model(gamma=4, layers=3, num_stream_layers=2).save_pretrained(tmp_path)
    ss = get_strategy("ss", dtype="float64", topk="3,2,1", prune="0.1")
    ss.prepare(tmp_path, "cpu")
    assert ss.config()["prune"] == 0.1 and ss.decoder.prune == 0.1
    assert get_strategy("ss").prune == 0.0
    naive = get_strategy("naive", dtype="float64")
    naive.prepare(tmp_path, "cpu")
    for prompt in ([1, 2, 3], [5] * 12):
        out = ss.generate(prompt, 25, 7)
        assert out.tokens == naive.generate(prompt, 25, 7).tokens
