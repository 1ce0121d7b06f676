"""`ss` with simulated drafts (spec_stream/simulate.py): tokens/s as a function of the acceptance
ratio, for scripts/ss_simulate.py. Not a registered technique: its records say `simulated: True`.
Any ss composition works (`ss+half+graphs`: the simulation runs inside the captured step)."""

from __future__ import annotations

import torch

from ..spec_stream.simulate import SimulatedDraftDecoder, SimulatedStaticTreeDecoder
from .ss import SpecStream
from .techniques import parse_technique


class SimulatedSpecStream(SpecStream):
    """A `SpecStream` whose decoder is simulated; give it the greedy continuations with
    `set_references(prompts, outputs)` after `prepare`."""

    def __init__(self, accuracy: float = 1.0, seed: int = 0, technique: str = "ss", **options):
        parsed = parse_technique(technique)
        if parsed.drafting != "ss":
            raise ValueError(f"the simulation replaces Speculative Streaming's drafts; {technique!r} has none")
        super().__init__(parsed, **options)
        self.accuracy, self.seed = accuracy, seed

    def eager_decoder(self, model, topk, **options):
        return SimulatedDraftDecoder(model, topk, accuracy=self.accuracy, seed=self.seed, **options)

    def static_decoder(self, model, topk, max_len, pad_rows, attention=None):
        return SimulatedStaticTreeDecoder(model, topk, max_len, pad_rows, attention, accuracy=self.accuracy,
                                          seed=self.seed)

    def set_accuracy(self, accuracy: float) -> None:
        """Another accuracy on the prepared decoder (no new capture); set_references again after."""
        self.accuracy = self.decoder.drafts.accuracy = float(accuracy)

    def set_references(self, prompts, outputs) -> None:
        """Draft tables built here, once, so the timed generate calls only look them up."""
        self.tables = {tuple(p): self.decoder.drafts.table(o, self.seed + i)
                       for i, (p, o) in enumerate(zip(prompts, outputs))}

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        self.decoder.set_continuation(self.tables[tuple(prompt)])
        return self.decoder.generate(prompt, max_new_tokens, eos_id, self.clock)

    def config(self) -> dict:
        return {**super().config(), "simulated": True, "draft_accuracy": self.accuracy, "draft_seed": self.seed}


def simulated_strategy(topk="1,1,1,1", accuracy: float = 1.0, seed: int = 0, technique: str = "ss", **options):
    """A SimulatedSpecStream of `technique` (ss or a composition such as ss+half+graphs); options:
    dtype, max_depth, prune, ..."""
    return SimulatedSpecStream(accuracy=accuracy, seed=seed, technique=technique, topk=topk, **options)
