"""Speculative Streaming: the fine-tuned model drafts with its streams and verifies with its main
stream in the same forward pass (tree draft, greedy verification). fp32, eager attention."""

from __future__ import annotations

import torch

# the module, not its names: importing spec_stream.decode first imports this package, so decode
# may still be mid-import when this line runs
from ..spec_stream import decode
from ..spec_stream.model import SpecStreamModel
from .base import Clock, Strategy, parse_dtype, register


def parse_topk(topk) -> tuple[int, ...]:
    """(2, 1, 1) or "2,1,1": how many tokens each stream contributes at its depth of the tree."""
    if isinstance(topk, str):
        topk = [part for part in topk.split(",") if part.strip()]
    return tuple(int(k) for k in topk)


@register("ss")
class SpecStream(Strategy):
    objective = "ss"  # needs a checkpoint fine-tuned with the multi-stream loss

    def __init__(self, dtype: str | torch.dtype = "float32", topk="1,1,1,1", max_depth: int | None = None,
                 prune: float = 0.0):
        """prune: tree-pruning threshold (paper §3.2) on the early-exit probability of a draft token
        given its parent; nodes below it and their subtrees skip the MSA layers. 0 = off."""
        self.dtype = parse_dtype(dtype)
        self.prune = float(prune)
        if not 0.0 <= self.prune <= 1.0:
            raise ValueError(f"prune is a probability threshold in [0, 1], got {prune}")
        self.topk = parse_topk(topk)
        self.max_depth = None if max_depth is None else int(max_depth)
        if self.max_depth is not None and self.max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, got {max_depth}")

    def prepare(self, checkpoint, device):
        self.device = torch.device(device)
        self.model = SpecStreamModel.from_pretrained(checkpoint, device=self.device, dtype=self.dtype).eval()
        depth = min(len(self.topk), self.model.gamma, self.max_depth or len(self.topk))
        self.decoder = self.make_decoder(self.topk[:depth])  # a deeper tree than streams is cut
        self.clock = Clock(self.device)

    def make_decoder(self, topk: tuple[int, ...]) -> decode.Decoder:
        return decode.Decoder(self.model, topk, prune=self.prune)

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        return self.decoder.generate(prompt, max_new_tokens, eos_id, self.clock)

    def config(self) -> dict:
        tree = self.decoder.tree
        return {**super().config(), "gamma": self.model.gamma,
                "num_stream_layers": self.model.num_stream_layers,
                "topk": ",".join(map(str, tree.topk)), "tree_size": tree.size,
                "prune": self.prune}
