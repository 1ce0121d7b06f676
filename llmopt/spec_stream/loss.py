"""The Speculative Streaming training objective (paper eq. 5), for llmopt.train's OBJECTIVES.

L = CE(main stream at t -> token t+1) + Σ_j 0.1 · CE(stream j at t -> token t+1+j), each term a
mean over target tokens only. One forward over the whole sequence gives every position's streams.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.gpt_neo import GPTNeo
from .model import SpecStreamModel

IGNORE = -100  # the label of prompt and padding tokens: no loss there (llmopt.train's too)
STREAM_WEIGHT = 0.1  # α_j, as in the paper
DEFAULT_GAMMA = 4
DEFAULT_STREAM_LAYERS = 4  # the paper: MSA in the top 2-8 layers is a good trade-off (1/3 of 125m)


def build_ss(config, base: GPTNeo | None, options: dict, seed: int) -> SpecStreamModel:
    """Options: gamma (streams, default 4), num_stream_layers (default 4, at most the model's)."""
    unknown = set(options) - {"gamma", "num_stream_layers"}
    if unknown:
        raise ValueError(f"unknown ss options {sorted(unknown)}; known: gamma, num_stream_layers")
    base = base if base is not None else GPTNeo.random(config, seed=seed)
    layers = min(int(options.get("num_stream_layers", DEFAULT_STREAM_LAYERS)), config.num_layers)
    return SpecStreamModel.from_base(base, int(options.get("gamma", DEFAULT_GAMMA)), layers, seed)


def _cross_entropy(model: SpecStreamModel, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean CE over the target tokens; the LM head runs on those rows only (saves the big logits)."""
    keep = targets != IGNORE
    logits = model.base.head(hidden[keep])
    if logits.shape[0] == 0:  # a stream can outrun short sequences: contribute 0, not NaN
        return logits.sum()
    return F.cross_entropy(logits.float(), targets[keep])


def ss_loss(model: SpecStreamModel, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    main, streams = model.hidden_states(ids)
    loss = main_loss = _cross_entropy(model, main[:, :-1], labels[:, 1:])
    logs = {"main": main_loss.detach()}
    for j in range(1, model.gamma + 1):
        # stream j at t predicts token t + 1 + j
        term = _cross_entropy(model, streams[:, : max(ids.shape[1] - 1 - j, 0), j - 1], labels[:, 1 + j:])
        loss = loss + STREAM_WEIGHT * term
        logs[f"stream{j}"] = term.detach()
    logs["loss"] = loss.detach()
    return loss, logs
