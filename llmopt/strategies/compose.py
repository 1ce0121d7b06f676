"""Composed techniques: a name like `half+graphs`, `flash2+graphs` or `bf16+flash2` picks a precision,
an attention provider and a decode runtime; impossible combinations fail here, before any work.

Techniques and what each adds:
  naive   fp32 (any dtype by option), eager attention, dynamic cache, one forward per token
  half    float16 (bfloat16 by option); bf16: bfloat16
  flash2  FlashAttention-2 kernels (fp16/bf16, CUDA): the `flash_attn` package if importable, else
          SDPA with the FLASH_ATTENTION backend forced (option provider="flash_attn"|"sdpa_flash")
  graphs  static KV cache, decode step captured once (option runtime="cuda_graph"|"torch.compile"),
          one fused query/key/value projection
  ss      Speculative Streaming (strategies/ss.py): composes with a precision, flash2 and graphs;
          its tree masks are arbitrary, so with flash2 its attention is SDPA's memory-efficient
          kernel (the fused kernel that takes a mask), and with graphs the whole verify-and-draft
          step is captured (spec_stream/static.py)
  best    a preset: the fastest composition measured, ss+flash2+graphs (fp16; see BEST)
  hf      stands alone (stock transformers)
"""

from __future__ import annotations

import time

import torch

from ..models.attention import flash_attn_available
from ..models.gpt_neo import GPTNeo
from .base import Clock, Generation, Strategy, parse_dtype
from .naive import decode_loop

TECHNIQUES = ("hf", "naive", "half", "bf16", "flash2", "graphs", "ss", "best")
PRECISION = {"naive": torch.float32, "half": torch.float16, "bf16": torch.bfloat16}
# the fastest composition in the saved runs (NVIDIA H100, 2026-11-26: 1366 / 1410 tokens/s on E2E /
# Spider, ss+half+graphs 1374 / 1298, flash2+graphs 883 / 896)
BEST = ("ss", "flash2", "graphs")
ALONE = {
    "hf": "hf is stock transformers generate(), which none of our fast paths can change",
}
PROVIDERS = ("auto", "flash_attn", "sdpa_flash")


def parse_technique(name: str) -> tuple[str, ...]:
    """The techniques a name combines ('+'-separated), or ValueError saying why it cannot run."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"empty technique name {name!r}")
    parts = tuple(part.strip() for part in name.split("+"))
    for part in parts:
        if part not in TECHNIQUES:
            raise ValueError(f"unknown technique {part!r} in {name!r}; known: {', '.join(TECHNIQUES)} "
                             "(combine with '+', e.g. half+graphs)")
    dupes = sorted({p for p in parts if parts.count(p) > 1})
    if dupes:
        raise ValueError(f"{name!r}: {', '.join(dupes)} named more than once")
    if len(parts) > 1:
        for alone, why in ALONE.items():
            if alone in parts:
                raise ValueError(f"{name!r}: {alone} combines with nothing: {why}")
        if "best" in parts:
            raise ValueError(f"{name!r}: best is a preset ({'+'.join(BEST)}) and combines with nothing")
    if parts == ("best",):
        parts = BEST
    precisions = [p for p in parts if p in PRECISION]
    if len(precisions) > 1:
        raise ValueError(f"{name!r}: conflicting precisions {' and '.join(precisions)} "
                         "(naive is fp32, half fp16, bf16 bfloat16)")
    if "flash2" in parts and precisions == ["naive"]:
        raise ValueError(f"{name!r}: naive runs in float32 and FlashAttention-2 has no float32 kernels: "
                         "use flash2 (fp16), half+flash2 or bf16+flash2")
    return parts


def resolve_dtype(parts: tuple[str, ...], dtype=None) -> torch.dtype:
    """The precision of a combination: its precision technique, else fp16 with flash2, else fp32;
    a `dtype` option may refine it (half: fp16 or bf16) but not contradict it."""
    precision = next((p for p in parts if p in PRECISION), None)
    default = PRECISION[precision] if precision else (torch.float16 if "flash2" in parts else torch.float32)
    chosen = default if dtype is None else parse_dtype(dtype)
    half = (torch.float16, torch.bfloat16)
    if precision == "half" and chosen not in half:
        raise ValueError(f"half precision means float16 or bfloat16, not {dtype!r}")
    if precision == "bf16" and chosen != torch.bfloat16:
        raise ValueError(f"bf16 means bfloat16, not {dtype!r}")
    if "flash2" in parts and chosen not in half:
        raise ValueError(f"{'+'.join(parts)}: FlashAttention-2 runs float16 or bfloat16 only, not "
                         f"{str(chosen).removeprefix('torch.')}")
    return chosen


def check_device(parts: tuple[str, ...], runtime: str, device: torch.device) -> None:
    """flash2 and captured graphs need a CUDA GPU: say so before loading anything."""
    label = "+".join(parts)
    if device.type != "cuda":
        if "flash2" in parts:
            raise ValueError(f"{label}: flash2 needs a CUDA GPU (FlashAttention-2 kernels), not {device}")
        if "graphs" in parts and runtime != "static":
            raise ValueError(f"{label}: graphs captures the decode step with CUDA graphs and needs a "
                             f"CUDA GPU, not {device}")


def pick_flash_provider(parts: tuple[str, ...], provider: str, device: torch.device) -> str:
    """The FlashAttention-2 provider that will run: flash_attn if importable (unless sdpa_flash is
    asked for), else SDPA's flash kernel where this GPU and build have it; else a clear error."""
    label = "+".join(parts)
    if provider in ("auto", "flash_attn") and flash_attn_available():
        return "flash_attn"
    if provider == "flash_attn":
        raise ValueError(f"{label}: provider='flash_attn' but the flash_attn package cannot be imported")
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8 or not torch.backends.cuda.is_flash_attention_available():
        raise ValueError(f"{label}: PyTorch's SDPA flash kernel is unavailable on this GPU/build "
                         f"(compute capability {major}.x; needs 8.0+) and flash_attn is not installed")
    return "sdpa_flash"


def graph_options(parts: tuple[str, ...], runtime: str | None, bucket: int | None,
                  max_len: int | None = None) -> tuple[str, int, int | None]:
    """The graphs runtime, bucket and max_len (validated); options given without graphs are an error.
    max_len: static cache slots (default: the model's context); fewer slots, fewer buckets to capture."""
    if (runtime is not None or bucket is not None or max_len is not None) and "graphs" not in parts:
        raise ValueError(f"runtime, bucket and max_len are options of graphs, which {'+'.join(parts)} lacks")
    if max_len is not None and int(max_len) < 2:
        raise ValueError(f"max_len must be at least 2 cache slots, got {max_len}")
    from .graphs import RUNTIMES

    runtime = runtime or "cuda_graph"
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown graphs runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    bucket = int(bucket or 256)
    if bucket < 1:
        raise ValueError(f"bucket must be positive, got {bucket}")
    return runtime, bucket, None if max_len is None else int(max_len)


def build(name: str, **options) -> Strategy:
    """get_strategy for names that are not registered: combinations and the bf16 preset."""
    parts = parse_technique(name)
    if "ss" in parts:
        from .ss import SpecStream

        strategy = SpecStream(techniques=parts, **options)
    else:
        strategy = Fast(techniques=parts, **options)
    strategy.name = name
    return strategy


class Fast(Strategy):
    """Greedy decoding with any combination of precision, flash2 and graphs (batch 1).

    Prefill runs the ordinary forward (through Band masks with flash2) on a dynamic cache; without
    graphs the decode steps do too; with graphs the cache is copied into a StaticKVCache and each
    step is a replay of the captured static-shape step."""

    preset: tuple[str, ...] = ()

    def __init__(self, dtype=None, provider: str | None = None, runtime: str | None = None,
                 bucket: int | None = None, max_len: int | None = None, techniques: tuple[str, ...] | None = None):
        parts = tuple(techniques) if techniques is not None else self.preset
        if not parts:
            raise ValueError("Fast needs techniques")
        parts = parse_technique("+".join(parts))
        self.techniques = parts
        self.dtype = resolve_dtype(parts, dtype)
        self.flash, self.graphs = "flash2" in parts, "graphs" in parts
        if provider is not None and not self.flash:
            raise ValueError(f"provider is an option of flash2, which {'+'.join(parts)} lacks")
        self.graph_runtime, self.bucket, self.max_len = graph_options(parts, runtime, bucket, max_len)
        self.provider = provider or "auto"
        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown flash2 provider {provider!r}; known: {', '.join(PROVIDERS)}")
        self.attention_provider = "eager"
        self.runtime = "eager"
        self.decode_attention = "eager"
        self.setup_s = 0.0

    # -- preparation --------------------------------------------------------------------------

    def prepare(self, checkpoint, device):
        self.device = torch.device(device)
        check_device(self.techniques, self.graph_runtime, self.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        provider = pick_flash_provider(self.techniques, self.provider, self.device) if self.flash else "eager"
        self.model = GPTNeo.from_pretrained(checkpoint, device=self.device, dtype=self.dtype).eval()
        self.model.set_attention(provider)
        self.attention_provider = provider
        self.clock = Clock(self.device)
        if self.graphs:
            from ..models.static_cache import StaticDecoder
            from .graphs import GraphRunner

            self.decode_attention = {"flash_attn": "flash_attn", "sdpa_flash": "sdpa_efficient"}.get(provider, provider)
            if provider == "sdpa_flash":  # recorded, never silent: the flash kernel takes no mask
                self.attention_provider = "sdpa_flash+sdpa_efficient_decode"
            with torch.inference_mode():
                self.model.fuse_qkv()
                self.decoder = StaticDecoder(self.model, self.max_len, attention=self.decode_attention)
                self.runner = GraphRunner(self.decoder, self.graph_runtime, self.bucket)
            self.setup_s = self.runner.setup_s
            self.runtime = self.graph_runtime
        else:
            self.decode_attention = provider

    # -- generation ---------------------------------------------------------------------------

    def forward(self, ids, cache):
        return self.model.forward_banded(ids, cache) if self.flash else self.model(ids, cache)

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        clock = self.clock
        cache = self.model.new_cache()
        ids = torch.tensor([prompt], device=self.device)
        out = Generation(tokens=[], forward_calls=0)
        tokens = out.tokens
        if max_new_tokens <= 0:
            return out
        start = clock()
        logits = self.forward(ids, cache)
        t1 = clock()
        ids = logits[:, -1:].argmax(-1)
        token = int(ids)
        t2 = time.perf_counter()
        out.forward_s, out.verify_s, out.forward_calls, out.ttft_s = t1 - start, t2 - t1, 1, t2 - start
        tokens.append(token)
        if token == eos_id or len(tokens) >= max_new_tokens:
            return out
        if self.graphs:
            t0 = clock()
            length = self.runner.length_for(len(prompt) + max_new_tokens - 1)
            self.decoder.load(cache, ids)
            del cache
            out.prepare_s += clock() - t0
            def step():
                self.runner(length)
                return self.decoder.token
        else:
            def step():
                nonlocal ids
                ids = self.forward(ids, cache)[:, -1:].argmax(-1)  # the next step's input
                return ids
        return decode_loop(step, out, max_new_tokens, eos_id, clock, start)

    def config(self) -> dict:
        extra = {"techniques": "+".join(self.techniques), "decode_attention": self.decode_attention,
                 "setup_s": self.setup_s}
        if self.graphs:
            extra["graph_bucket"] = self.bucket
        if self.flash and self.attention_provider.startswith("sdpa_flash"):
            extra["local_prefill_attention"] = "eager where the prompt is longer than the window"
        return {**super().config(), **extra}
