"""Two-model speculative decoding (Leviathan et al. 2023; Chen et al. 2023), greedy, batch 1.

A small draft GPT-Neo with the target's tokenizer drafts k tokens one by one over its own KV
cache; the target verifies them as a chain in one forward (chain.py). Both caches then roll back
to the accepted prefix: the target's to prefix + root + accepted tokens, the draft's to the tokens
it fed whose place in the history the target confirmed. The draft never fed its last drafted token
nor the correction, so its next step first feeds the history it lacks (the correction, and the
last draft token when all k were accepted), then drafts on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.gpt_neo import GPTNeo, KVCache
from .chain import ChainDecoder, ChainState

DEFAULT_K = 4  # the draft length of Leviathan et al.'s and Chen et al.'s common settings (γ = 3..5)


@dataclass
class DraftState(ChainState):
    draft_cache: KVCache | None = None  # a prefix of the history (set by new_state)


def check_draft(target: GPTNeo, draft: GPTNeo) -> None:
    """The draft can stand in for the target's tokens and positions, or ValueError saying why."""
    t, d = target.config, draft.config
    if t.vocab_size != d.vocab_size:
        raise ValueError(f"the draft model has {d.vocab_size} tokens and the target {t.vocab_size}: a draft "
                         "must share its target's tokenizer")
    if d.max_position_embeddings < t.max_position_embeddings:
        raise ValueError(f"the draft model has {d.max_position_embeddings} positions, fewer than the "
                         f"target's {t.max_position_embeddings}")


def fill_cache(model: GPTNeo, ids: torch.Tensor, cache: KVCache) -> None:
    """Feed `ids` ([1, T]) into the cache without the LM head (no logits are needed)."""
    positions = torch.arange(len(cache), len(cache) + ids.shape[1], device=ids.device)
    model.run_blocks(model.embed(ids, positions), model.masks(len(cache), positions), cache)


class DraftModelDecoder(ChainDecoder):
    """The chain decoder whose draft is the draft model's greedy continuation."""

    state_type = DraftState

    def __init__(self, target: GPTNeo, draft: GPTNeo, k: int = DEFAULT_K):
        check_draft(target, draft)
        super().__init__(target, int(k))
        self.draft_model = draft

    def new_state(self, cache, root, prompt, max_new_tokens) -> DraftState:
        """After the target's prefill, the draft's: its cache gets the prompt."""
        state = super().new_state(cache, root, prompt, max_new_tokens)
        state.draft_cache = self.draft_model.new_cache()
        fill_cache(self.draft_model, torch.tensor([prompt], device=self.device), state.draft_cache)
        return state

    def draft(self, state: DraftState, length: int) -> torch.Tensor:
        """`length` draft-model forwards: the history it lacks (the root at least), then its own
        tokens; each argmax stays on the device as the next input."""
        if length == 0:
            return torch.empty(0, dtype=torch.long, device=self.device)
        cache = state.draft_cache
        ids = torch.tensor([state.history[len(cache):]], device=self.device)
        drafted = []
        for _ in range(length):
            ids = self.draft_model(ids, cache)[:, -1:].argmax(-1)
            drafted.append(ids)
        return torch.cat(drafted, dim=1)[0]

    def committed(self, state: DraftState, accepted: int) -> None:
        """The draft cache keeps the history before this step and the accepted draft tokens it fed."""
        before = len(state.history) - (accepted + 1)  # the history's length when the step drafted
        if len(state.draft_cache) > before + accepted:
            state.draft_cache.keep(before + accepted)
