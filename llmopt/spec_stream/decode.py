"""Greedy Speculative Streaming decoding, batch 1: one forward pass verifies a draft and drafts anew.

The prefill's main stream gives the first token (the root) and its streams the first draft. Each
step feeds [root, draft tree] (positions = cache length + depth, tree mask); the main stream there
verifies the draft, and the streams of the last accepted node give the next one. A step emits the
accepted draft tokens plus the main stream's token after them (the next root), and keeps the
accepted nodes' keys/values in the cache. Per step: one host sync (reading the verdict; the Clock's
timing syncs aside), no Python loop over tree nodes, masks sliced from constants built once.

Tree pruning (paper §3.2, `prune` > 0; off by default): after layer N - Ns the early-exit logits
(ln_f + LM head) at each node's parent estimate the probability of the node's token; a node below
the threshold is dropped with its subtree before the MSA layers, which then run on fewer nodes (and
their streams). The bottom layers cached the whole tree, the top ones only the kept nodes, so the
commit maps the accepted path to each layer's own positions: full-tree indices below, kept-node
indices above; afterwards every layer holds prefix + accepted path. Costs a second host sync per
step (the kept set's size decides the MSA layers' shapes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..models.gpt_neo import KVCache
from ..generation import Clock, Generation, ReadBehind
from .model import SpecStreamModel
from .tree import DraftTree


@dataclass
class State:
    cache: KVCache  # the prompt and the emitted tokens except the root (StaticKVCache: static.py)
    root: torch.Tensor  # [1] the last emitted token: fed at the next step, not in the cache yet
    stream_logits: torch.Tensor  # [γ, V] the streams at the root's position: the next draft
    pruned: "Pruned | None" = None  # the last forward's pruning, None if it kept the whole tree


@dataclass
class Pruned:
    """Which tree nodes the MSA layers of a step's forward kept (sorted, ancestors included)."""
    keep: torch.Tensor  # [size] bool
    kept: torch.Tensor  # [kept] long: the kept nodes, in the order of the MSA layers' rows
    nodes: list[int]  # the same, on the host
    where: list[int]  # node -> its row in the MSA layers (-1: pruned)
    split: int  # layers below `split` hold the whole tree, the others the kept nodes


def check_prune(prune: float) -> float:
    """The tree-pruning threshold, a probability (0 = off), or ValueError."""
    prune = float(prune)
    if not 0.0 <= prune <= 1.0:
        raise ValueError(f"prune, the pruning threshold, is a probability in [0, 1], got {prune}")
    return prune


class DraftLoop:
    """The decoding loop every speculative decoder shares (Speculative Streaming here, the peers'
    chains and heads in pld.py, sps.py, medusa.py): timing per phase, exact stops at EOS /
    max_new_tokens, acceptance statistics. A decoder supplies the phases, each under one name:
    start(prompt, max_new_tokens) -> state (prefill: the root, the first token, and the first draft);
    step_inputs(state) -> inputs (the draft: ids first, None where the step drafts on the
    device; timed as prepare_s); forward(state, *inputs) -> outputs (verifying the draft in one
    forward: forward_s); verify(state, ids, *outputs) -> (emitted tokens, accepted draft tokens)
    (evaluate the draft, commit the accepted path, set up the next draft: verify_s).

    And what its statistics count: `depth` (the deepest draft), `limit` (the model's positions),
    `nodes_per_depth` / `full_size` (the draft nodes per depth and all nodes, root included, of a
    whole draft), and verified_depths(state): the depths of the draft nodes of the last step that
    reached verification, or None when the whole draft did (counted once at the end: no per-step
    work on the common path)."""

    depth: int
    limit: int
    nodes_per_depth: list[int]
    full_size: int
    # a static decoder whose step drafts on the device may queue each step before the previous
    # verdict is read (generate_ahead): it has a `verdict` tensor, read_verdict and room_ahead
    queue_ahead: bool = False

    def verified_depths(self, state) -> list[int] | None:
        return None

    def read_verdict(self, verdict: list[int]) -> tuple[list[int], int]:
        """A static step's verdict, read back: the tokens it emits and the accepted draft tokens."""
        raise NotImplementedError

    def room_ahead(self, prompt_len: int, max_new_tokens: int) -> bool:
        """Whether a step queued after the last one fits the decoder's static cache."""
        raise NotImplementedError

    def generate(self, prompt: list[int], max_new_tokens: int, eos_id: int | None, clock: Clock) -> Generation:
        """Greedy decoding; stops at EOS (kept) or max_new_tokens, truncating a step's tokens there."""
        out = Generation(tokens=[], forward_calls=0)
        accepted_per_step, accepted_per_depth = [], [0] * self.depth
        # proposed_per_depth counts the drafted nodes that reached verification (tree pruning or a
        # short chain has fewer); kept_per_step: the nodes (root included) each step's forward verified
        proposed_per_depth, kept_per_step = [0] * self.depth, []
        whole_draft_steps = 0  # steps whose every node reached verification, counted in at the end
        out.stats = {"accepted_per_step": accepted_per_step, "accepted_per_depth": accepted_per_depth,
                     "proposed_per_depth": proposed_per_depth, "kept_per_step": kept_per_step}
        if max_new_tokens <= 0:
            return out
        if len(prompt) + max_new_tokens - 1 > self.limit:
            raise ValueError(f"{len(prompt)} prompt + {max_new_tokens} new tokens exceed the model's "
                             f"{self.limit} positions")
        tokens = out.tokens
        start = clock()
        state = self.start(prompt, max_new_tokens)
        t_forward = clock()
        tokens.append(int(state.root))
        now = clock()
        out.forward_calls, out.forward_s, out.verify_s, out.ttft_s = 1, t_forward - start, now - t_forward, now - start
        done = tokens[-1] == eos_id or len(tokens) >= max_new_tokens

        def emit(new: list[int]) -> bool:
            """A step's tokens, cut at EOS or max_new_tokens; True when the generation is done."""
            for token in new:
                tokens.append(token)
                if token == eos_id or len(tokens) >= max_new_tokens:
                    return True
            return False

        def count(accepted: int) -> None:
            nonlocal whole_draft_steps
            out.forward_calls += 1
            accepted_per_step.append(accepted)
            for d in range(accepted):
                accepted_per_depth[d] += 1
            verified = self.verified_depths(state)
            if verified is None:
                whole_draft_steps += 1
                kept_per_step.append(self.full_size)
            else:
                kept_per_step.append(1 + len(verified))
                for depth in verified:
                    proposed_per_depth[depth - 1] += 1

        if not done and self.queue_ahead and self.room_ahead(len(prompt), max_new_tokens):
            self.generate_ahead(state, max_new_tokens - len(tokens), emit, count, out, clock)
            done = True
        while not done:
            inputs = self.step_inputs(state)
            t_prepared = clock()
            outputs = self.forward(state, *inputs)
            t_forward = clock()
            new, accepted = self.verify(state, inputs[0], *outputs)
            done = emit(new)
            t_verified = clock()
            out.prepare_s += t_prepared - now
            out.forward_s += t_forward - t_prepared
            out.verify_s += t_verified - t_forward
            now = t_verified
            count(accepted)
        for d, n in enumerate(self.nodes_per_depth):
            proposed_per_depth[d] += whole_draft_steps * n
        return out

    def generate_ahead(self, state, remaining: int, emit, count, out: Generation, clock: Clock) -> None:
        """The steps after the prefill with each queued before the previous step's verdict is read
        (as generation.decode_ahead does for plain steps): each verdict is copied out behind its
        step (ReadBehind), so the host's turn overlaps the next step. The host knows the generation
        is done only from a verdict, so the step queued after the last one runs too and is dropped
        (`steps_past_end`), except where the tokens already read leave one to make, which the step
        being read surely makes. All of it is forward_s: there are no per-phase syncs."""
        verdicts = ReadBehind(self.verdict, remaining)
        made = len(out.tokens)  # tokens before this loop; a step emits at least one

        def queue(k: int) -> None:
            self.forward(state, *self.step_inputs(state))
            verdicts.copy(k, self.verdict)

        t0 = clock()
        queue(0)
        k, queued, done = 0, 1, False
        while not done:
            if len(out.tokens) - made + 1 < remaining:  # step k may leave tokens to make: queue k + 1
                queue(k + 1)
                queued += 1
            new, accepted = self.read_verdict(verdicts.read(k))
            done = emit(new)
            count(accepted)
            k += 1
        out.forward_s += clock() - t0  # waits for a step queued past the end: the user waits for it too
        out.stats["steps_past_end"] = queued - k


class Loop(DraftLoop):
    """The DraftLoop of Speculative Streaming's tree: the phases over a SpecStreamModel (a State
    each step; tree decoding is the forward). `state.pruned`, if a forward pruned the tree, says
    which nodes reached verification."""

    def __init__(self, model: SpecStreamModel, topk: Sequence[int]):
        """What every decoder derives from the model and the tree shape, once."""
        if len(topk) > model.gamma:
            raise ValueError(f"a tree of depth {len(topk)} needs {len(topk)} streams; the model has {model.gamma}")
        base = model.base
        self.model = model
        self.device = base.lm_head.weight.device
        self.tree = tree = DraftTree(topk, self.device)
        self.limit = base.config.max_position_embeddings  # the model's positions
        self.split = len(base.transformer.h) - model.num_stream_layers
        # a step's own mask columns (tree nodes, then their streams) never change, nor each row's depth
        self.tree_masks = model.stream_masks(base.masks(0, tree.depths, tree.ancestors), 0, tree.size)
        self.row_depths = torch.cat([tree.depths, tree.depths.repeat_interleave(model.gamma)])
        self.depth, self.nodes_per_depth, self.full_size = tree.depth, tree.nodes_per_depth, tree.size
        self.node_depths = [len(p) - 1 for p in tree.paths]

    def verified_depths(self, state: State) -> list[int] | None:
        """The kept nodes' depths after a pruned forward (pruning drops some), else None."""
        return None if state.pruned is None else [self.node_depths[n] for n in state.pruned.nodes[1:]]


def commit_tree(tree: DraftTree, state: State, predicted: torch.Tensor, last: torch.Tensor) -> tuple[list[int], int]:
    """After a forward over the whole tree: read the verdict (the step's one host sync), keep the
    accepted path's keys/values, set the next root. `predicted` [size]: the model's token after
    each node; `last` [1]: the accepted node (tree.accept). Returns the emitted tokens (the accepted
    draft tokens, then the model's token after them) and the number of accepted draft tokens."""
    verdict = torch.cat([last, predicted]).tolist()
    last, predicted_host = verdict[0], verdict[1:]
    path = tree.paths[last]
    accepted = len(path) - 1
    past = len(state.cache) - tree.size
    if last == accepted:  # the top-1 chain (nodes 0..accepted): a slice keeps it in place
        if accepted + 1 < tree.size:  # else the whole tree was accepted: nothing to drop
            state.cache.keep(past + accepted + 1)
    else:
        state.cache.keep(past, tree.path_index[last] + past)
    state.root = predicted[last: last + 1]
    # an accepted token equals the prediction at its parent: the path's predictions are the output
    return [predicted_host[i] for i in path], accepted


def prefill(model: SpecStreamModel, prompt: list[int]) -> State:
    """Prefill the prompt, with streams at its last position only: the root and the first draft."""
    cache = model.base.new_cache()
    ids = torch.tensor([prompt], device=model.base.lm_head.weight.device)
    main, streams = model(ids, cache, stream_start=len(prompt) - 1)
    return State(cache, main[0, -1:].argmax(-1), streams[0, -1])


class Decoder(Loop):
    """Over a dynamic KV cache, with optional tree pruning; the host reads one verdict per step."""

    def __init__(self, model: SpecStreamModel, topk: Sequence[int], prune: float = 0.0):
        """`prune`: tree-pruning threshold on the early-exit probability of a node's token given
        its parent (0 = off: every node of the tree reaches the MSA layers)."""
        super().__init__(model, topk)
        self.prune = check_prune(prune)
        # A step's masks are [cache part | tree part]. The cache part depends on the cache length
        # only through the local window: right-aligned against the tree part, column c of the
        # constant holds the cache entry `limit - c` positions before the root, so a step's masks
        # are a slice (no copy).
        rows = len(self.row_depths)
        back = torch.arange(self.limit, 0, -1, device=self.device)
        cache_part = {"global": torch.ones(rows, self.limit, dtype=torch.bool, device=self.device),
                      "local": self.row_depths[:, None] + back[None, :] < model.base.window}
        self.masks = {kind: torch.cat([cache_part[kind], new], dim=1) for kind, new in self.tree_masks.items()}

    def step_masks(self, past: int) -> dict:
        return {kind: m[:, self.limit - past:] for kind, m in self.masks.items()}

    def start(self, prompt: list[int], max_new_tokens: int | None = None) -> State:
        """The prefill (the dynamic cache grows as it goes: max_new_tokens plays no part)."""
        return prefill(self.model, prompt)

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

    def forward(self, state: State, ids, positions, masks):
        """The step's forward over the draft tree (from step_inputs): main and stream logits of
        the nodes the MSA layers processed (all of them unless pruning dropped some; which ones
        is left in state.pruned for verify)."""
        state.pruned = None
        select = (lambda x: self.select(state, ids, x)) if self.prune else None
        return self.model.step_logits(ids[None], state.cache, positions, masks, select)

    def select(self, state: State, ids, x):
        """The nodes to keep, from the hidden states x [1, size, H] after layer N - Ns: a node is
        dropped when the early-exit probability of its token at its parent is below the threshold,
        or an ancestor was dropped. The root is always kept."""
        tree = self.tree
        logits = self.model.early_exit(x[0]).float()  # [size, V]
        # log p(node's token | parent) = logits[parent, ids[node]] - logsumexp(logits[parent])
        transition = logits[tree.parent_index, ids] - logits.logsumexp(-1).index_select(0, tree.parent_index)
        low = transition < math.log(self.prune)
        low[0] = False  # the root is the last step's verified token, not a draft
        keep = ~(tree.ancestors & low).any(dim=1)
        nodes = torch.nonzero(keep).flatten().tolist()  # host sync: the MSA layers' row count
        if len(nodes) == tree.size:
            return None
        where = [-1] * tree.size
        for row, node in enumerate(nodes):
            where[node] = row
        kept = torch.tensor(nodes, device=x.device)
        state.pruned = Pruned(keep, kept, nodes, where, self.split)
        return kept

    def verify(self, state: State, ids, main, streams) -> tuple[list[int], int]:
        """Accept the longest verified path, commit it and set up the next draft. Returns the
        emitted tokens (the accepted draft tokens, then the main stream's next token) and the
        number of accepted draft tokens."""
        if state.pruned is not None:  # set by forward when pruning dropped nodes
            return self._verify_pruned(state, ids, main, streams)
        predicted = main[0].argmax(-1)
        last = self.tree.accept(ids, predicted).view(1)
        state.stream_logits = self.model.stream_logits(streams, last)  # queued before the sync
        return commit_tree(self.tree, state, predicted, last)

    def _verify_pruned(self, state: State, ids, main, streams) -> tuple[list[int], int]:
        """verify after a pruned forward: main / streams have one row per kept node."""
        tree, pruned, cache = self.tree, state.pruned, state.cache
        predicted = torch.zeros(tree.size, dtype=torch.long, device=ids.device)
        predicted.index_copy_(0, pruned.kept, main[0].argmax(-1))  # pruned nodes: never read
        last = tree.accept(ids, predicted, pruned.keep)
        verdict = torch.cat([last.view(1), predicted]).tolist()
        last, predicted_host = verdict[0], verdict[1:]
        path = tree.paths[last]
        accepted = len(path) - 1
        kept_rows = len(pruned.nodes)
        # each layer's own positions: the bottom ones appended the whole tree, the top ones only
        # the kept nodes. The top-1 chain 0..accepted (all kept) comes first in both orders.
        if last == accepted:
            full = rows = None
        else:
            full = tree.path_index[last]
            rows = torch.tensor([pruned.where[node] for node in path], device=ids.device)
        for i, k in enumerate(cache.keys):
            below = i < pruned.split
            past = k.shape[2] - (tree.size if below else kept_rows)
            if full is None:
                cache.keep_layer(i, past + accepted + 1)
            else:
                cache.keep_layer(i, past, (full if below else rows) + past)
        state.root = predicted[last: last + 1]
        state.stream_logits = self.model.base.head(streams[0, pruned.where[last]])  # its row, known on the host
        return [predicted_host[i] for i in path], accepted
