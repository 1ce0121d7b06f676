"""Verifying a chain of draft tokens with the plain model: what the peers that draft one chain
share (prompt lookup decoding, lookup.py; a draft model, draft_model.py).

A chain needs no tree mask: [root, d1..dk] are consecutive tokens, so the verification is the
plain causal forward over them appended to the KV cache, and its argmax at d_i is the target's
token after d_i. The longest prefix of the draft equal to those predictions is accepted; the
prediction after it (the correction) is the next root. The commit keeps the prefix, the root and
the accepted tokens: a slice of the cache (KVCache.keep), since the chain sits in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.gpt_neo import GPTNeo, KVCache
from .decode import DraftLoop


@dataclass
class ChainState:
    cache: KVCache  # the prompt and the emitted tokens except the root
    root: torch.Tensor  # [1] the last emitted token: fed at the next step, not in the cache yet
    history: list[int]  # the prompt and the emitted tokens, the root last (what drafts read)
    budget: int  # len(prompt) + max_new_tokens: no step needs tokens past it
    drafted: int = 0  # the last step's draft length


def accept_chain(draft: list[int], predicted: list[int]) -> int:
    """How many leading draft tokens equal the target's prediction at their parent (predicted[i]:
    the target's token after the root's i-th successor, predicted[0] after the root itself)."""
    n = 0
    while n < len(draft) and draft[n] == predicted[n]:
        n += 1
    return n


class ChainDecoder(DraftLoop):
    """The DraftLoop's phases for a chain over a dynamic cache; a subclass drafts (`draft`) and
    may commit its own state after verification (`committed`)."""

    state_type = ChainState  # a drafter's own state adds fields with defaults

    def __init__(self, model: GPTNeo, max_draft: int):
        if max_draft < 1:
            raise ValueError(f"a draft of at least 1 token, got {max_draft}")
        self.model = model
        self.device = model.lm_head.weight.device
        self.limit = model.config.max_position_embeddings
        self.depth, self.nodes_per_depth, self.full_size = max_draft, [1] * max_draft, max_draft + 1

    # -- what a chain drafter supplies ------------------------------------------------------------

    def new_state(self, cache: KVCache, root: torch.Tensor, prompt: list[int], max_new_tokens: int) -> ChainState:
        return self.state_type(cache, root, prompt + [int(root)], len(prompt) + max_new_tokens)

    def draft(self, state: ChainState, length: int) -> torch.Tensor:
        """At most `length` draft tokens after the root ([d] long on the device, d may be 0)."""
        raise NotImplementedError

    def committed(self, state: ChainState, accepted: int) -> None:
        """After the commit: history holds the step's emitted tokens (a drafter's own rollback)."""

    # -- the phases ---------------------------------------------------------------------------------

    def start(self, prompt: list[int], max_new_tokens: int) -> ChainState:
        """The prefill: the root is the target's argmax after the prompt."""
        cache = self.model.new_cache()
        logits = self.model(torch.tensor([prompt], device=self.device), cache)
        return self.new_state(cache, logits[0, -1:].argmax(-1), prompt, max_new_tokens)

    def room(self, state: ChainState) -> int:
        """The longest useful draft: tokens past max_new_tokens, or past the model's last position,
        could never be emitted."""
        past = len(state.cache)
        return max(0, min(self.depth, state.budget - len(state.history) - 1, self.limit - 1 - past))

    def step_inputs(self, state: ChainState):
        """The chain [root, draft...] for the forward."""
        draft = self.draft(state, self.room(state))
        state.drafted = draft.shape[0]
        return (torch.cat([state.root, draft]),)

    def forward(self, state: ChainState, ids: torch.Tensor):
        """The plain causal forward over the chain, appended to the cache: logits [1 + d, V]."""
        return (self.model(ids[None], state.cache)[0],)

    def verify(self, state: ChainState, ids: torch.Tensor, logits: torch.Tensor) -> tuple[list[int], int]:
        """Accept the longest verified prefix of the draft, emit it and the correction, keep their
        keys/values (the correction is the next root, fed next step)."""
        predicted = logits.argmax(-1)
        d = state.drafted
        verdict = torch.cat([ids[1:], predicted]).tolist()  # the step's one host sync
        draft, predicted_host = verdict[:d], verdict[d:]
        accepted = accept_chain(draft, predicted_host)
        past = len(state.cache) - (d + 1)
        state.cache.keep(past + accepted + 1)  # prefix, root, accepted draft tokens
        state.root = predicted[accepted: accepted + 1]
        new = predicted_host[: accepted + 1]
        state.history.extend(new)
        self.committed(state, accepted)
        return new, accepted

    def verified_depths(self, state: ChainState) -> list[int] | None:
        """A full-length draft counts at the end; a shorter one (no match, the end in sight) now."""
        return None if state.drafted == self.depth else list(range(1, state.drafted + 1))
