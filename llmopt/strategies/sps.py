"""Two-model speculative decoding (`sps`, Leviathan et al. 2023; Chen et al. 2023): a small draft
GPT-Neo with the target's tokenizer drafts a chain of k tokens, the target verifies it in one
forward (spec_stream/draft_model.py). Composes with a precision (`sps+half`, `sps+bf16`: the draft
runs in it too) and with graphs (`sps+graphs`, `sps+half+graphs`: drafting and verification in one
static step over two static caches, captured once per bucket). The draft checkpoint is the option
`draft`; the benchmark trains one with the target's tokenizer (llmopt.train.draft_recipe)."""

from __future__ import annotations

from pathlib import Path

from ..models.gpt_neo import GPTNeo
from ..spec_stream.draft_model import DEFAULT_K, DraftModelDecoder, StaticDraftModelDecoder
from .drafting import Drafting, draft_options, require_draft
from .techniques import Technique, parse_technique

SPS = parse_technique("sps")


class DraftModelSpeculation(Drafting):
    def __init__(self, technique: Technique = SPS, dtype=None, draft: str | Path | None = None, k: int = DEFAULT_K,
                 runtime: str | None = None, bucket: int | None = None, max_len: int | None = None):
        """draft: the draft model's checkpoint directory (needed by prepare); k: tokens drafted per
        step; runtime / bucket / max_len: options of graphs (see capture.py)."""
        super().__init__(technique, dtype, runtime, bucket, max_len)
        self.draft, self.k = draft_options(draft, k)

    def make_decoder(self, target, checkpoint):
        draft = GPTNeo.from_pretrained(require_draft(self.technique, self.draft), device=self.device,
                                       dtype=self.dtype).eval()
        if not self.technique.graphs:
            return DraftModelDecoder(target, draft, self.k)
        draft.fuse_qkv()
        return self.captured(StaticDraftModelDecoder(target, draft, self.k, self.max_len))

    def drafter(self):
        return self.decoder.draft_model

    def drafter_checkpoint(self):
        return self.draft

    def options(self) -> dict:
        return {"k": self.k, "draft": None if self.draft is None else self.draft.name}
