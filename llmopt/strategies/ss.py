"""Speculative Streaming: the fine-tuned model drafts with its streams and verifies with its main
stream in the same forward pass (tree draft, greedy verification).

The `ss` preset runs like `naive` (fp32, eager attention, dynamic cache), so `ss` against `naive` is
the technique's own speed-up. Composed (see techniques.py): `ss+half` / `ss+bf16` (precision),
`ss+flash2` (fp16; the tree masks are arbitrary, so attention runs SDPA's memory-efficient kernel,
a fused kernel that takes a mask), `ss+graphs` (the verify-and-draft step over a static cache,
captured once: spec_stream/static.py; option `pad_rows` pads its rows, see there), and any mix of them,
e.g. `ss+flash2+graphs`. Option `decode_kernel` of `ss+flash2+graphs` (as of `flash2+graphs`): the
captured tree step's attention kernel, "sdpa_cudnn" (the default: SDPA's cuDNN kernel, the mask made
additive once a step), "sdpa_efficient" (SDPA's memory-efficient kernel), "eager" (the reference's
matmuls and softmax, as `ss+half+graphs` runs them) or "flex" (FlexAttention, compiled). The prefill
runs sdpa_efficient whatever the step's kernel (flex would compile again for every prompt's length)."""

from __future__ import annotations

import torch

from ..capture import GraphRunner
from ..generation import Clock
from ..spec_stream.decode import Decoder, check_prune
from ..spec_stream.model import SpecStreamModel
from ..spec_stream.static import StaticTreeDecoder, check_pad_rows
from .base import Strategy
from .techniques import (DEFAULT_DECODE_KERNEL, MASKED_FLASH_KERNEL, Technique, ahead_option, check_device,
                         decode_kernel_option, graph_options, parse_technique, resolve_dtype)

# the tree with the best geometric-mean speed-up over naive in the sweep (scripts/ss_sweep.py, NVIDIA
# H100, 2026-11-26: E2E 1.78x / 2.79 accepted per step, Spider 1.43x / 2.17; docs/results/spec_stream)
DEFAULT_TOPK = "2,2,1,1"
# ss+flash2+graphs may run its captured step on any of techniques.DECODE_KERNELS. At 125m on an H100
# its kernels took 0.75 ms a step on sdpa_cudnn (the default), 1.04 on sdpa_efficient, 0.93 on eager
# (session 18) and 1.46 on flex (session 16): docs/results/NVIDIA-H100-80GB-HBM3
SS = parse_technique("ss")


def parse_topk(topk) -> tuple[int, ...]:
    """(2, 1, 1) or "2,1,1": how many tokens each stream contributes at its depth of the tree."""
    parts = [part for part in topk.split(",") if part.strip()] if isinstance(topk, str) else list(topk)
    try:
        found = tuple(int(k) for k in parts)
    except (TypeError, ValueError):
        found = ()
    if not found or min(found) < 1:
        raise ValueError(f"topk is a positive whole number per depth of the tree, e.g. 2,2,1,1; got {topk!r}")
    return found


class SpecStream(Strategy):
    objective = "ss"  # needs a checkpoint fine-tuned with the multi-stream loss

    def __init__(self, technique: Technique = SS, dtype=None, topk=DEFAULT_TOPK, max_depth: int | None = None,
                 prune: float = 0.0, runtime: str | None = None, bucket: int | None = None,
                 max_len: int | None = None, pad_rows: int | None = None, decode_kernel: str | None = None,
                 queue_ahead: bool = False):
        """topk: tokens per stream at each depth of the draft tree; max_depth: cut the tree;
        prune: tree-pruning threshold (paper §3.2) on the early-exit probability of a draft token
        given its parent (0 = off); runtime / bucket / max_len: options of graphs (see capture.py);
        pad_rows: with graphs, pad the tree step's rows to a multiple of it (spec_stream/static.py);
        decode_kernel: with flash2 and graphs, the captured step's attention kernel (DECODE_KERNELS);
        queue_ahead: with graphs, queue each step before the previous verdict is read (DraftLoop.generate_ahead)."""
        self.technique = technique
        self.name = technique.name
        self.dtype = resolve_dtype(technique, dtype)
        self.graphs = technique.graphs
        self.graph_runtime, self.bucket, self.max_len = graph_options(technique, runtime, bucket, max_len)
        self.prune = check_prune(prune)
        self.queue_ahead = ahead_option(technique, queue_ahead)
        if pad_rows is not None and not self.graphs:
            raise ValueError(f"pad_rows pads the static tree step of graphs, which {technique.label} lacks")
        self.pad_rows = check_pad_rows(pad_rows)
        if self.prune and self.graphs:
            raise ValueError(f"{technique.label}: tree pruning decides on the host how many nodes "
                             "the top layers see, so its steps have no fixed shape to capture; drop prune or graphs")
        self.topk = parse_topk(topk)
        self.max_depth = None if max_depth is None else int(max_depth)
        if self.max_depth is not None and self.max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, got {max_depth}")
        # ss+flash2: the fused kernel that takes a tree mask; captured, the decode kernel
        self.attention_provider = MASKED_FLASH_KERNEL if technique.flash else "eager"
        self.decode_attention = (decode_kernel_option(technique, decode_kernel)
                                 or (DEFAULT_DECODE_KERNEL if technique.flash and self.graphs else self.attention_provider))

    def prepare(self, checkpoint, device):
        self.device = torch.device(device)
        check_device(self.technique, self.graph_runtime, self.device)
        self.model = SpecStreamModel.from_pretrained(checkpoint, device=self.device, dtype=self.dtype).eval()
        self.model.set_attention(self.attention_provider)
        depth = min(len(self.topk), self.model.gamma, self.max_depth or len(self.topk))
        self.clock = Clock(self.device)
        with torch.inference_mode():
            self.decoder = self.make_decoder(self.topk[:depth])  # a deeper tree than streams is cut
        if self.graphs:
            self.runtime = self.graph_runtime
            self.setup_s = self.decoder.runner.setup_s

    # the decoders of the eager and the captured step (a simulation substitutes its own)
    eager_decoder, static_decoder = Decoder, StaticTreeDecoder

    def make_decoder(self, topk: tuple[int, ...]):
        if not self.graphs:
            return self.eager_decoder(self.model, topk, prune=self.prune)
        self.model.base.fuse_qkv()
        decoder = self.static_decoder(self.model, topk, self.max_len, self.pad_rows, self.decode_attention)
        decoder.runner = GraphRunner(decoder, self.graph_runtime, self.bucket)
        decoder.queue_ahead = self.queue_ahead
        return decoder

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        return self.decoder.generate(prompt, max_new_tokens, eos_id, self.clock)

    def config(self) -> dict:
        tree = self.decoder.tree
        extra = {"techniques": self.technique.label, "gamma": self.model.gamma,
                 "num_stream_layers": self.model.num_stream_layers,
                 "topk": ",".join(map(str, tree.topk)), "tree_size": tree.size, "prune": self.prune,
                 "setup_s": self.setup_s,
                 # all SS adds to the model: γ stream embeddings (the streams share every other weight)
                 "extra_parameters": self.model.stream_embeddings.numel(),
                 "extra_parameter_bytes": self.model.stream_embeddings.numel() * self.model.stream_embeddings.element_size()}
        if self.graphs:
            extra.update(graph_bucket=self.bucket, pad_rows=self.pad_rows, decode_attention=self.decode_attention,
                         queue_ahead=self.queue_ahead)
        return {**super().config(), **extra}
