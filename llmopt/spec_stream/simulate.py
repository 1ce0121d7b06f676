"""Simulated drafts for Speculative Streaming: tokens/s as a function of the acceptance ratio.

`SimulatedDraftDecoder` is the real decoder (same forward, same verification by the main stream,
same KV commit) except that the draft tokens are replaced after the streams have drafted them:
the top-1 chain gets the TRUE greedy continuation after the root, each token kept with
probability `accuracy` and otherwise replaced by a different token. The output therefore still
equals plain greedy decoding, and only the acceptance is controlled. Results made with it are
simulations (records say `simulated: True`), never measurements of the trained streams.

Choices:
- Top-1 chain: in `DraftTree`'s depth-first layout node d (d = 1..D) is the chain's depth-d node
  (node 0 is the root). At a step with n tokens emitted so far the root is continuation[n - 1]
  and the chain's depth-d token should be continuation[n - 1 + d]. n = len(cache) - len(prompt)
  + 1, since the cache holds the prompt and every emitted token but the root (see decode.State).
- A corrupted token is (true + 1 + r) % V with r uniform in [0, V//2 - 1): never the true token.
- Every other node of rank r >= 1 gets (true + V//2 + r) % V for the true token at its depth:
  guaranteed wrong and distinct from its siblings (so acceptance depends only on `accuracy`,
  acceptance per depth ≈ accuracy^d). Rank-0 nodes off the chain hang under a wrong node and
  copy the chain's value at their depth; they can never be accepted.
- Keep/corrupt decisions are drawn once per (n, depth) for a continuation (seeded), into a
  table on the device built by `set_continuation`, outside the decoding loop: a step only slices
  row n (no host sync, no host->device copy). The streams' own draft (top-k) is still computed,
  so a step costs what a real step costs.
- Beyond the end of the continuation the "true" token is 0 (any token does: verification decides).
- `SimulatedStaticTreeDecoder` does the same inside the captured step of `ss+graphs` (static.py):
  the tables are copied into one buffer at a fixed address, and the step picks its row from the
  cache position on the device, so the simulation is captured with the step and costs what the
  real captured step costs, plus one row lookup.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .decode import Decoder, State
from .model import SpecStreamModel
from .static import StaticTreeDecoder
from .tree import DraftTree


class SimulatedDrafts:
    """The draft tables of a tree: which token each non-root node holds at each step of a
    continuation, each chain token true with probability `accuracy`."""

    def __init__(self, tree: DraftTree, vocab: int, accuracy: float = 1.0, seed: int = 0, device=None):
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
        if vocab < 2 * tree.kmax + 2:
            raise ValueError(f"a vocabulary of {vocab} is too small for top-{tree.kmax} siblings")
        self.tree, self.vocab, self.accuracy, self.seed, self.device = tree, vocab, float(accuracy), int(seed), device
        self._depth = tree.depths[1:].cpu()  # [size - 1] depth of each non-root node
        self._rank = (tree.pick % tree.kmax).cpu()  # [size - 1] rank among siblings

    def table(self, continuation: Sequence[int], seed: int | None = None) -> torch.Tensor:
        """[len(continuation) + 1, size - 1] on the device: row n holds the non-root draft tokens of
        the step taken after n emitted tokens."""
        D, V = self.tree.depth, self.vocab
        rows = len(continuation) + 1
        gen = torch.Generator().manual_seed(self.seed if seed is None else int(seed))
        cont = torch.zeros(rows + D, dtype=torch.long)  # padded with token 0 past the end
        cont[1: 1 + len(continuation)] = torch.tensor(list(continuation), dtype=torch.long)
        # cont[n + d] = continuation[n - 1 + d]: the true depth-d token when n tokens are out
        n = torch.arange(rows)[:, None]
        true = cont[n + torch.arange(1, D + 1)[None, :]]  # [rows, D]
        keep = torch.rand(rows, D, generator=gen) < self.accuracy
        shift = torch.randint(0, max(V // 2 - 1, 1), (rows, D), generator=gen)
        chain = torch.where(keep, true, (true + 1 + shift) % V)  # [rows, D]
        d = self._depth - 1
        wrong = (true[:, d] + V // 2 + self._rank) % V  # [rows, size - 1]
        table = torch.where(self._rank == 0, chain[:, d], wrong)
        return table.to(self.device)


class SimulatedDraftDecoder(Decoder):
    def __init__(self, model: SpecStreamModel, topk: Sequence[int], continuation: Sequence[int] | None = None,
                 accuracy: float = 1.0, seed: int = 0, **decoder_options):
        super().__init__(model, topk, **decoder_options)  # e.g. prune, where Decoder takes it
        self.drafts = SimulatedDrafts(self.tree, model.base.config.vocab_size, accuracy, seed, self.device)
        self.prompt_len = 0
        self.table = None
        if continuation is not None:
            self.set_continuation(continuation)

    def set_continuation(self, continuation: Sequence[int] | torch.Tensor, seed: int | None = None) -> None:
        """The greedy continuation of the next prompt (list of tokens), or a table from `drafts.table`."""
        self.table = continuation if isinstance(continuation, torch.Tensor) else self.drafts.table(continuation, seed)

    def start(self, prompt: list[int], max_new_tokens: int | None = None) -> State:
        if self.table is None:
            raise RuntimeError("set_continuation() before decoding")
        self.prompt_len = len(prompt)
        return super().start(prompt, max_new_tokens)

    def step_inputs(self, state: State):
        ids, positions, masks = super().step_inputs(state)
        n = len(state.cache) - self.prompt_len + 1  # tokens emitted so far (the root is not cached)
        ids[1:] = self.table[min(n, len(self.table) - 1)]
        return ids, positions, masks


class SimulatedStaticTreeDecoder(StaticTreeDecoder):
    """`ss+graphs`'s captured step with simulated drafts: the step's table row replaces the streams'
    draft on the device (the streams still draft, so the step costs what it costs)."""

    def __init__(self, model: SpecStreamModel, topk: Sequence[int], max_len: int | None = None,
                 pad_rows: int | None = None, attention: str | None = None, accuracy: float = 1.0, seed: int = 0):
        super().__init__(model, topk, max_len, pad_rows, attention)
        self.drafts = SimulatedDrafts(self.tree, model.base.config.vocab_size, accuracy, seed, self.device)
        # every step's draft row at a fixed address: as many rows as a generation can take steps
        self.table = torch.zeros(self.limit + 1, self.tree.size - 1, dtype=torch.long, device=self.device)
        self.prompt_len = torch.zeros(1, dtype=torch.long, device=self.device)

    def static_tensors(self) -> list[torch.Tensor]:
        return [*super().static_tensors(), self.table, self.prompt_len]

    def set_continuation(self, continuation: Sequence[int] | torch.Tensor, seed: int | None = None) -> None:
        """Copy the next prompt's table into the buffer; rows past its end repeat its last row."""
        table = continuation if isinstance(continuation, torch.Tensor) else self.drafts.table(continuation, seed)
        rows = min(len(table), len(self.table))
        self.table[:rows].copy_(table[:rows])
        self.table[rows:].copy_(table[rows - 1])

    def start(self, prompt: list[int], max_new_tokens: int) -> State:
        self.prompt_len.fill_(len(prompt))
        return super().start(prompt, max_new_tokens)

    def draft_tokens(self) -> torch.Tensor:
        draft = super().draft_tokens()  # the streams' top-k still runs (and is captured with the step)
        n = (self.cache.pos - self.prompt_len + 1).clamp(0, len(self.table) - 1)  # tokens out so far
        return torch.cat([draft[:1], self.table.index_select(0, n)[0]])
