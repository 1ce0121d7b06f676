"""GPT-Neo with multi-stream attention (MSA): the model of Speculative Streaming.

The bottom N - Ns layers are the base model's, main stream only. At layer N - Ns every position t
gains γ speculative streams S_tj = M_t + P_j (P_j learned). In the top Ns layers the streams ride
along as extra query rows of the same block (same weights): stream j at t attends to the main
stream at positions <= t (the KV cache and this call's main tokens, under the same causal / tree /
local-window mask as M_t) and to streams 1..j of its own position. The main stream never sees a
stream, so its output is the base model's, and only main keys/values enter the KV cache.

Positions: a stream state has the position of t. GPT-Neo's positions enter only through the
embedding (already in M_t) and the local window, so a stream row simply reuses M_t's mask row.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..models.gpt_neo import GPTNeo, KVCache

STREAM_WEIGHTS = "spec_stream.safetensors"
STREAM_CONFIG = "spec_stream.json"


class SpecStreamModel(nn.Module):
    def __init__(self, base: GPTNeo, gamma: int, num_stream_layers: int):
        super().__init__()
        layers = len(base.transformer.h)
        if gamma < 1 or not 1 <= num_stream_layers <= layers:
            raise ValueError(f"need gamma >= 1 and 1 <= num_stream_layers <= {layers}, "
                             f"got gamma={gamma}, num_stream_layers={num_stream_layers}")
        self.base = base
        self.gamma = gamma
        self.num_stream_layers = num_stream_layers
        weight = base.lm_head.weight
        self.stream_embeddings = nn.Parameter(torch.zeros(gamma, base.config.hidden_size,
                                                          device=weight.device, dtype=weight.dtype))

    @property
    def config(self):
        return self.base.config

    def set_attention(self, name: str) -> None:
        self.base.set_attention(name)

    # -- forward ----------------------------------------------------------------------------------

    def stream_masks(self, masks: dict, past: int, new: int, stream_start: int = 0) -> dict:
        """Extend the base model's masks ([new, past + new] per layer kind, None = all visible) to
        the MSA layers' queries (main rows, then γ stream rows per position from `stream_start`,
        position-major) and keys (cache, main new, then the stream keys in the same order)."""
        g, rows = self.gamma, (new - stream_start) * self.gamma
        device = self.base.causal_mask.device
        idx = torch.arange(rows, device=device)
        # stream j of a position sees streams 1..j of that same position, nothing else
        own = (idx[:, None] // g == idx[None, :] // g) & (idx[None, :] <= idx[:, None])
        no_streams = torch.zeros(new, rows, dtype=torch.bool, device=device)
        out = {}
        for kind, m in masks.items():
            if m is None:
                m = torch.ones(new, past + new, dtype=torch.bool, device=device)
            main = torch.cat([m, no_streams], dim=1)  # the main stream never sees a stream
            streams = torch.cat([m[stream_start:].repeat_interleave(g, dim=0), own], dim=1)
            out[kind] = torch.cat([main, streams], dim=0)
        return out

    def hidden_states(self, ids, cache: KVCache | None = None, positions=None, tree=None,
                      stream_start: int = 0, masks: dict | None = None):
        """Final hidden states before ln_f: main [B, T, H] and streams [B, T - stream_start, γ, H].

        Streams are computed for the new tokens from index `stream_start` on (a prefill needs
        only the last). `masks` (from `stream_masks`) may be passed precomputed; else they are
        built from `tree` ([T, T] bool, None = causal) and the positions."""
        return self.split_rows(*self._rows(ids, cache, positions, tree, stream_start, masks), stream_start)

    def forward(self, ids, cache: KVCache | None = None, positions=None, tree=None,
                stream_start: int = 0, masks: dict | None = None, select=None):
        """Logits: main [B, T, V] (token t+1) and streams [B, T - stream_start, γ, V] (token t+1+j).

        Tree pruning (paper §3.2): `select`, if given, is called with the hidden states [B, T, H]
        after layer N - Ns (the input of the first MSA layer) and returns the indices (a sorted
        1-D long tensor, closed under taking ancestors) of the new tokens the MSA layers keep, or
        None to keep all. Only the kept tokens and their streams run through the top Ns layers
        and enter their KV cache (the bottom layers cached all T); the outputs then have
        len(kept) rows, in kept order. Needs stream_start = 0."""
        h, t = self._rows(ids, cache, positions, tree, stream_start, masks, select)
        return self.split_rows(self.base.head(h), t, stream_start)  # one head call for all rows

    def step_logits(self, ids, cache: KVCache, positions, masks: dict, select=None):
        """forward() for a decode step: the main logits [B, T', V], but the streams as final hidden
        states [B, T', γ, H]. Only the streams of the last accepted node draft the next tree, so the
        decoder puts just those through the LM head (stream_logits), not all T'·γ stream rows
        (~5 GFLOP per fp32 step at GPT-2's 50257-token vocabulary)."""
        h, t = self._rows(ids, cache, positions, None, 0, masks, select)
        main, streams = self.split_rows(h, t, 0)
        return self.base.head(main), streams

    def stream_logits(self, streams, row):
        """The logits [γ, V] of the streams of `row` ([1] long, may stay on the device) of the
        stream states [1, T', γ, H] from step_logits."""
        return self.base.head(streams[0].index_select(0, row)[0])

    def early_exit(self, x):
        """Logits from hidden states after layer N - Ns (ln_f + the LM head, no adapter): the
        estimate of the next token's distribution that tree pruning uses."""
        return self.base.head(x)

    def prune_masks(self, masks: dict, kept, past: int, new: int) -> dict:
        """The rows and key columns of the MSA layers' masks ([main | γ streams per position],
        keys [cache | main | streams], built for `new` tokens) that belong to the kept tokens."""
        g = self.gamma
        streams = (kept[:, None] * g + torch.arange(g, device=kept.device)).flatten()
        rows = torch.cat([kept, new + streams])
        cols = torch.cat([torch.arange(past, device=kept.device), past + rows])
        return {kind: m.index_select(0, rows).index_select(1, cols) for kind, m in masks.items()}

    def split_rows(self, h, t: int, stream_start: int):
        return h[:, :t], h[:, t:].unflatten(1, (t - stream_start, self.gamma))

    def _rows(self, ids, cache, positions, tree, stream_start, masks, select=None):
        """Hidden states of the main rows [B, T'], then the stream rows [B, (T' - stream_start) · γ],
        and T' (= T unless `select` pruned tokens before the MSA layers)."""
        base = self.base
        t = ids.shape[1]
        past = 0 if cache is None else len(cache)
        if positions is None:
            positions = torch.arange(past, past + t, device=ids.device)
        split = len(base.transformer.h) - self.num_stream_layers
        if masks is None:
            masks = self.stream_masks(base.masks(past, positions, tree), past, t, stream_start)
        x = base.embed(ids, positions)
        if split:  # main rows and main keys come first: the base masks are the top-left corner
            x = base.run_blocks(x, {kind: m[:t, : past + t] for kind, m in masks.items()}, cache, range(split))
        if select is not None:
            if stream_start:
                raise ValueError("tree pruning needs streams at every new token (stream_start = 0)")
            kept = select(x)
            if kept is not None:  # the bottom layers cached all t tokens, the MSA layers get these
                x = x.index_select(1, kept)
                masks = self.prune_masks(masks, kept, past, t)
                t = kept.shape[0]
        h = self.add_streams(x, stream_start)
        for i in range(split, len(base.transformer.h)):
            h = self.msa_block(i, h, past + t, masks, cache)
        return h, t

    def add_streams(self, x, stream_start: int = 0):
        """The MSA layers' input: main rows [B, T], then γ stream rows per position from
        `stream_start` (S_tj = M_t + P_j: eq. 3 with f = identity)."""
        s = x[:, stream_start:, None, :] + self.stream_embeddings
        return torch.cat([x, s.flatten(1, 2)], dim=1)

    def msa_block(self, i: int, h, main_keys: int, masks: dict, cache, attend=None):
        """Block i over the main rows and the stream rows of h, one attention call; the cache (KVCache or
        StaticKVCache) keeps `main_keys` positions. `attend`: as in GPTNeo.run_blocks."""
        block = self.base.transformer.h[i]
        attn = block.attn
        a = block.ln_1(h)
        q, k, v = attn.project(a)
        if cache is not None:  # keys [cache | main | streams]; streams are never cached
            k, v = cache.append_transient(i, k, v, main_keys)
        y = (attend or self.base.attend)(q, k, v, masks[block.attention_type])
        b, heads, rows, hd = y.shape
        h = h + attn.out_proj(y.transpose(1, 2).reshape(b, rows, heads * hd))
        return h + block.mlp(block.ln_2(h))

    # -- construction and checkpoints ---------------------------------------------------------

    @classmethod
    def random(cls, config, gamma: int = 4, num_stream_layers: int = 4, seed: int = 0, device="cpu",
               dtype=torch.float32) -> "SpecStreamModel":
        """Random base weights (GPTNeo.random) and stream embeddings ~ normal(0, initializer_range)."""
        return cls.from_base(GPTNeo.random(config, seed=seed, device=device, dtype=dtype), gamma,
                             num_stream_layers, seed)

    @classmethod
    def from_base(cls, base: GPTNeo, gamma: int, num_stream_layers: int, seed: int = 0) -> "SpecStreamModel":
        """Add freshly initialised streams to a base model (the start of fine-tuning)."""
        model = cls(base, gamma, num_stream_layers)
        gen = torch.Generator().manual_seed(seed + 1)  # not the base's draws
        init = torch.randn(model.stream_embeddings.shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            model.stream_embeddings.copy_(init * base.config.initializer_range)
        return model

    def save_pretrained(self, directory: str | Path) -> None:
        """The base model as a stock GPT-Neo checkpoint, plus the stream parameters beside it."""
        directory = Path(directory)
        self.base.save_pretrained(directory)
        save_file({"stream_embeddings": self.stream_embeddings.detach().contiguous()},
                  directory / STREAM_WEIGHTS, metadata={"format": "pt"})
        spec = {"gamma": self.gamma, "num_stream_layers": self.num_stream_layers}
        (directory / STREAM_CONFIG).write_text(json.dumps(spec, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu", dtype=torch.float32) -> "SpecStreamModel":
        directory = Path(directory)
        if not (directory / STREAM_CONFIG).is_file() or not (directory / STREAM_WEIGHTS).is_file():
            raise ValueError(f"{directory} has no Speculative Streaming parameters ({STREAM_CONFIG}, "
                             f"{STREAM_WEIGHTS}): train it with the 'ss' objective")
        spec = json.loads((directory / STREAM_CONFIG).read_text())
        base = GPTNeo.from_pretrained(directory, device=device, dtype=dtype)
        model = cls(base, spec["gamma"], spec["num_stream_layers"])
        with torch.no_grad():
            model.stream_embeddings.copy_(load_file(directory / STREAM_WEIGHTS)["stream_embeddings"])
        return model
