"""Medusa-1 (Cai et al. 2024): γ extra heads on the frozen model's last hidden state draft a tree.

Head k (1..γ), at the position of token t, predicts token t + 1 + k: a residual SiLU block
(h + SiLU(W h + b)) and a projection to the vocabulary, its own matrix or the base's LM head
(`share_head`, far fewer extra parameters). The heads read the final hidden state after ln_f, as
Medusa's read the base model's normalised output. Trained on a frozen lm checkpoint (the "medusa"
objective of llmopt.train: Σ_k 0.8^k CE_k, Medusa-1's weights), so the model itself is untouched.

Decoding reuses Speculative Streaming's machinery: the heads' top-k tokens form a DraftTree (head
k at depth k), one forward over the flattened tree with the ancestor mask verifies it, and the
accepted path is committed as ss commits (decode.commit_tree); the heads at the last accepted node
draft the next tree. `medusa+graphs` runs the same step over a static cache, captured once per
bucket (StaticMedusaDecoder, on static.py's StaticTreeStep): draft, verify, commit and the heads'
next logits all on the device, one host sync per step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..models.gpt_neo import GPTNeo
from .decode import DraftLoop, State, commit_tree
from .loss import IGNORE
from .static import StaticTreeStep
from .tree import DraftTree

HEADS_WEIGHTS = "medusa.safetensors"
HEADS_CONFIG = "medusa.json"
DEFAULT_HEADS = 4  # γ: the draft tree's depth at most
HEAD_DECAY = 0.8  # Medusa-1's loss weight of head k: 0.8^k


class ResBlock(nn.Module):
    """h + SiLU(W h + b); W starts at zero (as in Medusa), so an untrained block is the identity."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)

    def forward(self, h):
        return h + F.silu(self.linear(h))


class MedusaModel(nn.Module):
    """A frozen GPT-Neo and γ heads; `heads` is None where they share the base's LM head."""

    def __init__(self, base: GPTNeo, gamma: int = DEFAULT_HEADS, share_head: bool = False):
        super().__init__()
        if gamma < 1:
            raise ValueError(f"need at least one Medusa head, got gamma={gamma}")
        hidden, vocab = base.config.hidden_size, base.config.vocab_size
        weight = base.lm_head.weight
        self.base, self.gamma, self.share_head = base, gamma, share_head
        with torch.device(weight.device):
            self.blocks = nn.ModuleList(ResBlock(hidden) for _ in range(gamma))
            self.heads = None if share_head else nn.ModuleList(nn.Linear(hidden, vocab, bias=False)
                                                               for _ in range(gamma))
        self.to(weight.dtype)

    @property
    def config(self):
        return self.base.config

    def set_attention(self, name: str) -> None:
        self.base.set_attention(name)

    def drafting_modules(self) -> nn.ModuleList:
        """The extra parameters (what the record counts): the blocks, and the heads' own matrices."""
        return nn.ModuleList([self.blocks] + ([] if self.heads is None else [self.heads]))

    def hidden(self, ids, cache=None, positions=None, tree=None):
        """The base's final hidden states after ln_f, [B, T, H] (the LM head's and the heads' input)."""
        base = self.base
        past = 0 if cache is None else len(cache)
        if positions is None:
            positions = torch.arange(past, past + ids.shape[1], device=ids.device)
        x = base.run_blocks(base.embed(ids, positions), base.masks(past, positions, tree), cache)
        return base.transformer.ln_f(x)

    def head_logits(self, h):
        """The heads' logits [..., γ, V] from final hidden states h [..., H]."""
        lm_head = self.base.lm_head
        heads = self.heads or [lm_head] * self.gamma
        return torch.stack([head(block(h)) for block, head in zip(self.blocks, heads)], dim=-2)

    # -- construction and checkpoints ---------------------------------------------------------

    @classmethod
    def from_base(cls, base: GPTNeo, gamma: int = DEFAULT_HEADS, share_head: bool = False) -> "MedusaModel":
        """Fresh heads for a frozen base, as Medusa starts them: blocks at zero (the identity),
        each head's own matrix a copy of the LM head (so every head starts as the next-token head)."""
        base.requires_grad_(False)
        model = cls(base, gamma, share_head)
        with torch.no_grad():
            for block in model.blocks:
                block.linear.weight.zero_()
                block.linear.bias.zero_()
            for head in model.heads or []:
                head.weight.copy_(base.lm_head.weight)
        return model

    @classmethod
    def random(cls, base: GPTNeo, gamma: int = DEFAULT_HEADS, share_head: bool = False, seed: int = 0,
               std: float = 0.3) -> "MedusaModel":
        """Random heads (tests: untrained drafts that are often wrong)."""
        model = cls(base, gamma, share_head)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.drafting_modules().parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * std)
        return model

    def save_pretrained(self, directory: str | Path) -> None:
        """The base model as a stock GPT-Neo checkpoint, the heads beside it."""
        directory = Path(directory)
        self.base.save_pretrained(directory)
        weights = {name: t.detach().contiguous() for name, t in self.drafting_modules().state_dict().items()}
        save_file(weights, directory / HEADS_WEIGHTS, metadata={"format": "pt"})
        spec = {"gamma": self.gamma, "share_head": self.share_head}
        (directory / HEADS_CONFIG).write_text(json.dumps(spec, indent=2))

    @classmethod
    def load_heads(cls, base: GPTNeo, directory: str | Path) -> "MedusaModel":
        """Heads saved by save_pretrained in `directory`, on `base` (its device and dtype)."""
        directory = Path(directory)
        if not (directory / HEADS_CONFIG).is_file() or not (directory / HEADS_WEIGHTS).is_file():
            raise ValueError(f"{directory} has no Medusa heads ({HEADS_CONFIG}, {HEADS_WEIGHTS}): train them "
                             "with the 'medusa' objective on this checkpoint (llmopt.train.medusa_recipe)")
        spec = json.loads((directory / HEADS_CONFIG).read_text())
        model = cls(base, spec["gamma"], spec["share_head"])
        model.drafting_modules().load_state_dict(load_file(directory / HEADS_WEIGHTS))
        return model


# -- training (llmopt.train's "medusa" objective) ---------------------------------------------------

def build_medusa(config, base: GPTNeo | None, options: dict, seed: int) -> MedusaModel:
    """Options: gamma (heads, default 4), share_head (default False). Needs a base (Recipe.base)."""
    unknown = set(options) - {"gamma", "share_head"}
    if unknown:
        raise ValueError(f"unknown medusa options {sorted(unknown)}; known: gamma, share_head")
    if base is None:
        raise ValueError("Medusa heads train on a frozen checkpoint: set the recipe's base (llmopt.train.medusa_recipe)")
    return MedusaModel.from_base(base, int(options.get("gamma", DEFAULT_HEADS)), bool(options.get("share_head", False)))


def medusa_loss(model: MedusaModel, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Σ_k 0.8^k · CE(head k at t -> token t + 1 + k), each a mean over target tokens."""
    with torch.no_grad():  # the base is frozen
        h = model.hidden(ids)
    loss, logs = h.new_zeros((), dtype=torch.float32), {}
    for k in range(1, model.gamma + 1):
        targets = labels[:, 1 + k:]
        keep = targets != IGNORE
        rows = h[:, : targets.shape[1]][keep]
        if rows.shape[0] == 0:  # a head can outrun short sequences
            continue
        block, head = model.blocks[k - 1], (model.heads[k - 1] if model.heads is not None else model.base.lm_head)
        term = F.cross_entropy(head(block(rows)).float(), targets[keep])
        loss = loss + HEAD_DECAY ** k * term
        logs[f"head{k}"] = term.detach()
    logs["loss"] = loss.detach()
    return loss, logs


# -- decoding ------------------------------------------------------------------------------------

class MedusaDecoder(DraftLoop):
    """The DraftLoop's phases for Medusa's tree over a dynamic cache (State.stream_logits holds the
    heads' logits [γ, V] at the root's parent position: the next draft)."""

    def __init__(self, model: MedusaModel, topk: Sequence[int]):
        if len(topk) > model.gamma:
            raise ValueError(f"a tree of depth {len(topk)} needs {len(topk)} Medusa heads; the model has {model.gamma}")
        self.model = model
        self.device = model.base.lm_head.weight.device
        self.tree = tree = DraftTree(topk, self.device)
        self.limit = model.config.max_position_embeddings
        self.depth, self.nodes_per_depth, self.full_size = tree.depth, tree.nodes_per_depth, tree.size

    def start(self, prompt: list[int], max_new_tokens: int | None = None) -> State:
        """The prefill: the root from the LM head, the first draft from the heads at the last position."""
        cache = self.model.base.new_cache()
        h = self.model.hidden(torch.tensor([prompt], device=self.device), cache)[0, -1]
        return State(cache, self.model.base.lm_head(h).argmax(-1).view(1), self.model.head_logits(h))

    def step_inputs(self, state: State):
        """The draft tree's ids [size] and positions [size] (prefix length + depth)."""
        past = len(state.cache)
        positions = self.tree.depths + past
        if past + self.tree.depth >= self.limit:  # such nodes could only give tokens past max_new_tokens
            positions = positions.clamp(max=self.limit - 1)
        return self.tree.draft(state.root, state.stream_logits), positions

    def forward(self, state: State, ids, positions):
        """The base over the flattened tree (ancestor mask): the next-token logits at every node
        and the final hidden states (the heads' input)."""
        h = self.model.hidden(ids[None], state.cache, positions, self.tree.ancestors)[0]
        return self.model.base.lm_head(h), h

    def verify(self, state: State, ids, logits, h) -> tuple[list[int], int]:
        """Accept the longest verified path, commit it; the heads at its last node draft next."""
        predicted = logits.argmax(-1)
        last = self.tree.accept(ids, predicted).view(1)
        state.stream_logits = self.model.head_logits(h.index_select(0, last)[0])  # queued before the sync
        return commit_tree(self.tree, state, predicted, last)


class StaticMedusaDecoder(StaticTreeStep, MedusaDecoder):
    """Medusa's verify-and-draft step with static shapes (`medusa+graphs`): `runner` (set by the
    caller, a capture.GraphRunner) replays step(length); without one, step runs uncaptured."""

    def __init__(self, model: MedusaModel, topk: Sequence[int], max_len: int | None = None):
        base = model.base
        super().__init__(model, topk)
        tree = self.tree
        self.row_depths = tree.depths  # one row per node: the heads read the nodes' own hidden states
        self.set_up_static(base, base.masks(0, tree.depths, tree.ancestors), max_len)

    def prefill(self, prompt: list[int]) -> State:
        return MedusaDecoder.start(self, prompt)

    def step(self, length: int) -> None:
        """One verify-and-draft step attending over `length` slots, all on the device."""
        model, base, tree = self.model, self.base, self.tree
        self.begin_step(length)
        draft = tree.draft(self.root, self.stream_logits)
        x = base.run_blocks(base.embed(draft[None], self.positions(tree.depths)), self.masks(length), self.cache,
                            attend=self.attend)
        h = base.transformer.ln_f(x)[0]
        predicted = base.lm_head(h).argmax(-1)
        last = tree.accept(draft, predicted).view(1)
        self.stream_logits.copy_(model.head_logits(h.index_select(0, last)[0]))  # the next draft's
        self.commit(predicted, last)
