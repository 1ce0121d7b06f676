"""Speculative Streaming: the draft tree, multi-stream attention, decoding, training and checkpoints."""

import pytest
import torch

from llmopt.generation import Clock, greedy
from llmopt.models.gpt_neo import GPTNeo, make_config
from llmopt.spec_stream import Decoder, DraftTree, SpecStreamModel, build_ss, ss_loss
from llmopt.spec_stream.loss import IGNORE
from llmopt.spec_stream.static import StaticTreeDecoder
from llmopt.strategies import get_strategy
from llmopt.train import lm_loss

from helpers import perfect_stream_logits

CLOCK = Clock("cpu")


def random_model(gamma=3, num_stream_layers=2, layers=3, window=4, vocab=40, seed=0, dtype=torch.float64,
                 attention="sdpa"):
    """Random weights, large enough not to be degenerate (sdpa by default; eager is tested too)."""
    config = make_config("tiny", vocab_size=vocab, hidden_size=32, num_layers=layers, num_heads=2,
                         window_size=window, max_position_embeddings=128, initializer_range=0.3)
    model = SpecStreamModel.random(config, gamma, num_stream_layers, seed=seed, dtype=dtype).eval()
    model.set_attention(attention)
    return model


# ---------------------------------------------------------------- the draft tree

def ancestors_by_walking(parents, i):
    seen = {i}
    while parents[i] >= 0:
        i = parents[i]
        seen.add(i)
    return seen


@pytest.mark.parametrize("topk,size", [((1, 1, 1, 1), 5), ((2, 1, 1), 7), ((3, 2), 10), ((2, 2, 2), 15), ((1,), 2)])
def test_tree_shape_and_ancestor_mask(topk, size):
    tree = DraftTree(topk)
    assert tree.size == size == 1 + sum(torch.tensor(topk[:g]).prod().item() for g in range(1, len(topk) + 1))
    depths = tree.depths.tolist()
    assert tree.nodes_per_depth == [depths.count(d) for d in range(1, len(topk) + 1)]
    for i in range(tree.size):
        seen = ancestors_by_walking(tree.parents, i)
        assert set(torch.nonzero(tree.ancestors[i]).flatten().tolist()) == seen  # itself and its ancestors
        assert len(seen) == depths[i] + 1 and tree.paths[i] == sorted(seen)
        if i:
            assert depths[i] == depths[tree.parents[i]] + 1
    # the top-1 chain comes first, so committing it is a slice
    assert depths[: len(topk) + 1] == list(range(len(topk) + 1))
    assert all(tree.paths[d] == list(range(d + 1)) for d in range(len(topk) + 1))


def test_tree_draft_takes_each_streams_topk_under_every_parent():
    tree = DraftTree((2, 3, 1))
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))  # γ = 4 > depth 3
    ids = tree.draft(torch.tensor([7]), logits).tolist()
    assert ids[0] == 7 and len(ids) == tree.size
    for node in range(tree.size):
        children = [c for c in range(tree.size) if tree.parents[c] == node]
        if children:
            depth = len(tree.paths[children[0]]) - 1
            best = logits[depth - 1].topk(len(children)).indices.tolist()
            assert [ids[c] for c in children] == best  # in rank order


def test_tree_accepts_the_longest_verified_path():
    tree = DraftTree((2, 2))  # nodes: 0; 1 (r0) -> 2, 3; 4 (r1) -> 5, 6
    ids = torch.tensor([9, 1, 2, 3, 4, 5, 6])
    predicted = torch.full((7,), 99)
    assert int(tree.accept(ids, predicted)) == 0  # nothing matches: the root alone
    predicted[0] = 4  # root predicts 4 -> node 4 accepted
    assert int(tree.accept(ids, predicted)) == 4
    predicted[4] = 6  # node 4 predicts 6 -> node 6
    assert int(tree.accept(ids, predicted)) == 6
    predicted[1] = 2  # node 2 matches its parent, but node 1 was rejected
    assert int(tree.accept(ids, predicted)) == 6


# ---------------------------------------------------------------- masks

@pytest.mark.parametrize("topk", [(1, 1, 1), (2, 1, 1), (2, 2)])
@pytest.mark.parametrize("past", [0, 1, 3, 9])
def test_step_masks_equal_masks_built_from_scratch(topk, past):
    model = random_model(window=3)
    dec = Decoder(model, topk)
    tree, g, n, window = dec.tree, model.gamma, dec.tree.size, model.config.window_size
    step = dec.step_masks(past)
    positions = tree.depths + past
    expected = model.stream_masks(model.base.masks(past, positions, tree.ancestors), past, n)
    for kind in ("global", "local"):
        assert torch.equal(step[kind], expected[kind])
        m = step[kind]
        assert m.shape == (n * (1 + g), past + n * (1 + g))
        for row, node in enumerate([*range(n), *(r // g for r in range(n * g))]):  # main rows, stream rows
            pos = past + int(tree.depths[node])
            cache_seen = [p for p in range(past) if kind == "global" or pos - p < window]
            new_seen = [a for a in tree.paths[node] if kind == "global" or pos - past - int(tree.depths[a]) < window]
            assert torch.nonzero(m[row, :past]).flatten().tolist() == cache_seen
            assert torch.nonzero(m[row, past: past + n]).flatten().tolist() == new_seen
            streams_seen = torch.nonzero(m[row, past + n:]).flatten().tolist()
            if row < n:
                assert streams_seen == []  # the main stream never sees a stream
            else:
                j = (row - n) % g
                assert streams_seen == [node * g + i for i in range(j + 1)]  # streams 1..j of its node


# ---------------------------------------------------------------- the model

@pytest.mark.parametrize("attention,atol", [("sdpa", 1e-12), ("eager", 1e-5)])  # eager: float32 scores
def test_main_stream_equals_base_model_and_streams_are_distinct(attention, atol):
    model = random_model(layers=4, num_stream_layers=2, attention=attention)
    ids = torch.randint(0, 40, (2, 11), generator=torch.Generator().manual_seed(1))
    main, streams = model(ids)
    torch.testing.assert_close(main, model.base(ids), rtol=0, atol=atol)
    assert streams.shape == (2, 11, model.gamma, 40)
    for j in range(1, model.gamma):
        assert (streams[:, :, j] - streams[:, :, 0]).abs().max() > 1e-3  # not copies of one another
    assert (streams[:, :, 0] - main).abs().max() > 1e-3


def test_stream_j_sees_only_streams_up_to_j():
    model = random_model(gamma=4)
    ids = torch.randint(0, 40, (1, 9), generator=torch.Generator().manual_seed(2))
    main, streams = model(ids)
    with torch.no_grad():
        model.stream_embeddings[2] += torch.randn(32, dtype=torch.float64)  # stream 3 (not a constant: LayerNorm)
    main2, streams2 = model(ids)
    assert torch.equal(main, main2)
    assert torch.equal(streams[:, :, :2], streams2[:, :, :2])
    assert (streams[:, :, 2:] - streams2[:, :, 2:]).abs().amin(dim=-1).gt(0).all()


def test_streams_of_a_full_sequence_equal_incremental_streams():
    """Training computes every position's streams at once; decoding one position at a time with a
    cache. They must agree, the local window (3 < 12 tokens) included."""
    model = random_model(window=3, layers=3, num_stream_layers=2)
    ids = torch.randint(0, 40, (1, 12), generator=torch.Generator().manual_seed(3))
    main, streams = model(ids)
    cache = model.base.new_cache()
    for t in range(12):
        m, s = model(ids[:, t: t + 1], cache)
        torch.testing.assert_close(m[0, 0], main[0, t])
        torch.testing.assert_close(s[0, 0], streams[0, t])
        _, last = model(ids[:, : t + 1], stream_start=t)  # a prefill's streams at its last position only
        assert last.shape[1] == 1
        torch.testing.assert_close(last[0, 0], streams[0, t])
    assert len(cache) == 12  # only main-stream keys/values were cached


# ---------------------------------------------------------------- decoding

@pytest.mark.parametrize("rank", [0, 1])  # 0: along the top-1 chain (slice); 1: a side branch (gather)
def test_step_commits_the_cache_plain_decoding_builds(rank):
    model = random_model(gamma=3, window=4)
    prompt = [3, 14, 15, 9, 2, 6]
    truth = greedy(model.base, prompt, 9, None, CLOCK).tokens
    dec = Decoder(model, (2, 2, 2))
    state = dec.start(prompt)
    assert state.root.tolist() == truth[:1]
    emitted = [truth[0]]
    for _ in range(2):
        state.stream_logits = perfect_stream_logits(truth[len(emitted): len(emitted) + 3], 40, rank)
        ids, positions, masks = dec.step_inputs(state)
        main, streams = dec.forward(state, ids, positions, masks)
        new, accepted = dec.verify(state, ids, main, streams)
        assert accepted == 3 and new == truth[len(emitted): len(emitted) + 4]
        emitted += new
        plain = model.base.new_cache()
        committed = torch.tensor([prompt + emitted[:-1]])  # the root is not cached yet
        model.base(committed, plain)
        assert len(state.cache) == len(plain)
        # the next draft comes from the streams at the last accepted node
        assert state.root.tolist() == emitted[-1:]
        _, streams = model(committed, stream_start=committed.shape[1] - 1)
        torch.testing.assert_close(state.stream_logits, streams[0, -1], rtol=0, atol=1e-12)
        for layer in range(3):
            torch.testing.assert_close(state.cache.keys[layer], plain.keys[layer], rtol=0, atol=1e-12)
            torch.testing.assert_close(state.cache.values[layer], plain.values[layer], rtol=0, atol=1e-12)


@pytest.mark.parametrize("rank", [0, 1])
@torch.inference_mode()
def test_static_step_commits_the_cache_plain_decoding_builds(rank):
    """The static step (ss+graphs) moves the accepted path's keys/values to slots pos.. on the device."""
    model = random_model(gamma=3, window=4)
    prompt = [3, 14, 15, 9, 2, 6]
    truth = greedy(model.base, prompt, 9, None, CLOCK).tokens
    dec = StaticTreeDecoder(model, (2, 2, 2))
    root = dec.start(prompt, 9).root
    emitted = [int(root)]
    for _ in range(2):
        dec.stream_logits.copy_(perfect_stream_logits(truth[len(emitted): len(emitted) + 3], 40, rank))
        dec.forward(None)
        new, accepted = dec.verify(None)
        assert accepted == 3 and new == truth[len(emitted): len(emitted) + 4]
        if rank:
            assert dec.verdict[0] != 3  # a side branch: the commit had to move keys/values
        emitted += new
        plain = model.base.new_cache()
        model.base(torch.tensor([prompt + emitted[:-1]]), plain)
        n = len(plain)
        assert int(dec.cache.pos) == n and dec.root.tolist() == emitted[-1:]
        for layer in range(3):
            k, v = dec.cache.view(layer, n)
            torch.testing.assert_close(k, plain.keys[layer], rtol=0, atol=1e-12)
            torch.testing.assert_close(v, plain.values[layer], rtol=0, atol=1e-12)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("topk", [(1, 1, 1), (2, 1), (3, 2, 1)])
def test_untrained_streams_still_decode_exactly_greedy(topk, attention):
    model = random_model(gamma=3, attention=attention)
    dec = Decoder(model, topk)
    gen = torch.Generator().manual_seed(4)
    for length in (1, 3, 9):
        prompt = torch.randint(0, 40, (length,), generator=gen).tolist()
        assert dec.generate(prompt, 30, None, CLOCK).tokens == greedy(model.base, prompt, 30, None, CLOCK).tokens


# ---------------------------------------------------------------- training

VOCAB, SEQ = 32, 16


def counting_batch(gen, batch=16):
    """Toy task: count up mod VOCAB. Stream j must learn "+1+j"; the first 2 tokens are the prompt."""
    ids = (torch.randint(0, VOCAB, (batch, 1), generator=gen) + torch.arange(SEQ)) % VOCAB
    labels = ids.clone()
    labels[:, :2] = IGNORE
    return ids, labels


@pytest.fixture(scope="module")
def counting_model():
    torch.manual_seed(0)
    config = make_config("tiny", vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, window_size=8,
                         max_position_embeddings=64)
    model = build_ss(config, None, {"gamma": 3, "num_stream_layers": 2}, seed=0)
    model.set_attention("sdpa")  # as the trainer does
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    history = []
    for _ in range(80):
        loss, logs = ss_loss(model, *counting_batch(gen))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({k: float(v) for k, v in logs.items()})
    model.set_attention("eager")
    return model.eval(), history


def test_ss_loss_falls(counting_model):
    _, history = counting_model
    assert set(history[0]) == {"loss", "main", "stream1", "stream2", "stream3"}
    first, last = history[0], history[-1]
    for term in ("loss", "main", "stream1", "stream2", "stream3"):
        assert last[term] < 0.2 * first[term], term


def test_ss_loss_terms():
    model = random_model(gamma=2, dtype=torch.float32)
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 40, (2, 6), generator=gen)
    labels = ids.clone()
    labels[0, :3] = IGNORE  # a prompt
    labels[1, 4:] = IGNORE  # padding
    loss, logs = ss_loss(model, ids, labels)
    torch.testing.assert_close(logs["main"], lm_loss(model.base, ids, labels)[0])
    _, streams = model(ids)
    # stream 2 at t predicts t + 3: targets labels[:, 3:] = row 0: ids[0, 3:6]; row 1: ids[1, 3]
    logits = torch.cat([streams[0, 0:3, 1], streams[1, 0:1, 1]])
    expected = torch.nn.functional.cross_entropy(logits, torch.cat([ids[0, 3:6], ids[1, 3:4]]))
    torch.testing.assert_close(logs["stream2"], expected)
    torch.testing.assert_close(loss, logs["main"] + 0.1 * (logs["stream1"] + logs["stream2"]))
    short = ss_loss(model, ids[:, :2], labels[:, :2])[0]  # streams longer than the sequence: no NaN
    assert torch.isfinite(short)


def test_build_ss_options():
    config = make_config("tiny", vocab_size=40)
    model = build_ss(config, None, {}, seed=0)
    assert (model.gamma, model.num_stream_layers) == (4, 4)
    assert build_ss(config, None, {"num_stream_layers": 9, "gamma": 2}, seed=0).num_stream_layers == 4  # clamped
    base = GPTNeo.random(config, seed=3)
    assert build_ss(config, base, {}, seed=0).base is base  # fine-tunes the given model
    with pytest.raises(ValueError, match="unknown ss options"):
        build_ss(config, None, {"streams": 2}, seed=0)


def test_trained_streams_are_accepted(counting_model):
    """Real verification of real drafts: a model trained on counting drafts correctly."""
    model, _ = counting_model
    dec = Decoder(model, (1, 1, 1))
    out = dec.generate([5, 6, 7], 12, None, CLOCK)
    assert out.tokens == list(range(8, 20)) == greedy(model.base, [5, 6, 7], 12, None, CLOCK).tokens
    steps = out.stats["accepted_per_step"]
    assert sum(steps) / len(steps) >= 2 and out.forward_calls == 1 + len(steps) < 12
    assert out.stats["proposed_per_depth"] == [len(steps)] * 3
    assert out.stats["accepted_per_depth"] == [sum(a > d for a in steps) for d in range(3)]
    with torch.inference_mode():
        static = StaticTreeDecoder(model, (1, 1, 1)).generate([5, 6, 7], 12, None, CLOCK)
    assert static.tokens == out.tokens and static.stats == out.stats


@pytest.mark.parametrize("eos_id,max_new,past_end", [(None, 10, 0), (None, 12, 1), (13, 20, 1), (8, 12, None)])
def test_static_steps_queued_ahead_decode_the_same(counting_model, eos_id, max_new, past_end):
    """queue_ahead: the same tokens and statistics; a step is queued past the end unless the
    tokens read leave one to make (10 = the prefill's 1 + 2 steps of 4 + 1: the third step surely
    ends it; 12: it may not); at EOS the one after it was queued; EOS from the prefill queues nothing."""
    model, _ = counting_model
    with torch.inference_mode():
        plain = StaticTreeDecoder(model, (1, 1, 1)).generate([5, 6, 7], max_new, eos_id, CLOCK)
        decoder = StaticTreeDecoder(model, (1, 1, 1))
        decoder.queue_ahead = True
        ahead = decoder.generate([5, 6, 7], max_new, eos_id, CLOCK)
    assert ahead.tokens == plain.tokens == greedy(model.base, [5, 6, 7], max_new, eos_id, CLOCK).tokens
    assert ahead.stats.pop("steps_past_end", None) == past_end
    assert ahead.stats == plain.stats and ahead.forward_calls == plain.forward_calls


def test_queue_ahead_falls_back_where_a_queued_step_would_not_fit():
    """A step queued after the last may write past the static cache's slots: then no queueing."""
    model = random_model(gamma=3)
    prompt = [1, 2, 3, 4, 5]
    with torch.inference_mode():
        decoder = StaticTreeDecoder(model, (1, 1, 1), max_len=len(prompt) + 10 - 1)
        decoder.queue_ahead = True
        out = decoder.generate(prompt, 10, None, CLOCK)
    assert not decoder.room_ahead(len(prompt), 10) and decoder.room_ahead(len(prompt), 10 - 3)
    assert out.tokens == greedy(model.base, prompt, 10, None, CLOCK).tokens and "steps_past_end" not in out.stats


@pytest.mark.parametrize("eos_id,max_new,expected", [
    (10, 12, [8, 9, 10]),  # EOS inside the first step's accepted path: kept, then stop
    (None, 6, [8, 9, 10, 11, 12, 13]),  # max_new_tokens reached inside the second step's path
    (None, 1, [8]),  # the prefill's token alone
    (8, 12, [8]),
])
def test_stops_exactly_inside_an_accepted_path(counting_model, eos_id, max_new, expected):
    model, _ = counting_model
    out = Decoder(model, (1, 1, 1)).generate([5, 6, 7], max_new, eos_id, CLOCK)
    assert out.tokens == expected == greedy(model.base, [5, 6, 7], max_new, eos_id, CLOCK).tokens
    assert out.forward_calls == 1 + len(out.stats["accepted_per_step"])
    if len(expected) > 1:
        assert out.stats["accepted_per_step"][-1] >= 2  # the stop fell inside an accepted path


# ---------------------------------------------------------------- checkpoints and the strategy

def test_save_load_round_trip_and_stock_transformers(tmp_path):
    from transformers import GPTNeoForCausalLM

    model = random_model(dtype=torch.float32)
    model.save_pretrained(tmp_path)
    loaded = SpecStreamModel.from_pretrained(tmp_path)
    assert (loaded.gamma, loaded.num_stream_layers) == (model.gamma, model.num_stream_layers)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    ids = torch.randint(0, 40, (1, 10), generator=torch.Generator().manual_seed(6))
    hf = GPTNeoForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids)[0], rtol=1e-4, atol=1e-4)


def test_from_pretrained_needs_stream_parameters(tmp_path):
    random_model().base.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no Speculative Streaming parameters"):
        SpecStreamModel.from_pretrained(tmp_path)


def test_strategy_matches_naive(tmp_path):
    random_model(gamma=4, dtype=torch.float32).save_pretrained(tmp_path)
    ss = get_strategy("ss", dtype="float64", topk="2,1,1,1,1", max_depth=3)
    ss.prepare(tmp_path, "cpu")
    naive = get_strategy("naive", dtype="float64")
    naive.prepare(tmp_path, "cpu")
    assert ss.config() == {"dtype": "float64", "attention_provider": "eager", "runtime": "eager", "gamma": 4,
                           "num_stream_layers": 2, "topk": "2,1,1", "tree_size": 7, "techniques": "ss",
                           "prune": 0.0, "setup_s": 0.0,
                           # all SS adds: γ stream embeddings of the hidden size, here float64
                           "extra_parameters": 4 * ss.model.config.hidden_size,
                           "extra_parameter_bytes": 4 * ss.model.config.hidden_size * 8}
    # the static step that ss+graphs captures, uncaptured ("static" runtime) on CPU
    graphs = get_strategy("ss+graphs", dtype="float64", topk="2,1,1", runtime="static", bucket=16)
    graphs.prepare(tmp_path, "cpu")
    assert graphs.config()["runtime"] == "static" and graphs.config()["graph_bucket"] == 16
    for prompt in ([1, 2, 3], [5] * 12):
        expected = naive.generate(prompt, 25, 7).tokens
        for strategy in (ss, graphs):
            out = strategy.generate(prompt, 25, 7)
            assert out.tokens == expected
            assert out.forward_s > 0 and out.verify_s > 0 and out.ttft_s > 0
            assert len(out.stats["accepted_per_depth"]) == len(out.stats["proposed_per_depth"]) == 3
    assert get_strategy("ss", topk=(1, 1)).topk == (1, 1)
    assert ss.objective == "ss" and get_strategy("ss+half+graphs").objective == "ss"


def test_composed_ss_names():
    assert get_strategy("ss+half").dtype == torch.float16
    assert get_strategy("ss+bf16").dtype == torch.bfloat16
    flash = get_strategy("ss+flash2+graphs")
    assert flash.dtype == torch.float16 and flash.attention_provider == "sdpa_efficient"
    assert get_strategy("ss").dtype == torch.float32
    bad = {"ss+hf": "hf .* combines only with pld or sps", "ss+best": "best is a preset",
           "ss+naive+flash2": "no float32 kernels"}
    for name, why in bad.items():
        with pytest.raises(ValueError, match=why):
            get_strategy(name)
    with pytest.raises(ValueError, match="no fixed shape to capture"):
        get_strategy("ss+graphs", prune=0.1)
    with pytest.raises(ValueError, match="options of graphs"):
        get_strategy("ss+half", runtime="cuda_graph")
