"""Prompt lookup decoding (`pld`, Saxena 2023): drafts copied from the prompt and the output so far
by n-gram lookup, verified as a chain by the plain model (spec_stream/lookup.py). No extra
parameters, no training: it runs on any checkpoint. Composes with a precision (`pld+half`,
`pld+bf16`) and with graphs (`pld+graphs`, `pld+half+graphs`: the chain's verify step over a static
cache, captured once, spec_stream/static_chain.py; the draft is looked up on the host between
replays). The grammar: techniques.py."""

from __future__ import annotations

from ..spec_stream.lookup import (DEFAULT_MAX_NGRAM, DEFAULT_MIN_NGRAM, DEFAULT_NUM_DRAFT, LookupDecoder,
                                  StaticLookupDecoder, check_ngrams)
from .drafting import Drafting
from .techniques import Technique, parse_technique

PLD = parse_technique("pld")


class PromptLookup(Drafting):
    def __init__(self, technique: Technique = PLD, dtype=None, num_draft: int = DEFAULT_NUM_DRAFT,
                 max_ngram: int = DEFAULT_MAX_NGRAM, min_ngram: int = DEFAULT_MIN_NGRAM, runtime: str | None = None,
                 bucket: int | None = None, max_len: int | None = None):
        """num_draft: tokens drafted per step (at most); max_ngram / min_ngram: the n-gram lengths
        looked up, longest first; runtime / bucket / max_len: options of graphs (see capture.py)."""
        super().__init__(technique, dtype, runtime, bucket, max_len)
        self.num_draft, self.max_ngram, self.min_ngram = check_ngrams(num_draft, max_ngram, min_ngram)

    def make_decoder(self, target, checkpoint):
        if not self.technique.graphs:
            return LookupDecoder(target, self.num_draft, self.max_ngram, self.min_ngram)
        return self.captured(StaticLookupDecoder(target, self.num_draft, self.max_ngram, self.min_ngram, self.max_len))

    def options(self) -> dict:
        return {"num_draft": self.num_draft, "max_ngram": self.max_ngram, "min_ngram": self.min_ngram}
