"""Greedy Speculative Streaming decoding, batch 1: one forward pass verifies a draft and drafts anew.

The prefill's main stream gives the first token (the root) and its streams the first draft. Each
step feeds [root, draft tree] (positions = cache length + depth, tree mask); the main stream there
verifies the draft, and the streams of the last accepted node give the next one. A step emits the
accepted draft tokens plus the main stream's token after them (the next root), and keeps the
accepted nodes' keys/values in the cache. Per step: one host sync (reading the verdict; the Clock's
timing syncs aside), no Python loop over tree nodes, masks sliced from constants built once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..models.gpt_neo import KVCache
from ..strategies.base import Clock, Generation
from .model import SpecStreamModel
from .tree import DraftTree


@dataclass
class State:
    cache: KVCache  # the prompt and the emitted tokens except the root
    root: torch.Tensor  # [1] the last emitted token: fed at the next step, not in the cache yet
    stream_logits: torch.Tensor  # [γ, V] the streams at the root's position: the next draft


class Decoder:
    def __init__(self, model: SpecStreamModel, topk: Sequence[int]):
        if len(topk) > model.gamma:
            raise ValueError(f"a tree of depth {len(topk)} needs {len(topk)} streams; the model has {model.gamma}")
        self.model = model
        self.device = model.base.lm_head.weight.device
        self.tree = tree = DraftTree(topk, self.device)
        base = model.base
        self.limit = base.config.max_position_embeddings
        # A step's masks are [cache part | new part]. The new part (tree nodes and their streams)
        # never changes. The cache part depends on the cache length only through the local
        # window: right-aligned against the new part, column c of the constant holds the cache
        # entry `limit - c` positions before the root, so a step's masks are a slice (no copy).
        new_part = model.stream_masks(base.masks(0, tree.depths, tree.ancestors), 0, tree.size)
        row_depths = torch.cat([tree.depths, tree.depths.repeat_interleave(model.gamma)])
        back = torch.arange(self.limit, 0, -1, device=self.device)
        cache_part = {"global": torch.ones(len(row_depths), self.limit, dtype=torch.bool, device=self.device),
                      "local": row_depths[:, None] + back[None, :] < base.window}
        self.masks = {kind: torch.cat([cache_part[kind], new], dim=1) for kind, new in new_part.items()}

    def step_masks(self, past: int) -> dict:
        return {kind: m[:, self.limit - past:] for kind, m in self.masks.items()}

    def start(self, prompt: list[int]) -> State:
        """Prefill the prompt, with streams at its last position only."""
        cache = self.model.base.new_cache()
        ids = torch.tensor([prompt], device=self.device)
        main, streams = self.model(ids, cache, stream_start=len(prompt) - 1)
        return State(cache, main[0, -1:].argmax(-1), streams[0, -1])

    def step_inputs(self, state: State):
        """The draft tree's ids [size], positions [size] and masks for the next forward."""
        past = len(state.cache)
        ids = self.tree.draft(state.root, state.stream_logits)
        positions = self.tree.depths + past
        if past + self.tree.depth >= self.limit:
            # nodes past the last position could only give tokens beyond max_new_tokens (checked
            # in generate), so any position does for them
            positions = positions.clamp(max=self.limit - 1)
        return ids, positions, self.step_masks(past)

    def verify(self, state: State, ids, main, streams) -> tuple[list[int], int]:
        """Accept the longest verified path, commit it and set up the next draft. Returns the
        emitted tokens (the accepted draft tokens, then the main stream's next token) and the
        number of accepted draft tokens."""
        predicted = main[0].argmax(-1)
        last = self.tree.accept(ids, predicted)
        verdict = torch.cat([last.view(1), predicted]).tolist()  # the step's one host sync
        last, predicted_host = verdict[0], verdict[1:]
        path = self.tree.paths[last]
        accepted = len(path) - 1
        past = len(state.cache) - self.tree.size
        if last == accepted:  # the top-1 chain (nodes 0..accepted): a slice keeps it in place
            if accepted + 1 < self.tree.size:  # else the whole tree was accepted: nothing to drop
                state.cache.keep(past + accepted + 1)
        else:
            state.cache.keep(past, self.tree.path_index[last] + past)
        state.root = predicted[last: last + 1]
        state.stream_logits = streams[0, last]
        # an accepted token equals the prediction at its parent: the path's predictions are the output
        return [predicted_host[i] for i in path], accepted

    def generate(self, prompt: list[int], max_new_tokens: int, eos_id: int | None, clock: Clock) -> Generation:
        """Greedy decoding; stops at EOS (kept) or max_new_tokens, truncating a step's tokens there."""
        tree = self.tree
        out = Generation(tokens=[], forward_calls=0)
        accepted_per_step, accepted_per_depth = [], [0] * tree.depth
        out.stats = {"accepted_per_step": accepted_per_step, "accepted_per_depth": accepted_per_depth,
                     "proposed_per_depth": [0] * tree.depth}
        if max_new_tokens <= 0:
            return out
        if len(prompt) + max_new_tokens - 1 > self.limit:
            raise ValueError(f"{len(prompt)} prompt + {max_new_tokens} new tokens exceed the model's "
                             f"{self.limit} positions")
        tokens = out.tokens
        start = clock()
        state = self.start(prompt)
        t_forward = clock()
        tokens.append(int(state.root))
        now = clock()
        out.forward_calls, out.forward_s, out.verify_s, out.ttft_s = 1, t_forward - start, now - t_forward, now - start
        done = tokens[-1] == eos_id or len(tokens) >= max_new_tokens
        while not done:
            ids, positions, masks = self.step_inputs(state)
            t_prepared = clock()
            main, streams = self.model(ids[None], state.cache, positions, masks=masks)
            t_forward = clock()
            new, accepted = self.verify(state, ids, main, streams)
            for token in new:
                tokens.append(token)
                if token == eos_id or len(tokens) >= max_new_tokens:
                    done = True
                    break
            t_verified = clock()
            out.prepare_s += t_prepared - now
            out.forward_s += t_forward - t_prepared
            out.verify_s += t_verified - t_forward
            now = t_verified
            out.forward_calls += 1
            accepted_per_step.append(accepted)
            for d in range(accepted):
                accepted_per_depth[d] += 1
        steps = len(accepted_per_step)
        out.stats["proposed_per_depth"] = [steps * n for n in tree.nodes_per_depth]
        return out
