"""Static KV cache + static decode step, FlashAttention band masks, and technique composition.

On CPU: the static-shape decode step (the step `graphs` captures) and the banded flash path (SDPA's
flash backend runs float64 on CPU) are token-identical to plain greedy decoding for random tiny
configs and prompts longer than the window; impossible combinations fail before any work.
On CUDA (skipped elsewhere): captured graphs, torch.compile and flash2 themselves."""

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import GPTNeoConfig

from llmopt.capture import GraphRunner
from llmopt.generation import Clock, greedy
from llmopt.models.attention import Band, eager_attention, flex_attention_kernel
from llmopt.models.gpt_neo import GPTNeo, make_config
from llmopt.models.static_cache import StaticDecoder, StaticKVCache
from llmopt.strategies import STRATEGIES, get_strategy, known_technique, technique_objective, validate_technique

from helpers import load_script, random_prompts, save_tiny_checkpoint

CUDA = torch.cuda.is_available()
VOCAB = 53


def random_model(layers, heads, head_dim, window, seed, dtype, pattern=("global", "local")):
    kinds = [pattern[i % len(pattern)] for i in range(layers)]
    config = GPTNeoConfig(
        vocab_size=VOCAB, hidden_size=heads * head_dim, num_layers=layers, num_heads=heads,
        attention_types=[[[k], 1] for k in kinds], window_size=window, max_position_embeddings=96,
        intermediate_size=None, bos_token_id=0, eos_token_id=0,
    )
    model = GPTNeo.random(config, seed=seed)
    with torch.no_grad():  # large weights: varied, prompt-dependent output
        for p in model.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + p.numel()))
    return model.to(dtype).eval()


def static_greedy(model, prompt, max_new, eos=None, bucket=16, attention=None):
    """Greedy decoding with the static cache and the uncaptured static step (what graphs replays)."""
    decoder = StaticDecoder(model, attention=attention)
    runner = GraphRunner(decoder, "static", bucket)
    with torch.inference_mode():
        cache = model.new_cache()
        ids = model(torch.tensor([prompt]), cache)[:, -1:].argmax(-1)
        tokens = [int(ids)]
        if tokens[-1] == eos:
            return tokens
        length = runner.length_for(len(prompt) + max_new - 1)
        decoder.load(cache, ids)
        while len(tokens) < max_new:
            runner(length)
            tokens.append(int(decoder.token))
            if tokens[-1] == eos:
                break
    return tokens


configs = st.tuples(
    st.integers(1, 4),  # layers
    st.integers(1, 3),  # heads
    st.sampled_from([4, 8]),  # head_dim
    st.integers(2, 9),  # window (shorter than most prompts)
    st.integers(0, 10_000),  # seed
    st.sampled_from([("global", "local"), ("local",), ("local", "global")]),
)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(cfg=configs, dtype=st.sampled_from([torch.float64, torch.float32]), data=st.data())
def test_static_step_equals_naive_greedy(cfg, dtype, data):
    layers, heads, head_dim, window, seed, pattern = cfg
    model = random_model(layers, heads, head_dim, window, seed, dtype, pattern)
    prompt = data.draw(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=30))
    max_new = data.draw(st.integers(1, 40))
    bucket = data.draw(st.sampled_from([7, 16, 96]))
    with torch.inference_mode():
        ref = greedy(model, prompt, max_new, None, Clock("cpu")).tokens
    assert static_greedy(model, prompt, max_new, bucket=bucket) == ref
    eos = ref[len(ref) // 2]
    cut = ref[: ref.index(eos) + 1]
    assert static_greedy(model, prompt, max_new, eos=eos, bucket=bucket) == cut
    for stop, expected in ((None, ref), (eos, cut)):  # each step queued before the last token is read
        assert queued_greedy(model, prompt, max_new, stop, bucket) == expected


def queued_greedy(model, prompt, max_new, eos, bucket):
    """greedy() with the static step of graphs (uncaptured) and queue_ahead, as Fast runs it."""
    decoder = StaticDecoder(model)
    runner = GraphRunner(decoder, "static", bucket)

    def static(cache, ids):
        length = runner.length_for(len(prompt) + max_new - 1)
        decoder.load(cache, ids)
        return lambda: (runner(length), decoder.token)[1]
    with torch.inference_mode():
        return greedy(model, prompt, max_new, eos, Clock("cpu"), static=static, queue_ahead=True).tokens


def test_static_cache_holds_the_dynamic_cache():
    """After prefill + steps, the static slots 0..pos-1 equal plain decoding's cache."""
    model = random_model(3, 2, 8, 4, 1, torch.float64)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    decoder = StaticDecoder(model)
    with torch.inference_mode():
        cache = model.new_cache()
        ids = model(torch.tensor([prompt]), cache)[:, -1:].argmax(-1)
        decoder.load(cache, ids)
        ref = cache
        for _ in range(5):
            ids = model(ids, ref)[:, -1:].argmax(-1)
            out = decoder.step(32)
            assert int(out) == int(ids)
    n = len(ref)
    assert int(decoder.cache.pos) == n
    for layer in range(3):
        k, v = decoder.cache.view(layer, n)
        torch.testing.assert_close(k, ref.keys[layer], rtol=0, atol=1e-12)
        torch.testing.assert_close(v, ref.values[layer], rtol=0, atol=1e-12)


def test_static_cache_layouts_agree():
    model = random_model(2, 2, 4, 4, 3, torch.float64)
    a, b = StaticKVCache(model, 8, "bhld"), StaticKVCache(model, 8, "blhd")
    k = torch.randn(1, 2, 1, 4, dtype=torch.float64)
    for cache in (a, b):
        cache.pos.fill_(5)
        cache.length = 6
        kv = cache.append(0, k, 2 * k)
        assert kv[0].shape == (1, 2, 6, 4)
        torch.testing.assert_close(kv[0][:, :, 5:6], k)
        torch.testing.assert_close(kv[1][:, :, 5:6], 2 * k)
    with pytest.raises(ValueError, match="no room"):
        a.load(type("C", (), {"__len__": lambda self: 8, "keys": [], "values": []})())


def test_band_masks_match_boolean_masks():
    model = random_model(2, 1, 4, 5, 0, torch.float32)
    for past, new in [(0, 1), (0, 12), (7, 1), (20, 1), (3, 4)]:
        dense = model.masks(past, torch.arange(past, past + new))
        bands = model.band_masks(past, new)
        for kind in ("global", "local"):
            expected = dense[kind]
            if expected is None:
                expected = torch.ones(new, past + new, dtype=torch.bool)
            assert torch.equal(bands[kind].dense(new, past + new, "cpu"), expected), (past, new, kind)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_kernel_equals_eager_attention():
    """FlexAttention with a mask tensor of any shape (its tiles of 128 need not divide it): the
    reference's output, float64 on the CPU, for a decode row, a tree's rows and no mask."""
    gen = torch.Generator().manual_seed(0)
    for queries, keys in [(1, 5), (7, 130), (75, 256)]:
        q, k, v = (torch.randn(1, 3, n, 8, generator=gen, dtype=torch.float64) for n in (queries, keys, keys))
        mask = torch.rand(queries, keys, generator=gen) < 0.6
        mask[:, -1] = True  # every row sees a key, as a tree row sees itself
        for m in (mask, None):
            assert torch.allclose(flex_attention_kernel(q, k, v, m), eager_attention(q, k, v, m), atol=1e-12)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(cfg=configs, data=st.data())
def test_sdpa_flash_path_is_exact(cfg, data):
    """The banded SDPA-flash path (flash backend forced; it runs float64 on CPU): slicing the last
    `window` keys in decode, is_causal for prefill, exact fallback for long local prefills."""
    layers, heads, head_dim, window, seed, pattern = cfg
    model = random_model(layers, heads, head_dim, window, seed, torch.float64, pattern)
    prompt = data.draw(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=30))
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        ref_cache, cache = model.new_cache(), model.new_cache()
        ref = model(ids, ref_cache)
        model.set_attention("sdpa_flash")
        try:
            got = model.forward_banded(ids, cache)
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
            for _ in range(12):  # decode steps past the window
                nxt = ref[:, -1:].argmax(-1)
                model.set_attention("eager")
                ref = model(nxt, ref_cache)
                model.set_attention("sdpa_flash")
                got = model.forward_banded(nxt, cache)
                torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
        finally:
            model.set_attention("eager")


def test_flash_attention_refuses_mask_tensors():
    from llmopt.models.attention import ATTENTION

    q = torch.zeros(1, 1, 2, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="no mask tensor"):
        ATTENTION["sdpa_flash"](q, q, q, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="static-shape decode"):
        StaticDecoder(random_model(1, 1, 4, 4, 0, torch.float32), attention="sdpa_flash")


# -- strategies and composition --------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    save_tiny_checkpoint(path, VOCAB, window_size=8, max_position_embeddings=128)
    return path


def prompts(n=6, seed=0):
    return random_prompts(n, VOCAB, 40, seed)


def run(name, checkpoint, device="cpu", max_new=40, eos=None, **options):
    strategy = get_strategy(name, **options)
    strategy.prepare(checkpoint, device)
    return strategy, [strategy.generate(p, max_new, eos) for p in prompts()]


@pytest.mark.parametrize("name,dtype", [("bf16", "bfloat16"), ("naive+graphs", "float32")])
def test_composed_eager_decode_equals_naive(checkpoint, name, dtype):
    """The composed strategies' own decode loop (no graphs: the path flash2 takes on a GPU) feeds
    each step the token the previous one chose."""
    options = {"runtime": "static"} if "graphs" in name else {}
    _, ref = run("naive", checkpoint, dtype=dtype)
    _, got = run(name, checkpoint, **options)
    assert [g.tokens for g in got] == [g.tokens for g in ref]
    assert len({t for g in got for t in g.tokens}) > 2  # not one token repeated


@pytest.mark.parametrize("queue_ahead", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_graphs_strategy_static_runtime_equals_naive(checkpoint, dtype, queue_ahead):
    """queue_ahead: every step's token copied out before the next step overwrites it, the step
    queued past EOS dropped, max_new_tokens kept (1 and 2: the prefill alone, one queued step)."""
    options = {"runtime": "static", "queue_ahead": queue_ahead}
    _, ref = run("naive", checkpoint, dtype=dtype)
    strategy, got = run("graphs", checkpoint, dtype=dtype, bucket=32, **options)
    assert [g.tokens for g in got] == [g.tokens for g in ref]
    assert strategy.config()["runtime"] == "static" and strategy.attention_provider == "eager"
    assert strategy.config()["queue_ahead"] is queue_ahead
    for g in got:
        assert g.forward_calls == len(g.tokens) and g.ttft_s > 0 and g.forward_s > 0
    eos = ref[0].tokens[7]
    _, ref_eos = run("naive", checkpoint, dtype=dtype, eos=eos)
    _, got_eos = run("graphs", checkpoint, dtype=dtype, eos=eos, **options)
    assert [g.tokens for g in got_eos] == [g.tokens for g in ref_eos]
    assert any(len(g.tokens) < 40 for g in got_eos)  # EOS came inside a run of queued steps
    if queue_ahead:
        assert [g.stats.get("steps_past_end", 0) for g in got_eos] == [int(1 < len(g.tokens) < 40) for g in got_eos]  # not where the prefill's token was EOS
    for max_new in (1, 2):
        _, few = run("graphs", checkpoint, dtype=dtype, max_new=max_new, **options)
        assert [g.tokens for g in few] == [g.tokens[:max_new] for g in ref]


def test_queue_ahead_needs_graphs():
    for name in ("bf16", "ss+half", "medusa"):
        with pytest.raises(ValueError, match="queue_ahead is an option of graphs"):
            get_strategy(name, queue_ahead=True)
    assert get_strategy("ss+graphs", queue_ahead=True).queue_ahead and get_strategy("medusa+graphs", queue_ahead=True).queue_ahead
    with pytest.raises(ValueError, match="true or false"):
        get_strategy("graphs", queue_ahead="yes")


def test_composed_names_validate_and_fail_early():
    for name in ["naive", "half", "hf", "ss", "flash2", "graphs", "best", "bf16", "half+graphs", "bf16+graphs",
                 "flash2+graphs", "half+flash2", "bf16+flash2+graphs", "naive+graphs"]:
        assert known_technique(name), name
        validate_technique(name)
    assert get_strategy("flash2+graphs").name == "flash2+graphs"
    assert get_strategy("bf16+flash2").dtype == torch.bfloat16
    assert get_strategy("half+graphs", dtype="bfloat16").dtype == torch.bfloat16
    assert get_strategy("flash2").dtype == torch.float16
    assert technique_objective("ss") == "ss" and technique_objective("half+graphs") == "lm"
    bad = {
        "hf+graphs": "hf .* combines only with pld or sps", "hf+pld+half": "combines only with pld or sps",
        "graphs+graphs": "more than once",
        "naive+flash2": "no float32 kernels",
        "naive+half": "conflicting precisions",
        "best+graphs": "best is a preset",
        "half+warp": "unknown technique 'warp'",
        "warp": "unknown technique 'warp'",
        "": "unknown technique|empty",
    }
    for name, why in bad.items():
        assert not known_technique(name)
        with pytest.raises(ValueError, match=why):
            get_strategy(name)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        get_strategy("flash2", dtype="float32")
    with pytest.raises(ValueError, match="bf16 means bfloat16"):
        get_strategy("bf16+graphs", dtype="float16")
    with pytest.raises(ValueError, match="option of flash2"):
        get_strategy("half+graphs", provider="flash_attn")
    with pytest.raises(ValueError, match="options of graphs"):
        get_strategy("flash2", runtime="torch.compile")
    with pytest.raises(ValueError, match="unknown graphs runtime"):
        get_strategy("graphs", runtime="tensorrt")
    assert {"flash2", "graphs", "best"} <= set(STRATEGIES)


@pytest.mark.skipif(CUDA, reason="checks the CPU refusal")
def test_gpu_techniques_refuse_cpu(checkpoint):
    for name in ("flash2", "graphs", "half+graphs", "flash2+graphs", "best"):
        strategy = get_strategy(name)
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            strategy.prepare(checkpoint, "cpu")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        get_strategy("graphs", runtime="torch.compile").prepare(checkpoint, "cpu")


# -- CUDA only --------------------------------------------------------------------------------------

gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@gpu
@pytest.mark.parametrize("runtime", ["cuda_graph", "torch.compile"])
@pytest.mark.parametrize("name", ["graphs", "pld+graphs", "sps+graphs"])
def test_graphs_on_cuda_equal_naive(checkpoint, name, runtime):
    _, ref = run("naive", checkpoint, "cuda")
    drafting = {"draft": checkpoint, "k": 3} if name.startswith("sps") else {}  # the target drafts for itself
    strategy, got = run(name, checkpoint, "cuda", runtime=runtime, bucket=64, **drafting)
    assert [g.tokens for g in got] == [g.tokens for g in ref]
    assert strategy.runtime == runtime and strategy.setup_s > 0


@gpu
def test_the_max_autotune_runtime_on_cuda_equals_naive(checkpoint):
    """gpt-fast's compilation (coordinate-descent tuning, under which inductor makes each one-row
    product a reduction of its own, the biases added apart: gpt_neo.Linear): fp32 `graphs` still
    emits naive's tokens."""
    _, ref = run("naive", checkpoint, "cuda")
    strategy, got = run("graphs", checkpoint, "cuda", runtime="torch.compile:max-autotune", bucket=64)
    assert [g.tokens for g in got] == [g.tokens for g in ref]
    assert strategy.runtime == "torch.compile:max-autotune"


@gpu
@pytest.mark.parametrize("runtime", ["cuda_graph", "torch.compile"])
def test_queue_ahead_on_cuda_equals_naive(checkpoint, runtime):
    """The pinned copy behind each replay reads the step's token before the next replay rewrites it."""
    _, ref = run("naive", checkpoint, "cuda")
    eos = ref[0].tokens[7]
    for eos_id in (None, eos):
        _, plain = run("naive", checkpoint, "cuda", eos=eos_id)
        _, got = run("graphs", checkpoint, "cuda", eos=eos_id, runtime=runtime, bucket=64, queue_ahead=True)
        assert [g.tokens for g in got] == [g.tokens for g in plain]


@gpu
def test_half_graphs_on_cuda_agree_with_half(checkpoint):
    _, ref = run("half", checkpoint, "cuda")
    strategy, got = run("half+graphs", checkpoint, "cuda", bucket=64)
    same = sum(a.tokens == b.tokens for a, b in zip(got, ref))
    assert same >= len(ref) - 1 and strategy.runtime == "cuda_graph"


@gpu
@pytest.mark.parametrize("name", ["flash2", "flash2+graphs", "bf16+flash2"])
def test_flash2_on_cuda_runs_and_records_provider(checkpoint, name):
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("FlashAttention-2 needs compute capability 8.0+")
    strategy, got = run(name, checkpoint, "cuda")
    assert strategy.attention_provider.split("+")[0] in ("flash_attn", "sdpa_flash")
    assert strategy.config()["attention_provider"] == strategy.attention_provider
    _, ref = run("half" if strategy.dtype == torch.float16 else "bf16", checkpoint, "cuda")
    same = sum(a.tokens[:8] == b.tokens[:8] for a, b in zip(got, ref))
    assert same >= len(ref) // 2


@gpu
def test_pld_half_graphs_on_cuda_agree_with_half(checkpoint):
    _, half = run("half", checkpoint, "cuda")
    _, composed = run("pld+half+graphs", checkpoint, "cuda", bucket=64)
    assert sum(a.tokens == b.tokens for a, b in zip(composed, half)) >= len(half) - 1


@gpu
@pytest.mark.parametrize("runtime", ["cuda_graph", "torch.compile"])
def test_medusa_graphs_on_cuda_equal_naive(checkpoint, tmp_path, runtime):
    from llmopt.spec_stream.medusa import MedusaModel

    MedusaModel.random(GPTNeo.from_pretrained(checkpoint), 3, seed=2, std=0.5).save_pretrained(tmp_path)
    _, ref = run("naive", checkpoint, "cuda")
    strategy, got = run("medusa+graphs", checkpoint, "cuda", heads=tmp_path, runtime=runtime, bucket=64)
    assert [g.tokens for g in got] == [g.tokens for g in ref]
    assert strategy.runtime == runtime and strategy.setup_s > 0
    _, queued = run("medusa+graphs", checkpoint, "cuda", heads=tmp_path, runtime=runtime, bucket=64, queue_ahead=True)
    assert [g.tokens for g in queued] == [g.tokens for g in ref]


@pytest.fixture(scope="module")
def ss_checkpoint(tmp_path_factory):
    from llmopt.spec_stream import SpecStreamModel

    path = tmp_path_factory.mktemp("tiny_ss")
    config = make_config("tiny", vocab_size=VOCAB, window_size=8, max_position_embeddings=128)
    SpecStreamModel.random(config, gamma=3, num_stream_layers=1, seed=0).save_pretrained(path)
    return path


@gpu
@pytest.mark.parametrize("queue_ahead", [False, True])
@pytest.mark.parametrize("runtime", ["cuda_graph", "torch.compile"])
def test_ss_graphs_on_cuda_equal_naive(ss_checkpoint, runtime, queue_ahead):
    """queue_ahead: each verdict copied out behind its replay, before the next replay rewrites it."""
    _, ref = run("naive", ss_checkpoint, "cuda")
    strategy, got = run("ss+graphs", ss_checkpoint, "cuda", topk="2,1,1", runtime=runtime, bucket=64,
                        queue_ahead=queue_ahead)
    assert [g.tokens for g in got] == [g.tokens for g in ref]
    assert strategy.runtime == runtime and strategy.setup_s > 0
    assert all(("steps_past_end" in g.stats) is queue_ahead for g in got)


@gpu
@pytest.mark.parametrize("name", ["ss+half", "ss+flash2", "ss+flash2+graphs"])
def test_composed_ss_on_cuda_agree_with_half(ss_checkpoint, name):
    strategy, got = run(name, ss_checkpoint, "cuda", topk="2,1,1")
    _, ref = run("half", ss_checkpoint, "cuda")
    same = sum(a.tokens[:8] == b.tokens[:8] for a, b in zip(got, ref))
    assert same >= len(ref) // 2 and strategy.dtype == torch.float16


def test_decode_kernel_is_an_option_of_the_captured_flash2_steps():
    assert get_strategy("ss+flash2+graphs").decode_attention == "sdpa_cudnn"  # the default, measured fastest
    assert get_strategy("ss+flash2").decode_attention == "sdpa_efficient"  # uncaptured: the masked kernel
    flex = get_strategy("ss+flash2+graphs", decode_kernel="flex")
    assert flex.decode_attention == "flex" and flex.attention_provider == "sdpa_efficient"  # the prefill's
    assert get_strategy("flash2+graphs", decode_kernel="sdpa_cudnn").decode_kernel == "sdpa_cudnn"
    for name in ("ss+flash2", "ss+half+graphs", "flash2", "half+graphs"):
        with pytest.raises(ValueError, match="it needs flash2 and graphs"):
            get_strategy(name, decode_kernel="flex")
    assert get_strategy("ss+flash2+graphs", decode_kernel="eager").decode_attention == "eager"
    for name in ("ss+flash2+graphs", "flash2+graphs"):
        with pytest.raises(ValueError, match="unknown decode_kernel 'sdpa_flash'; known: sdpa_cudnn, sdpa_efficient, eager, flex"):
            get_strategy(name, decode_kernel="sdpa_flash")


def test_a_plain_static_step_on_an_additive_mask_kernel_converts_its_masks_once_a_step():
    """sdpa_cudnn reads an additive mask: the plain captured step makes it per layer kind, as the
    tree step does, so no layer converts a boolean mask again (attention_bench: 15.5 against 8.5 µs)."""
    model = GPTNeo.random(make_config("tiny", vocab_size=VOCAB, window_size=8, max_position_embeddings=64))
    boolean = StaticDecoder(model, 32, attention="eager").masks(16)
    additive = StaticDecoder(model, 32, attention="sdpa_cudnn").masks(16)
    for kind, mask in boolean.items():
        assert additive[kind].dtype == model.lm_head.weight.dtype
        assert torch.equal(additive[kind] == 0, mask) and torch.isinf(additive[kind][~mask]).all()


@gpu
@pytest.mark.parametrize("name, kernel, runtime", [
    ("ss+flash2+graphs", "flex", "cuda_graph"), ("ss+flash2+graphs", "flex", "torch.compile"),
    ("ss+flash2+graphs", "eager", "cuda_graph"), ("ss+flash2+graphs", "sdpa_cudnn", "cuda_graph"),
    ("ss+flash2+graphs", "sdpa_cudnn", "torch.compile"), ("flash2+graphs", "sdpa_cudnn", "cuda_graph"),
    ("flash2+graphs", "sdpa_cudnn", "torch.compile"), ("flash2+graphs", "eager", "cuda_graph")])
def test_decode_kernels_on_cuda_agree_with_the_memory_efficient_kernel(ss_checkpoint, name, kernel, runtime):
    """`best` and `flash2+graphs` with each kernel in their captured step (FlexAttention, eager
    attention, cuDNN's, the default): the memory-efficient kernel's tokens, but for fp16 rounding on
    some prompts."""
    options = {"topk": "2,1,1"} if name.startswith("ss") else {}
    _, ref = run(name, ss_checkpoint, "cuda", bucket=64, decode_kernel="sdpa_efficient", **options)
    strategy, got = run(name, ss_checkpoint, "cuda", bucket=64, runtime=runtime, decode_kernel=kernel, **options)
    same = sum(a.tokens[:8] == b.tokens[:8] for a, b in zip(got, ref))
    assert same >= len(ref) // 2 and strategy.config()["decode_attention"] == kernel


def test_attention_bench_times_every_tree_kernel_and_checks_it(tmp_path):
    """scripts/attention_bench.py on the CPU (float32, host-timed): every kernel a tree step may
    take is run and checked against float64 eager attention; the CUDA-only variants say why not."""
    out = tmp_path / "attention.json"
    assert load_script("attention_bench").main(["--rows", "3", "--keys", "32", "--heads", "2", "--head-dim", "8",
                                                "--dtype", "float32", "--calls", "1", "--repeats", "1",
                                                "--device", "cpu", "--json", str(out)]) == 0
    rows = {r["kernel"]: r for r in json.loads(out.read_text())["rows"]}
    for name in ("eager", "sdpa", "flex"):
        assert rows[name]["max_abs_error"] < 1e-5 and len(rows[name]["us_per_call"]) == 1
    assert "No viable backend" in rows["sdpa_cudnn, float mask"]["error"]  # CUDA only


def test_ss_graphs_pads_its_rows_on_request(ss_checkpoint):
    """pad_rows reaches the tree step (static runtime on CPU: naive's tokens); an option of graphs only."""
    _, ref = run("naive", ss_checkpoint)
    strategy, got = run("ss+graphs", ss_checkpoint, topk="2,1,1", runtime="static", pad_rows=16)
    assert [g.tokens for g in got] == [g.tokens for g in ref]
    assert strategy.decoder.nodes == 16 and strategy.config()["pad_rows"] == 16
    assert get_strategy("ss+graphs").pad_rows == 1  # off by default
    with pytest.raises(ValueError, match="pad_rows pads the static tree step of graphs"):
        get_strategy("ss", pad_rows=8)
    with pytest.raises(ValueError, match="must be >= 1"):
        get_strategy("ss+graphs", pad_rows=0)
