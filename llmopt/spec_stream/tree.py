"""The draft tree: the top-k_g tokens of stream g are the children of every node at depth g - 1.

Built once per top-k tuple; a step only gathers tokens into it. With k = (1, 1, 1, 1) the tree is
a chain of 4 tokens after the root. Size 1 + Σ_g Π_{i<=g} k_i.
"""

from __future__ import annotations

from typing import Sequence

import torch


class DraftTree:
    def __init__(self, topk: Sequence[int], device="cpu"):
        topk = tuple(int(k) for k in topk)
        if not topk or min(topk) < 1:
            raise ValueError(f"top-k per depth must be a non-empty tuple of positive ints, got {topk}")
        self.topk, self.depth, self.kmax = topk, len(topk), max(topk)
        # Depth-first preorder, best rank first: the top-1 chain is nodes 0..depth, so a step that
        # accepts along it commits the KV cache by slicing rather than gathering.
        parents, depths, ranks = [-1], [0], [0]

        def grow(node: int, d: int) -> None:
            for r in range(topk[d] if d < self.depth else 0):
                parents.append(node)
                depths.append(d + 1)
                ranks.append(r)
                grow(len(parents) - 1, d + 1)

        grow(0, 0)
        self.size = len(parents)
        # paths[i]: the nodes from the root to i (host lists: read once per step, no device work)
        self.paths = [[0]]
        for p in parents[1:]:
            self.paths.append(self.paths[p] + [len(self.paths)])
        ancestors = torch.zeros(self.size, self.size, dtype=torch.bool)
        for i, path in enumerate(self.paths):
            ancestors[i, path] = True
        self.parents = parents
        self.nodes_per_depth = [depths.count(d) for d in range(1, self.depth + 1)]
        self.ancestors = ancestors.to(device)  # node i sees itself and its ancestors
        self.depths = torch.tensor(depths, device=device)  # = position offset from the root
        self.parent_index = torch.tensor([0] + parents[1:], device=device)
        self.depth_scores = self.depths + 1  # deeper accepted nodes win; rejected ones score 0
        self.path_index = [torch.tensor(p, device=device) for p in self.paths]
        # where each non-root node's token sits in the flattened [depth, kmax] top-k indices
        self.pick = torch.tensor([(d - 1) * self.kmax + r for d, r in zip(depths[1:], ranks[1:])], device=device)

    def draft(self, root: torch.Tensor, stream_logits: torch.Tensor) -> torch.Tensor:
        """Token ids [size] of the tree: `root` ([1]) and, at depth g, the top-k_g tokens of stream
        g of `stream_logits` ([γ, V], the streams at the root's position)."""
        top = stream_logits[: self.depth].topk(self.kmax, dim=-1).indices.flatten()
        return torch.cat([root, top.index_select(0, self.pick)])

    def accept(self, ids: torch.Tensor, predicted: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
        """The deepest node whose path from the root holds only tokens equal to the main stream's
        prediction at their parents ([] long, on the device: no host sync). Siblings hold
        distinct tokens, so at most one child of a node matches and the accepted nodes form one path.
        `kept` ([size] bool, optional): the nodes that were verified (tree pruning); the others
        and their subtrees are rejected whatever `predicted` holds for them."""
        miss = ids != predicted.index_select(0, self.parent_index)
        if kept is not None:
            miss = miss | ~kept
        rejected = (self.ancestors[:, 1:] & miss[1:]).any(dim=1)  # the root is always accepted
        return self.depth_scores.masked_fill(rejected, 0).argmax()
