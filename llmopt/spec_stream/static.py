"""Speculative Streaming's verify-and-draft step with static shapes: what `ss+graphs` captures.

The dynamic Decoder (decode.py) grows its cache by concatenation and commits on the host's word.
Here a whole step runs on the device over a StaticKVCache, so it can be captured once (per bucket
of cache slots) and replayed: draft the tree from the streams' top-k; write the tree's keys/values
at slots pos.. and its streams' after them (scratch: the mask hides them from the main stream);
forward; accept the longest verified path; move the accepted path's keys/values to pos..
(the top-1 chain is already there); advance pos; keep the next root and the streams that draft the
next tree. The host reads `verdict` ([the last accepted node, the main stream's prediction at every
node]) once per step to emit tokens. Tree pruning has host-dependent shapes: not offered here.

The step is one graph for torch.compile (fullgraph, see capture.py): no host reads, no Python
branch on a tensor's value, every tensor it reads at a fixed address (`static_tensors`), the write
slots computed into a preallocated index.

`StaticTreeStep` holds what does not depend on who drafts the tree (the cache, masks, commit and
phases): Medusa's static step (medusa.py, `medusa+graphs`) reuses it with heads instead of streams.

Padding (`pad_rows`, off by default): round the tree's node rows (and so its stream rows) up to a
multiple, with padding nodes that see only themselves and the committed slots, are seen by no tree
node and are never accepted or committed (their keys/values land in the scratch slots past the
tree). Why: a profile of the 125m step on CUDA found the fp32 MLP down-projection over 15 tree rows
on a slow SIMT cuBLAS kernel (83 µs against 16 µs for the up-projection). Off by default because
that one profile is the only evidence: fp32 without TF32 never runs on tensor cores, so whether 16
rows get a faster kernel than 15 is for a GPU run to show (size_sweep / profile_step, pad_rows=16).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..capture import GraphRunner
from ..models.attention import ATTENTION, masks_for
from ..models.static_cache import StaticKVCache
from .decode import Loop, State, prefill
from .model import SpecStreamModel

MASKED_KERNELS = ("eager", "sdpa", "sdpa_efficient", "sdpa_cudnn", "flex")  # tree masks are arbitrary: no flash kernel takes one
DEFAULT_PAD_ROWS = 1  # no padding (see the module docstring)


def check_pad_rows(pad_rows: int | None) -> int:
    """The multiple the tree step's node rows are padded to (1: none; None: the default), or ValueError."""
    pad = DEFAULT_PAD_ROWS if pad_rows is None else int(pad_rows)
    if pad < 1:
        raise ValueError(f"pad_rows, the multiple the tree step's rows are padded to, must be >= 1, got {pad_rows}")
    return pad


class StaticTreeStep:
    """What a tree's verify step over a static cache needs whoever drafts the tree: Speculative
    Streaming's streams (StaticTreeDecoder, below) or Medusa's heads (medusa.StaticMedusaDecoder).
    The cache with room for a step's rows past the last position, the step's slots and mask columns,
    the commit of the accepted path on the device, the fixed-address state carried between steps
    (`root`, `stream_logits`: the next draft's logits, `verdict`), and the DraftLoop's phases around
    `step(length)`, which a subclass writes. `set_up_static` is called once its tree, `rows` (the
    rows a layer writes) and `row_depths` are known."""

    runner: GraphRunner | None

    def set_up_static(self, base, own_masks: dict, max_len: int | None, attention: str | None = None) -> None:
        """`own_masks`: which of the step's own rows each row sees, per layer kind ([rows, rows]);
        `attention`: the step's kernel (default the model's, which the prefill runs)."""
        self.attention = attention or base.attention
        if self.attention not in MASKED_KERNELS:
            raise ValueError(f"the tree step needs an attention kernel that takes a mask "
                             f"({', '.join(MASKED_KERNELS)}), not {self.attention!r}")
        self.attend = ATTENTION[self.attention]
        tree, device, rows = self.tree, self.device, len(self.row_depths)
        self.base, self.rows = base, rows
        self.cache = StaticKVCache(base, (max_len or self.limit) + rows)  # room for the last step's rows
        self.cache.index = torch.zeros(rows, dtype=torch.long, device=device)  # the step's slots, set by step
        self.slots = torch.arange(self.cache.max_len, device=device)
        self.offsets = torch.arange(rows, device=device)
        # the step's own columns, plus an all-hidden one that stands for every slot outside them
        hidden = torch.zeros(rows, 1, dtype=torch.bool, device=device)
        self.new_part = {kind: torch.cat([m, hidden], dim=1) for kind, m in own_masks.items()}
        # the nodes of each path, padded to depth + 1 with its last node: the extra moves land in
        # slots past the new pos, which the next step overwrites
        self.paths = torch.tensor([p + p[-1:] * (tree.depth + 1 - len(p)) for p in tree.paths], device=device)
        # state carried between steps, at fixed addresses
        self.root = torch.zeros(1, dtype=torch.long, device=device)
        # the logits that draft the next tree: one row per stream (ss) or head (medusa), `gamma` of them
        self.stream_logits = torch.zeros(self.model.gamma, base.config.vocab_size, dtype=base.lm_head.weight.dtype,
                                         device=device)
        self.verdict = torch.zeros(1 + tree.size, dtype=torch.long, device=device)
        self.runner = None

    def static_tensors(self) -> list[torch.Tensor]:
        """Every tensor the step reads or writes that is no model weight: fixed addresses for
        torch.compile (one it reads but is not told of is copied in at every replay)."""
        tree = self.tree
        return [self.root, self.stream_logits, self.verdict, self.slots, self.offsets, self.paths,
                self.row_depths, *self.new_part.values(), tree.depths, tree.pick, tree.parent_index,
                tree.ancestors, tree.depth_scores, *self.cache.static_tensors()]

    def masks(self, length: int) -> dict:
        """[rows, length] per layer kind: committed slots (< pos; within the window of each row's
        position on local layers) and the step's own columns at pos.. (additive for a kernel that
        reads them so: converted here once per kind, not once per layer)."""
        pos, rows = self.cache.pos, self.rows
        slots = self.slots[:length]
        offset = slots - pos
        column = torch.where((offset >= 0) & (offset < rows), offset, rows)
        committed = (slots < pos)[None, :]
        window = committed & (pos + self.row_depths[:, None] - slots[None, :] < self.base.window)
        masks = {kind: (window if kind == "local" else committed) | new.index_select(1, column)
                 for kind, new in self.new_part.items()}
        return masks_for(self.attention, masks, self.base.lm_head.weight.dtype)

    def begin_step(self, length: int) -> None:
        """A step's first moves: the bucket it attends over, the slots its rows write."""
        self.cache.length = length
        torch.add(self.cache.pos, self.offsets, out=self.cache.index)

    def positions(self, depths: torch.Tensor) -> torch.Tensor:
        """The positions of nodes at `depths` below the root; nodes past the last position could
        only give tokens beyond max_new_tokens, so any position does for them."""
        return (self.cache.pos + depths).clamp(max=self.limit - 1)

    def commit(self, predicted: torch.Tensor, last: torch.Tensor) -> None:
        """Keep the accepted path ending at node `last` ([1]): its keys/values to pos.., pos past it,
        the next root; the verdict for the host. `predicted` [size]: the token after each node."""
        tree, cache = self.tree, self.cache
        pos = cache.pos
        cache.move(pos + self.paths.index_select(0, last)[0], pos + self.offsets[: tree.depth + 1])
        pos.add_(tree.depths.index_select(0, last) + 1)
        self.root.copy_(predicted.index_select(0, last))
        self.verdict[:1].copy_(last)
        self.verdict[1:].copy_(predicted)

    def prefill(self, prompt: list[int]) -> State:
        """The prompt through the model over a dynamic cache: its cache, the root and the first draft's logits."""
        raise NotImplementedError

    # the DraftLoop's phases
    def start(self, prompt: list[int], max_new_tokens: int) -> State:
        """The prefill, copied into the static cache and the step's fixed-address state."""
        state = self.prefill(prompt)
        self.cache.load(state.cache)
        self.root.copy_(state.root)
        self.stream_logits.copy_(state.stream_logits)
        total = len(prompt) + max_new_tokens - 1 + self.rows  # the last step's rows included
        self.length = self.runner.length_for(total) if self.runner else total
        return State(self.cache, state.root, self.stream_logits)

    def step_inputs(self, state) -> tuple:
        return (None,)  # the draft and the masks are part of the captured step

    def forward(self, state, ids=None, *_) -> tuple:
        if self.runner is None:
            self.step(self.length)
        else:
            self.runner(self.length)
        return ()  # the verdict is in self.verdict

    def verify(self, state, ids=None, *_) -> tuple[list[int], int]:
        """The step accepted and committed on the device: read its verdict, the tokens it emits."""
        return self.read_verdict(self.verdict.tolist())  # the step's one host sync

    def room_ahead(self, prompt_len: int, max_new_tokens: int) -> bool:
        """The last step may emit `depth` tokens past max_new_tokens, and a step queued after it
        writes its rows after them: do they fit the cache's slots?"""
        return prompt_len + max_new_tokens - 1 + self.depth + self.rows <= self.cache.max_len

    def read_verdict(self, verdict: list[int]) -> tuple[list[int], int]:
        last, *predicted = verdict
        path = self.tree.paths[last]
        # an accepted token equals the prediction at its parent: the path's predictions are the output
        return [predicted[i] for i in path], len(path) - 1


class StaticTreeDecoder(StaticTreeStep, Loop):
    """`runner` (set by the caller: a capture.GraphRunner over this decoder) replays step(length)
    and says which bucket of slots a generation needs; without one, step runs uncaptured.
    `pad_rows`: pad the tree's node rows to a multiple of it (1: no padding); `attention`: the
    step's kernel (MASKED_KERNELS; default the model's)."""

    def __init__(self, model: SpecStreamModel, topk: Sequence[int], max_len: int | None = None,
                 pad_rows: int | None = None, attention: str | None = None):
        base = model.base
        super().__init__(model, topk)
        tree, device = self.tree, self.device
        self.pad_rows = check_pad_rows(pad_rows)
        self.nodes = nodes = -(-tree.size // self.pad_rows) * self.pad_rows  # tree nodes, then padding
        pad = nodes - tree.size
        self.depths = torch.cat([tree.depths, tree.depths.new_zeros(pad)])  # padding: at the root's position
        self.pad_ids = torch.zeros(pad, dtype=torch.long, device=device)  # any token: never accepted
        if pad:  # the Loop's masks and row depths, over the padded nodes
            sees = torch.block_diag(tree.ancestors, torch.eye(pad, dtype=torch.bool, device=device))
            self.tree_masks = model.stream_masks(base.masks(0, self.depths, sees), 0, nodes)
            self.row_depths = torch.cat([self.depths, self.depths.repeat_interleave(model.gamma)])
        self.set_up_static(base, self.tree_masks, max_len, attention)

    def static_tensors(self) -> list[torch.Tensor]:
        return [*super().static_tensors(), self.depths, self.pad_ids]

    def prefill(self, prompt: list[int]) -> State:
        return prefill(self.model, prompt)

    def draft_tokens(self) -> torch.Tensor:
        """The tree's tokens [size]: the root and the streams' top-k (a simulation replaces the latter)."""
        return self.tree.draft(self.root, self.stream_logits)

    def step(self, length: int) -> None:
        """One verify-and-draft step attending over `length` slots, all on the device."""
        model, base, tree, cache = self.model, self.base, self.tree, self.cache
        self.begin_step(length)
        draft = self.draft_tokens()
        ids = torch.cat([draft, self.pad_ids]) if self.nodes > tree.size else draft
        masks = self.masks(length)
        x = base.embed(ids[None], self.positions(self.depths))  # padding nodes at the root's position
        x = base.run_blocks(x, {kind: m[: self.nodes] for kind, m in masks.items()}, cache, range(self.split),
                            self.attend)
        h = model.add_streams(x)
        for i in range(self.split, len(base.transformer.h)):
            h = model.msa_block(i, h, 0, masks, cache, self.attend)
        main, streams = model.split_rows(h, self.nodes, 0)
        predicted = base.head(main[0]).argmax(-1)[: tree.size]  # padding nodes predict nothing
        last = tree.accept(draft, predicted).view(1)
        self.stream_logits.copy_(model.stream_logits(streams, last))  # only the drafting node's streams
        self.commit(predicted, last)
