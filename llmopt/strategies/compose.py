"""Composed techniques without drafting (`Fast`): any combination of a precision, flash2 and graphs,
e.g. `bf16`, `flash2`, `half+graphs`, `flash2+graphs` (the grammar: strategies/techniques.py).
Option `decode_kernel` of `flash2+graphs`: the captured step's attention kernel (techniques.DECODE_KERNELS;
default flash_attn's where it is installed, else SDPA's cuDNN kernel: techniques.DEFAULT_DECODE_KERNEL).

Every one decodes through the one greedy loop (llmopt/generation.py). Prefill runs the ordinary
forward (through Band masks with flash2) on a dynamic cache; without graphs the decode steps do
too; with graphs the cache is copied into a StaticKVCache and each step is a replay of the
captured static-shape step (llmopt/capture.py)."""

from __future__ import annotations

import torch

from ..capture import GraphRunner
from ..generation import Clock, greedy
from ..models.gpt_neo import GPTNeo
from ..models.static_cache import StaticDecoder
from .base import Strategy
from .techniques import (DEFAULT_DECODE_KERNEL, Technique, ahead_option, check_device, decode_kernel_option, flash_option,
                         graph_options, pick_flash_provider, resolve_dtype)

# the kernel of the captured decode step per prefill provider: SDPA's flash kernel takes no mask,
# so its static step runs the default decode kernel, one that does
STATIC_ATTENTION = {"flash_attn": "flash_attn", "sdpa_flash": DEFAULT_DECODE_KERNEL}


class Fast(Strategy):
    """Greedy decoding with any combination of precision, flash2 and graphs (batch 1)."""

    def __init__(self, technique: Technique, dtype=None, provider: str | None = None, runtime: str | None = None,
                 bucket: int | None = None, max_len: int | None = None, queue_ahead: bool = False,
                 decode_kernel: str | None = None):
        self.technique = technique
        self.name = technique.name
        self.dtype = resolve_dtype(technique, dtype)
        self.flash, self.graphs = technique.flash, technique.graphs
        self.provider = flash_option(technique, provider)
        self.graph_runtime, self.bucket, self.max_len = graph_options(technique, runtime, bucket, max_len)
        self.queue_ahead = ahead_option(technique, queue_ahead)
        self.decode_kernel = decode_kernel_option(technique, decode_kernel)
        self.attention_provider = "eager"
        self.runtime = "eager"
        self.decode_attention = "eager"
        self.setup_s = 0.0

    # -- preparation --------------------------------------------------------------------------

    def prepare(self, checkpoint, device):
        self.device = torch.device(device)
        check_device(self.technique, self.graph_runtime, self.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        provider = pick_flash_provider(self.technique, self.provider, self.device) if self.flash else "eager"
        self.model = GPTNeo.from_pretrained(checkpoint, device=self.device, dtype=self.dtype).eval()
        self.model.set_attention(provider)
        self.attention_provider = provider
        self.clock = Clock(self.device)
        self.decode_attention = provider
        if self.graphs:
            self.decode_attention = self.decode_kernel or STATIC_ATTENTION.get(provider, provider)
            if provider == "sdpa_flash":  # recorded, never silent: the flash kernel takes no mask
                self.attention_provider = f"sdpa_flash+{self.decode_attention}_decode"
            with torch.inference_mode():
                self.model.fuse_qkv()
                self.decoder = StaticDecoder(self.model, self.max_len, attention=self.decode_attention)
                self.runner = GraphRunner(self.decoder, self.graph_runtime, self.bucket)
            self.setup_s = self.runner.setup_s
            self.runtime = self.graph_runtime

    # -- generation ---------------------------------------------------------------------------

    def forward(self, ids, cache):
        return self.model.forward_banded(ids, cache) if self.flash else self.model(ids, cache)

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        static = None
        if self.graphs:
            def static(cache, ids):
                """The prefill's cache and token into the static decoder; each step is one replay."""
                length = self.runner.length_for(len(prompt) + max_new_tokens - 1)
                self.decoder.load(cache, ids)

                def step():
                    self.runner(length)
                    return self.decoder.token
                return step
        return greedy(self.model, prompt, max_new_tokens, eos_id, self.clock, self.forward, static, self.queue_ahead)

    def config(self) -> dict:
        extra = {"techniques": self.technique.label, "decode_attention": self.decode_attention,
                 "setup_s": self.setup_s}
        if self.graphs:
            extra.update(graph_bucket=self.bucket, queue_ahead=self.queue_ahead)
        if self.flash and self.attention_provider.startswith("sdpa_flash"):
            extra["local_prefill_attention"] = "eager where the prompt is longer than the window"
        return {**super().config(), **extra}
