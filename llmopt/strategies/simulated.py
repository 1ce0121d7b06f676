"""`ss` with simulated drafts (spec_stream/simulate.py): tokens/s as a function of the acceptance
ratio, for scripts/ss_simulate.py. Not a registered technique: its records say `simulated: True`."""

from __future__ import annotations

import torch

from ..spec_stream.simulate import SimulatedDraftDecoder
from .ss import SpecStream


class SimulatedSpecStream(SpecStream):
    """A `SpecStream` whose decoder is simulated; give it the greedy continuations with
    `set_references(prompts, outputs)` after `prepare`."""

    def __init__(self, accuracy: float = 1.0, seed: int = 0, **options):
        super().__init__(**options)
        self.accuracy, self.seed = accuracy, seed

    def make_decoder(self, topk):
        return SimulatedDraftDecoder(self.model, topk, accuracy=self.accuracy, seed=self.seed, prune=self.prune)

    def set_references(self, prompts, outputs) -> None:
        """Draft tables built here, once, so the timed generate calls only look them up."""
        self.tables = {tuple(p): self.decoder.draft_table(o, self.seed + i)
                       for i, (p, o) in enumerate(zip(prompts, outputs))}

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        self.decoder.set_continuation(self.tables[tuple(prompt)])
        return self.decoder.generate(prompt, max_new_tokens, eos_id, self.clock)

    def config(self) -> dict:
        return {**super().config(), "simulated": True, "draft_accuracy": self.accuracy, "draft_seed": self.seed}


def simulated_strategy(topk="1,1,1,1", accuracy: float = 1.0, seed: int = 0, dtype="float32", **options):
    """A SimulatedSpecStream (technique "ss"); options: max_depth, prune, ..."""
    return SimulatedSpecStream(accuracy=accuracy, seed=seed, dtype=dtype, topk=topk, **options)
