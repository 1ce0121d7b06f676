"""What the peers of Speculative Streaming share as strategies (`Drafting`): the target GPT-Neo at
the technique's precision, eager attention over the dynamic cache, a decoder that runs
spec_stream's DraftLoop, and a record that names the drafting parts' extra parameters (what the
report compares: 0 for pld, the draft model's for sps, the heads' for medusa)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..capture import GraphRunner
from ..checkpoints import recorded
from ..generation import Clock
from ..models.gpt_neo import GPTNeo, param_bytes
from ..spec_stream.decode import DraftLoop
from .base import Strategy
from .techniques import Technique, check_device, graph_options, resolve_dtype


class Drafting(Strategy):
    """A subclass builds its decoder from the target (`make_decoder`) and says what it drafts with
    (`drafter`: the module of extra parameters, or None)."""

    def __init__(self, technique: Technique, dtype=None, runtime: str | None = None, bucket: int | None = None,
                 max_len: int | None = None):
        """runtime / bucket / max_len: options of graphs (capture.py), for a method with a static step."""
        self.technique = technique
        self.name = technique.name
        self.dtype = resolve_dtype(technique, dtype)
        self.graph_runtime, self.bucket, self.max_len = graph_options(technique, runtime, bucket, max_len)

    def make_decoder(self, target: GPTNeo, checkpoint) -> DraftLoop:
        raise NotImplementedError

    def drafter(self) -> nn.Module | None:
        return None

    def drafter_checkpoint(self):
        """Where the drafter was trained (a directory with llmopt.json), or None."""
        return None

    def prepare(self, checkpoint, device):
        self.device = torch.device(device)
        check_device(self.technique, self.graph_runtime, self.device)
        # `model` is what a step's bandwidth floor is reckoned against (measure.Cell.record): the
        # target, as for its plain twin, not the drafter
        self.model = target = GPTNeo.from_pretrained(checkpoint, device=self.device, dtype=self.dtype).eval()
        if self.technique.graphs:
            target.fuse_qkv()  # one projection kernel instead of three, as plain graphs does
        self.clock = Clock(self.device)
        with torch.inference_mode():
            self.decoder = self.make_decoder(target, checkpoint)
        if self.technique.graphs:
            self.runtime, self.setup_s = self.graph_runtime, self.decoder.runner.setup_s

    def captured(self, decoder):
        """With graphs: a static decoder whose step is captured once per bucket (capture.GraphRunner)."""
        decoder.runner = GraphRunner(decoder, self.graph_runtime, self.bucket)
        return decoder

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        return self.decoder.generate(prompt, max_new_tokens, eos_id, self.clock)

    def options(self) -> dict:
        """The method's own options, for the record."""
        return {}

    def config(self) -> dict:
        drafter = self.drafter()
        graphs = {"graph_bucket": self.bucket, "setup_s": self.setup_s} if self.technique.graphs else {}
        extra = {"techniques": self.technique.label, **self.options(), **graphs,
                 **drafter_fields(drafter, self.drafter_checkpoint())}
        return {**super().config(), **extra}


def draft_options(draft, k) -> tuple[Path | None, int]:
    """A draft-model method's options (sps, hf+sps): the draft checkpoint (checked by
    `require_draft` once it is needed) and k, the tokens drafted per step."""
    if int(k) < 1:
        raise ValueError(f"k, the draft length, must be at least 1, got {k}")
    return (None if draft is None else Path(draft)), int(k)


def require_draft(technique: Technique, draft: Path | None) -> Path:
    if draft is None:
        raise ValueError(f"{technique.label} needs a draft model: option draft=<checkpoint directory> "
                         "(one trained with the target's tokenizer: llmopt.train.draft_recipe)")
    return draft


def drafter_fields(drafter: nn.Module | None, checkpoint) -> dict:
    """What a record says of a drafting method's extra parameters (`drafter`, None: none) and of
    their training (`checkpoint`: where they were trained, None: untrained)."""
    return {"extra_parameters": 0 if drafter is None else sum(p.numel() for p in drafter.parameters()),
            "extra_parameter_bytes": 0 if drafter is None else param_bytes(drafter),
            "drafter_train_time_s": None if checkpoint is None else recorded(checkpoint).get("train_time_s")}
