"""A chain's verify step with static shapes: what `pld+graphs` captures.

The dynamic ChainDecoder (chain.py) appends [root, d1..dk] to a growing cache, verifies on the
host and slices the cache back. Here the step runs on the device over a StaticKVCache, so it can
be captured once per bucket of cache slots and replayed: the chain always has `depth + 1` rows
(the root, the draft, padding past the draft's length); their keys/values go to slots pos..; the
rows attend causally to each other and to the committed slots below pos; the accepted length is
the run of leading draft tokens equal to the predictions at their parents, never past the draft's
length (so padding is never accepted); pos advances past the root and the accepted tokens, whose
keys/values already sit in order (a chain needs no move). The rest of the rows are scratch that
the next step overwrites or masks. The host writes the next chain into `ids` and its length into
`drafted` before a step, and reads `verdict` ([accepted, the prediction at every row]) after it:
one host sync per step, as in the dynamic decoder.

A subclass drafts on the host (`draft_tokens`: prompt lookup, lookup.py) or on the device inside
the step (draft_model.py's StaticDraftModelDecoder, `sps+graphs`).
"""

from __future__ import annotations

import torch

from ..capture import GraphRunner
from ..models.gpt_neo import GPTNeo
from ..models.static_cache import StaticKVCache
from .chain import ChainDecoder, ChainState


def causal_masks(row_pos: torch.Tensor, slots: torch.Tensor, window: int) -> dict:
    """Boolean [rows, slots] masks per layer kind for rows at positions `row_pos` over a static
    cache whose slot j holds position j: every slot up to the row's own, and on local layers only
    those within the window."""
    seen = slots[None, :] <= row_pos[:, None]
    return {"global": seen, "local": seen & (row_pos[:, None] - slots[None, :] < window)}


class StaticChainDecoder(ChainDecoder):
    """`runner` (set by the caller: a capture.GraphRunner over this decoder) replays step(length);
    without one, step runs uncaptured."""

    runner: GraphRunner | None

    def __init__(self, model: GPTNeo, max_draft: int, max_len: int | None = None):
        super().__init__(model, max_draft)
        device, rows = self.device, max_draft + 1
        self.rows = rows
        self.cache = StaticKVCache(model, (max_len or self.limit) + rows)  # room for the last step's rows
        self.offsets = torch.arange(rows, device=device)
        self.cache.index = torch.zeros(rows, dtype=torch.long, device=device)  # the step's slots, set by step
        self.slots = torch.arange(self.cache.max_len, device=device)
        self.ids = torch.zeros(rows, dtype=torch.long, device=device)  # root, draft, padding
        self.drafted = torch.zeros(1, dtype=torch.long, device=device)  # the draft's length
        self.verdict = torch.zeros(1 + rows, dtype=torch.long, device=device)
        self.runner = None

    def draft_tokens(self, state: ChainState, length: int) -> list[int]:
        """At most `length` draft tokens after the root, on the host."""
        raise NotImplementedError

    def static_tensors(self) -> list[torch.Tensor]:
        """Every tensor the step reads or writes that is no model weight (fixed addresses)."""
        return [self.offsets, self.slots, self.ids, self.drafted, self.verdict, *self.cache.static_tensors()]

    def masks(self, length: int) -> dict:
        """[rows, length] per layer kind: the committed slots below pos (within each row's window on
        local layers) and, causally, the chain's own slots from pos."""
        return causal_masks(self.cache.pos + self.offsets, self.slots[:length], self.model.window)

    def step(self, length: int) -> None:
        self.verify_chain(length)

    def verify_chain(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Verify the chain in `ids` over `length` slots and commit it, all on the device; returns
        the target's token after each row and the accepted count ([1])."""
        model, cache = self.model, self.cache
        cache.length = length
        pos = cache.pos
        torch.add(pos, self.offsets, out=cache.index)
        # rows past the last position could only give tokens beyond max_new_tokens: any position does
        positions = (pos + self.offsets).clamp(max=self.limit - 1)
        x = model.run_blocks(model.embed(self.ids[None], positions), self.masks(length), cache)
        predicted = model.head(x)[0].argmax(-1)  # [rows]: the target's token after each row
        match = (self.ids[1:] == predicted[:-1]) & (self.offsets[:-1] < self.drafted)
        accepted = match.long().cumprod(0).sum().view(1)
        pos.add_(accepted + 1)
        self.verdict[:1].copy_(accepted)
        self.verdict[1:].copy_(predicted)
        return predicted, accepted

    # the DraftLoop's phases
    def start(self, prompt: list[int], max_new_tokens: int) -> ChainState:
        """The prefill over a dynamic cache, copied into the static one."""
        state = super().start(prompt, max_new_tokens)
        self.cache.load(state.cache)
        state.cache = self.cache
        total = len(prompt) + max_new_tokens - 1 + self.rows  # the last step's rows included
        self.length = self.runner.length_for(total) if self.runner else total
        return state

    def room(self, state: ChainState) -> int:
        past = len(state.history) - 1  # committed: the prompt and the emitted tokens but the root
        return max(0, min(self.depth, state.budget - len(state.history) - 1, self.limit - 1 - past))

    def step_inputs(self, state: ChainState):
        draft = self.draft_tokens(state, self.room(state))
        state.drafted = len(draft)
        chain = [state.history[-1], *draft] + [0] * (self.depth - len(draft))  # padding: never accepted
        self.ids.copy_(torch.tensor(chain))
        self.drafted.fill_(len(draft))
        return (None,)  # the chain is in self.ids

    def forward(self, state: ChainState, ids=None):
        if self.runner is None:
            self.step(self.length)
        else:
            self.runner(self.length)
        return ()  # the verdict is in self.verdict

    def verify(self, state: ChainState, ids=None) -> tuple[list[int], int]:
        """The step accepted and committed on the device: read its verdict (the step's one sync)."""
        accepted, *predicted = self.verdict.tolist()
        new = predicted[: accepted + 1]  # the accepted draft tokens equal their predictions; then the correction
        state.history.extend(new)
        self.committed(state, accepted)
        return new, accepted
