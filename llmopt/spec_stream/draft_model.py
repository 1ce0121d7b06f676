"""Two-model speculative decoding (Leviathan et al. 2023; Chen et al. 2023), greedy, batch 1.

A small draft GPT-Neo with the target's tokenizer drafts k tokens one by one over its own KV
cache; the target verifies them as a chain in one forward (chain.py). Both caches then roll back
to the accepted prefix: the target's to prefix + root + accepted tokens, the draft's to the tokens
it fed whose place in the history the target confirmed. The draft never fed its last drafted token
nor the correction, so its next step first feeds the history it lacks (the correction, and the
last draft token when all k were accepted), then drafts on.

`sps+graphs` (StaticDraftModelDecoder) runs a whole step on the device over two static caches, so
it is captured once per bucket: the draft model feeds the history's last two tokens at positions
pos - 1 and pos (the first one again when the draft had it already: the same key at the same
slot, which keeps the shapes fixed), drafts k tokens, and the target verifies them as
static_chain.py's chain; the draft's cache then holds the history but its last two tokens by
construction, whatever was accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.gpt_neo import GPTNeo, KVCache
from ..models.static_cache import StaticKVCache
from .chain import ChainDecoder, ChainState
from .static_chain import StaticChainDecoder, causal_masks

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


class StaticDraftModelDecoder(StaticChainDecoder):
    """Draft-model speculative decoding with one static, capturable step (`sps+graphs`): `runner`
    (set by the caller, a capture.GraphRunner) replays step(length); without one it runs uncaptured."""

    def __init__(self, target: GPTNeo, draft: GPTNeo, k: int = DEFAULT_K, max_len: int | None = None):
        check_draft(target, draft)
        super().__init__(target, int(k), max_len)
        self.draft_model = draft
        device = self.device
        self.draft_cache = StaticKVCache(draft, self.cache.max_len)
        self.draft_cache.index = torch.zeros(2, dtype=torch.long, device=device)
        self.pair = torch.arange(2, device=device)
        self.last_two = torch.zeros(2, dtype=torch.long, device=device)  # the history's last two tokens

    def static_tensors(self) -> list[torch.Tensor]:
        return [*super().static_tensors(), self.pair, self.last_two, *self.draft_cache.static_tensors()]

    def _draft_forward(self, ids: torch.Tensor, first: torch.Tensor, length: int) -> torch.Tensor:
        """The draft model over `ids` ([T]) at positions first.. (written to those slots): its argmax after the last."""
        draft, cache = self.draft_model, self.draft_cache
        # pos is at least 1 once a prompt is in, but the runner warms the step up at pos 0: no slot -1
        rows = (first + self.pair[: ids.shape[0]]).clamp(min=0)
        cache.index[: ids.shape[0]].copy_(rows)
        positions = rows.clamp(max=self.limit - 1)
        x = draft.run_blocks(draft.embed(ids[None], positions), causal_masks(positions, self.slots[:length], draft.window), cache)
        return draft.head(x[:, -1])[0].argmax(-1, keepdim=True)

    def step(self, length: int) -> None:
        """Draft k tokens with the draft model, verify them with the target, all on the device."""
        self.draft_cache.length = length
        pos = self.cache.pos
        token = self._draft_forward(self.last_two, pos - 1, length)
        drafted = [token]
        for i in range(1, self.depth):
            token = self._draft_forward(token, pos + i, length)
            drafted.append(token)
        self.ids.copy_(torch.cat([self.last_two[1:], *drafted]))
        predicted, accepted = self.verify_chain(length)
        # the new history ends with the chain's token at `accepted` (the root, or the last accepted
        # draft token) and the target's correction after it
        self.last_two.copy_(torch.cat([self.ids.index_select(0, accepted), predicted.index_select(0, accepted)]))

    # the DraftLoop's phases
    def start(self, prompt: list[int], max_new_tokens: int) -> ChainState:
        state = super().start(prompt, max_new_tokens)
        cache = self.draft_model.new_cache()
        fill_cache(self.draft_model, torch.tensor([prompt], device=self.device), cache)
        self.draft_cache.load(cache)
        self.last_two.copy_(torch.tensor(state.history[-2:]))
        return state

    def step_inputs(self, state: ChainState):
        """The draft is made on the device: only how much of it may count."""
        state.drafted = self.room(state)
        self.drafted.fill_(state.drafted)
        return (None,)
