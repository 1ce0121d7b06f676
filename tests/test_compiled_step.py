"""The static decode steps under torch.compile (capture.py's "torch.compile" runtime), on the CPU.

The plain step (models/static_cache.py), Speculative Streaming's tree step (spec_stream/static.py,
unpadded and padded), Medusa's tree step (spec_stream/medusa.py), prompt lookup's chain step
(spec_stream/static_chain.py) and the draft model's draft-and-verify step (spec_stream/draft_model.py)
each compile to one graph (fullgraph=True) per bucket during setup and never
again while decoding; every tensor they read has a static address and no two share storage (what
mode="reduce-overhead" needs to keep a step in one CUDA graph without copying inputs in at each
replay); inductor writes the KV cache in place, not by copying a layer; and the compiled steps emit
plain greedy decoding's tokens in float32. Most tests trace with backend="aot_eager" (the same graph,
no code generation: seconds on two cores); one per step runs inductor. What only a GPU shows (CUDA
graphs under reduce-overhead, and speed) is left to test_fastpaths' CUDA tests and size_sweep.py.
"""

import re

import pytest
import torch
from torch._inductor.utils import run_and_get_code

from llmopt.capture import GraphRunner
from llmopt.generation import Clock, greedy
from llmopt.models.gpt_neo import GPTNeo, make_config
from llmopt.models.static_cache import StaticDecoder
from llmopt.spec_stream import SpecStreamModel
from llmopt.spec_stream.draft_model import StaticDraftModelDecoder
from llmopt.spec_stream.lookup import StaticLookupDecoder
from llmopt.spec_stream.medusa import MedusaModel, StaticMedusaDecoder
from llmopt.spec_stream.static import StaticTreeDecoder

CLOCK = Clock("cpu")
VOCAB = 53
# varied, prompt-dependent output: fp32 greedy without near-ties on a tiny model
CONFIG = make_config("tiny", vocab_size=VOCAB, window_size=8, max_position_embeddings=128, initializer_range=0.3)
PROMPTS = [[5, 3, 9, 1, 7], list(range(2, 14)), [4, 8, 15, 16, 23, 42, 8, 4, 1, 0, 33, 7, 2, 9, 11, 30, 6, 5, 1]]


class Recorder:
    """A torch.compile backend that keeps each graph's inputs and hands the graph on to `backend`."""

    def __init__(self, backend: str = "aot_eager"):
        self.backend = torch._dynamo.lookup_backend(backend)
        self.inputs: list[list] = []

    def __call__(self, gm, example_inputs):
        self.inputs.append(list(example_inputs))
        return self.backend(gm, example_inputs)

    @property
    def graphs(self) -> int:
        return len(self.inputs)

    def assert_static_inputs(self) -> None:
        """Every tensor input is marked static (a weight, or in the decoder's static_tensors) and
        none shares storage with another (a mutated alias makes reduce-overhead skip CUDA graphs)."""
        for inputs in self.inputs:
            tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
            loose = [tuple(x.shape) for x in tensors if getattr(x, "_dynamo_static_input_type", None) is None]
            assert not loose, f"graph inputs without a static address: {loose}"
            storages = [x.untyped_storage().data_ptr() for x in tensors]
            assert len(set(storages)) == len(storages), "graph inputs share storage"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compiled specialisations of `step` are per code object, shared by every decoder: start empty."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def lm():
    return GPTNeo.random(CONFIG, seed=0).eval().fuse_qkv()


def decode_static(model, decoder, runner, prompt, max_new):
    """Plain greedy through the runner's compiled step, as Fast.generate runs it."""
    def static(cache, ids):
        length = runner.length_for(len(prompt) + max_new - 1)
        decoder.load(cache, ids)

        def step():
            runner(length)
            return decoder.token
        return step
    return greedy(model, prompt, max_new, None, CLOCK, static=static).tokens


@torch.inference_mode()
def test_static_step_compiles_once_per_bucket_and_decodes_like_greedy():
    model = lm()
    decoder = StaticDecoder(model, 48)
    recorder = Recorder()
    runner = GraphRunner(decoder, "torch.compile", 16, backend=recorder)
    assert runner.lengths == [16, 32, 48] and recorder.graphs == 3  # one graph per bucket, in setup
    used = set()
    for prompt, max_new in zip(PROMPTS, (8, 20, 25)):  # one generation per bucket, 50 steps in all
        used.add(runner.length_for(len(prompt) + max_new - 1))
        tokens = decode_static(model, decoder, runner, prompt, max_new)
        assert tokens == greedy(model, prompt, max_new, None, CLOCK).tokens
        assert len(set(tokens)) > 2
    assert used == {16, 32, 48} and recorder.graphs == 3  # no recompile while decoding
    recorder.assert_static_inputs()
    with pytest.raises(RuntimeError, match="recompile"):  # a recompile while decoding fails loudly
        runner(24)


@torch.inference_mode()
def test_the_max_autotune_runtime_compiles_the_same_step_with_gpt_fasts_tuning(monkeypatch):
    """"torch.compile:max-autotune": one graph per bucket, greedy's tokens; on CUDA inductor's
    max-autotune mode, and coordinate-descent tuning while compiling (and only then)."""
    import torch._inductor.config as inductor_config

    from llmopt import capture

    assert capture.capture_options("torch.compile:max-autotune")[0] == "torch.compile:max-autotune"
    model = lm()
    decoder = StaticDecoder(model, 32)
    recorder = Recorder()
    runner = GraphRunner(decoder, "torch.compile:max-autotune", 16, backend=recorder)
    assert recorder.graphs == 2
    prompt, max_new = PROMPTS[1], 12
    assert decode_static(model, decoder, runner, prompt, max_new) == greedy(model, prompt, max_new, None, CLOCK).tokens
    assert recorder.graphs == 2
    before = inductor_config.coordinate_descent_tuning
    with capture.tuned(True):
        assert inductor_config.coordinate_descent_tuning is True
    assert inductor_config.coordinate_descent_tuning == before
    assert capture.COMPILE_MODES["torch.compile:max-autotune"] == "max-autotune"


@torch.inference_mode()
def test_a_compiled_step_adds_biases_apart_so_inductor_can_tune_its_matrix_vector_products():
    """Traced, every biased projection is a bias-free linear and an add (inductor decomposes such a
    one-row product under coordinate-descent tuning; addmm it leaves to cuBLAS), with the same
    result; eager, the one biased linear stays."""
    model = lm()
    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    block = model.transformer.h[0]
    x = torch.randn(1, 1, CONFIG.hidden_size)
    mask = torch.ones(1, 1, dtype=torch.bool)
    traced = torch.compile(block, backend=keep, fullgraph=True)(x, mask, model.attend)
    torch.testing.assert_close(traced, block(x, mask, model.attend))
    linears = [n for n in graphs[0].graph.nodes if n.target is torch._C._nn.linear]
    biased = [n for n in linears if len(n.args) > 2 or n.kwargs.get("bias") is not None]
    assert len(linears) == 4 and not biased  # fused qkv (no bias), out_proj, c_fc, c_proj


def cache_loop_bounds(code: str) -> list[int]:
    """The trip counts of the generated C++ loops (inductor's CPU code)."""
    return [int(n) for n in re.findall(r"for\(int64_t x\d+=static_cast<int64_t>\(0L\); x\d+<static_cast<int64_t>\((\d+)L\)", code)]


@torch.inference_mode()
def test_inductor_step_writes_the_cache_in_place_and_decodes_like_greedy():
    """One bucket of 32 slots in a cache of 1000: no generated loop is as long as a layer's keys
    (heads x 1000 x head_dim), which a copy-out-and-back of the layer would need."""
    model = lm()
    decoder = StaticDecoder(model, 1000)
    recorder = Recorder("inductor")
    # GraphRunner would compile all 32 buckets of the 1000 slots: compile the one bucket directly
    for t in decoder.static_tensors():
        torch._dynamo.mark_static_address(t)
    step = torch.compile(decoder.step, backend=recorder, fullgraph=True, dynamic=False)
    prompt, max_new = PROMPTS[2], 12
    cache = model.new_cache()
    ids = model(torch.tensor([prompt]), cache)[:, -1:].argmax(-1)
    decoder.load(cache, ids)
    _, (code, *_) = run_and_get_code(step, 32)
    tokens = [int(ids), int(decoder.token)]
    for _ in range(max_new - 2):
        tokens.append(int(step(32)))
    assert tokens == greedy(model, prompt, max_new, None, CLOCK).tokens and recorder.graphs == 1
    bounds = cache_loop_bounds(code)
    layer = decoder.cache.kv[0, 0].numel()
    assert bounds and max(bounds) < layer, (max(bounds), layer)


def ss_model():
    return SpecStreamModel.random(CONFIG, gamma=3, num_stream_layers=2, seed=0).eval()


def assert_tree_decodes_like_greedy(model, decoder):
    for prompt, max_new in zip(PROMPTS, (8, 30, 40)):
        out = decoder.generate(prompt, max_new, None, CLOCK)
        assert out.tokens == greedy(model.base, prompt, max_new, None, CLOCK).tokens
        assert out.forward_calls < max_new  # drafts were accepted: the tree step did the work


@pytest.mark.parametrize("pad_rows", [1, 16])
@torch.inference_mode()
def test_tree_step_compiles_once_per_bucket_and_decodes_like_greedy(pad_rows):
    model = ss_model()
    model.base.fuse_qkv()
    decoder = StaticTreeDecoder(model, (2, 2, 1), max_len=64, pad_rows=pad_rows)
    assert decoder.nodes % pad_rows == 0 and decoder.nodes >= decoder.tree.size == 11
    recorder = Recorder()
    decoder.runner = GraphRunner(decoder, "torch.compile", 40, backend=recorder)
    buckets = len(decoder.runner.lengths)
    assert buckets >= 2 and recorder.graphs == buckets
    assert_tree_decodes_like_greedy(model, decoder)
    assert recorder.graphs == buckets  # no recompile while decoding
    recorder.assert_static_inputs()


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@torch.inference_mode()
def test_flex_tree_step_decodes_like_greedy_as_is_and_compiled():
    """The tree step on FlexAttention (`decode_kernel="flex"` of best): greedy's tokens run as is
    (flex's reference on the CPU) and traced into the compiled step, one graph per bucket; the
    prefill keeps the model's kernel."""
    model = ss_model()
    model.base.fuse_qkv()
    for runtime in ("static", "torch.compile"):
        decoder = StaticTreeDecoder(model, (2, 2, 1), max_len=64, attention="flex")
        recorder = Recorder()
        decoder.runner = GraphRunner(decoder, runtime, 40, backend=recorder)
        assert_tree_decodes_like_greedy(model, decoder)
        assert recorder.graphs == (len(decoder.runner.lengths) if runtime != "static" else 0)
    assert decoder.attention == "flex" and model.base.attention == "eager"
    with pytest.raises(ValueError, match="needs an attention kernel that takes a mask"):
        StaticTreeDecoder(model, (2, 2, 1), max_len=64, attention="flash_attn")


@torch.inference_mode()
def test_a_tree_step_on_an_additive_mask_kernel_converts_each_kinds_mask_once():
    """`sdpa_cudnn` reads additive masks: the step's masks are the boolean ones made additive, one
    per layer kind (the kernel itself needs CUDA)."""
    model = ss_model()
    plain, additive = (StaticTreeDecoder(model, (2, 2, 1), max_len=64, attention=a) for a in ("eager", "sdpa_cudnn"))
    for decoder in (plain, additive):
        decoder.cache.pos.fill_(9)
        decoder.begin_step(40)
    want, got = plain.masks(40), additive.masks(40)
    assert got.keys() == want.keys()
    for kind, mask in want.items():
        assert got[kind].dtype == torch.float32 and torch.equal(got[kind] == 0, mask)


@torch.inference_mode()
def test_inductor_tree_step_decodes_like_greedy():
    """The padded tree step through inductor (one bucket): greedy's tokens in float32."""
    model = ss_model()
    model.base.fuse_qkv()
    decoder = StaticTreeDecoder(model, (2, 2, 1), max_len=64, pad_rows=8)
    recorder = Recorder("inductor")
    decoder.runner = GraphRunner(decoder, "torch.compile", 10_000, backend=recorder, warmup=1)
    assert recorder.graphs == 1
    assert_tree_decodes_like_greedy(model, decoder)
    assert recorder.graphs == 1


@torch.inference_mode()
def test_chain_step_compiles_once_per_bucket_and_decodes_like_greedy():
    """pld+graphs' step: drafts of every length (padding rows included) through one graph per bucket."""
    model = lm()
    decoder = StaticLookupDecoder(model, num_draft=6, max_len=64)
    recorder = Recorder()
    decoder.runner = GraphRunner(decoder, "torch.compile", 40, backend=recorder)
    buckets = len(decoder.runner.lengths)
    assert buckets >= 2 and recorder.graphs == buckets
    accepted = 0
    for prompt, max_new in zip(PROMPTS + [[7, 1, 4, 2] * 5], (8, 30, 40, 40)):
        out = decoder.generate(prompt, max_new, None, CLOCK)
        assert out.tokens == greedy(model, prompt, max_new, None, CLOCK).tokens
        accepted += sum(out.stats["accepted_per_step"])
    assert accepted > 0  # some drafts were right: the chain step did the work
    assert recorder.graphs == buckets  # no recompile while decoding
    recorder.assert_static_inputs()


@torch.inference_mode()
def test_medusa_tree_step_compiles_once_per_bucket_and_decodes_like_greedy():
    base = lm()
    model = MedusaModel.from_base(base, 3).eval()  # fresh heads: each guesses the next token
    decoder = StaticMedusaDecoder(model, (2, 2, 1), max_len=64)
    recorder = Recorder()
    decoder.runner = GraphRunner(decoder, "torch.compile", 40, backend=recorder)
    buckets = len(decoder.runner.lengths)
    assert buckets >= 2 and recorder.graphs == buckets
    for prompt, max_new in zip(PROMPTS + [[7, 1, 4, 2] * 5], (8, 30, 40, 40)):
        out = decoder.generate(prompt, max_new, None, CLOCK)
        assert out.tokens == greedy(base, prompt, max_new, None, CLOCK).tokens
    assert recorder.graphs == buckets  # no recompile while decoding
    recorder.assert_static_inputs()


@torch.inference_mode()
def test_draft_model_step_compiles_once_per_bucket_and_decodes_like_greedy():
    """sps+graphs' step: k draft-model forwards and the target's chain verification in one graph."""
    target = lm()
    draft = GPTNeo.random(make_config("tiny", vocab_size=VOCAB, num_layers=1, window_size=4,
                                      max_position_embeddings=128, initializer_range=0.3), seed=1).eval().fuse_qkv()
    decoder = StaticDraftModelDecoder(target, target, 4, max_len=64)  # the target drafting for itself: all accepted
    recorder = Recorder()
    decoder.runner = GraphRunner(decoder, "torch.compile", 40, backend=recorder)
    buckets = len(decoder.runner.lengths)
    for prompt, max_new in zip(PROMPTS, (8, 30, 40)):
        out = decoder.generate(prompt, max_new, None, CLOCK)
        assert out.tokens == greedy(target, prompt, max_new, None, CLOCK).tokens
        assert out.forward_calls <= 1 + -(-(max_new - 1) // 5)  # k + 1 tokens a step
    other = StaticDraftModelDecoder(target, draft, 3, max_len=64)
    other.runner = GraphRunner(other, "torch.compile", 40, backend=recorder)
    for prompt, max_new in zip(PROMPTS, (8, 30, 40)):
        assert other.generate(prompt, max_new, None, CLOCK).tokens == greedy(target, prompt, max_new, None, CLOCK).tokens
    assert recorder.graphs == 2 * buckets  # no recompile while decoding
    recorder.assert_static_inputs()
