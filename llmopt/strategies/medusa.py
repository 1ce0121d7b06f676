"""Medusa-1 (`medusa`, Cai et al. 2024): heads on the frozen model's last hidden state draft a tree
from their top-k, verified in one forward with the tree mask (spec_stream/medusa.py). The heads
are trained on the target checkpoint by the "medusa" objective (llmopt.train.medusa_recipe) and
loaded from the option `heads` (a directory; default: the checkpoint itself). Composes with a
precision (`medusa+half`, `medusa+bf16`) and with graphs (`medusa+graphs`, `medusa+half+graphs`: the
verify-and-draft step over a static cache, captured once per bucket, spec_stream/medusa.py)."""

from __future__ import annotations

from pathlib import Path

from ..spec_stream.medusa import MedusaDecoder, MedusaModel, StaticMedusaDecoder
from .drafting import Drafting
from .ss import DEFAULT_TOPK, parse_topk
from .techniques import Technique, ahead_option, parse_technique

MEDUSA = parse_technique("medusa")


class Medusa(Drafting):
    def __init__(self, technique: Technique = MEDUSA, dtype=None, heads: str | Path | None = None,
                 topk=DEFAULT_TOPK, share_head: bool | None = None, runtime: str | None = None,
                 bucket: int | None = None, max_len: int | None = None, queue_ahead: bool = False):
        """heads: the directory of the trained heads (default: the checkpoint); topk: tokens of head
        k at depth k of the draft tree (the same default tree as ss; cut to the number of heads);
        share_head: heads that end in the base's LM head instead of their own (the benchmark trains
        such heads when it trains them; loaded heads must be of that kind); runtime / bucket /
        max_len: options of graphs (see capture.py); queue_ahead: with graphs, queue each step
        before the previous verdict is read (DraftLoop.generate_ahead)."""
        super().__init__(technique, dtype, runtime, bucket, max_len)
        self.queue_ahead = ahead_option(technique, queue_ahead)
        self.heads = None if heads is None else Path(heads)
        if share_head not in (None, True, False):
            raise ValueError(f"share_head must be true or false, got {share_head!r}")
        self.share_head = share_head
        self.topk = parse_topk(topk)
        if not self.topk or min(self.topk) < 1:
            raise ValueError(f"topk must be positive tokens per depth, got {topk!r}")

    def make_decoder(self, target, checkpoint):
        model = MedusaModel.load_heads(target, self.heads or checkpoint).eval()
        if self.share_head is not None and model.share_head != self.share_head:
            raise ValueError(f"the Medusa heads in {self.heads or checkpoint} were trained with "
                             f"share_head={str(model.share_head).lower()}, not {str(self.share_head).lower()}")
        topk = self.topk[: model.gamma]
        if not self.technique.graphs:
            return MedusaDecoder(model, topk)
        decoder = self.captured(StaticMedusaDecoder(model, topk, self.max_len))
        decoder.queue_ahead = self.queue_ahead
        return decoder

    def drafter(self):
        return self.decoder.model.drafting_modules()

    def drafter_checkpoint(self):
        return self.heads

    def options(self) -> dict:
        tree = self.decoder.tree
        return {"topk": ",".join(map(str, tree.topk)), "tree_size": tree.size, "gamma": self.decoder.model.gamma,
                "share_head": self.decoder.model.share_head, "heads": None if self.heads is None else self.heads.name,
                **({"queue_ahead": self.queue_ahead} if self.technique.graphs else {})}
