"""A preallocated KV cache and a static-shape decode step: what CUDA graphs need.

Every tensor the decode step touches has a fixed address and shape: the cache is allocated once
([layers] x [1, heads, max_len, head_dim], or [1, max_len, heads, head_dim] for flash_attn), the
new token's keys/values are written in place at a position held in a *device* tensor, and
attention runs over a fixed number of cache slots (a bucket of `max_len`) with a mask computed on
the device from that position: key j is visible iff j <= pos (and pos - j < window on local
layers). No host value changes between steps, so the step can be captured once and replayed.
"""

from __future__ import annotations

import torch

from .attention import ATTENTION, Band, masks_for
from .gpt_neo import GPTNeo, KVCache


class StaticKVCache:
    """Keys and values in one preallocated buffer; `append` writes at the device positions `index`
    (by default `pos`: one token; a tree step points it at `pos + arange(rows)`)."""

    def __init__(self, model: GPTNeo, max_len: int, layout: str = "bhld"):
        if layout not in ("bhld", "blhd"):
            raise ValueError(f"layout is 'bhld' or 'blhd', not {layout!r}")
        config, weight = model.config, model.lm_head.weight
        heads = config.num_heads
        head_dim = config.hidden_size // heads
        shape = (1, heads, max_len, head_dim) if layout == "bhld" else (1, max_len, heads, head_dim)
        layers = len(model.transformer.h)
        self.layout, self.max_len = layout, max_len
        self.seq_dim = 4 if layout == "bhld" else 3  # in `kv` [layers, 2, *shape]
        # One buffer: a speculative step's commit moves every layer's keys and values in one copy.
        # No per-layer views are kept: torch.compile would see them as separate, aliased inputs
        # that it cannot keep at static addresses (reduce-overhead then skips CUDA graphs).
        self.kv = torch.zeros((layers, 2, *shape), device=weight.device, dtype=weight.dtype)
        self.layer_ids = torch.arange(layers, device=weight.device)  # index tensors for `append`
        self.kinds = torch.arange(2, device=weight.device)  # 0: keys, 1: values
        self.pos = torch.zeros(1, dtype=torch.long, device=weight.device)  # where the next token goes
        self.index = self.pos  # the slots `append` writes (its first k.shape[2] entries)
        self.length = max_len  # how many slots attention reads (the step's bucket)

    def static_tensors(self) -> list[torch.Tensor]:
        """The cache's tensors a step reads or writes in place (fixed addresses for torch.compile)."""
        return [self.kv, self.layer_ids, self.kinds, self.pos, self.index]

    def view(self, layer: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `length` slots of a layer as [1, heads, length, head_dim] (views, no copy)."""
        n = self.length if length is None else length
        k, v = self.kv[layer, 0], self.kv[layer, 1]
        if self.layout == "bhld":
            return k[:, :, :n], v[:, :, :n]
        return k[:, :n].transpose(1, 2), v[:, :n].transpose(1, 2)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write T tokens' keys/values ([1, heads, T, head_dim]) at `index[:T]`; return the read window."""
        at = self.index[: k.shape[2]]
        if not torch.compiler.is_compiling():  # eager and CUDA-graph capture: the kernels measured so far
            for kind, x in enumerate((k, v)):
                if self.layout == "bhld":
                    self.kv[layer, kind].index_copy_(2, at, x)
                else:
                    self.kv[layer, kind].index_copy_(1, at, x.transpose(1, 2))
            return self.view(layer)
        layer_id = self.layer_ids[layer: layer + 1]
        before = [None, None] if self.layout == "bhld" else [None]  # the full dims before the slots
        for kind, x in enumerate((k, v)):
            # kv[layer, kind, ..., at] = x as index_put_ into the whole buffer: torch.compile writes
            # that in place, but index_copy_ into a layer's view by copying the whole layer out and
            # back every step. The advanced indices are apart, so T leads the written shape.
            # (aten's op: Tensor.index_put_ takes no None for a full dim)
            torch.ops.aten.index_put_(self.kv, [layer_id, self.kinds[kind: kind + 1], *before, at],
                                      x.permute(2, 0, 1, 3))
        return self.view(layer)

    def append_transient(self, layer: int, k: torch.Tensor, v: torch.Tensor, keep: int):
        """KVCache.append_transient: rows written here past the committed ones are scratch that the
        next step overwrites (a tree step's commit decides what stays), so nothing to drop."""
        return self.append(layer, k, v)

    def move(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copy the slots `src` to the slots `dst` in every layer (device indices, no host sync)."""
        self.kv.index_copy_(self.seq_dim, dst, self.kv.index_select(self.seq_dim, src))

    def load(self, cache: KVCache) -> None:
        """Copy a dynamic cache (after the prefill) into the first len(cache) slots; pos = len(cache)."""
        n = len(cache)
        if n >= self.max_len:
            raise ValueError(f"{n} cached tokens leave no room in a static cache of {self.max_len}")
        for i, (k, v) in enumerate(zip(cache.keys, cache.values)):
            dk, dv = self.view(i, n)
            dk.copy_(k)
            dv.copy_(v)
        self.pos.fill_(n)


class StaticDecoder:
    """One greedy decode step over a StaticKVCache with static inputs: reads `token` ([1, 1]) and
    `cache.pos`, writes the argmax into `token` and advances `cache.pos` by one, all on the device.

    `attention`: the kernel of the step (default: the model's). "flash_attn" reads the cache length
    on the device through Band.seqlens; every other kernel gets a boolean mask over the slots."""

    def __init__(self, model: GPTNeo, max_len: int | None = None, attention: str | None = None):
        self.model = model
        self.attention = attention or model.attention
        if self.attention == "sdpa_flash":
            raise ValueError("the flash kernel of SDPA takes no mask and cannot read a device-side cache "
                             "length, so it cannot run a static-shape decode step: use 'sdpa_efficient' "
                             "or flash_attn")
        self.attend = ATTENTION[self.attention]
        max_len = max_len or model.config.max_position_embeddings
        self.cache = StaticKVCache(model, max_len, layout="blhd" if self.attention == "flash_attn" else "bhld")
        device = model.lm_head.weight.device
        self.token = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.slots = torch.arange(max_len, device=device)

    def load(self, cache: KVCache, token: torch.Tensor) -> None:
        """Start decoding after a prefill: its cache, and the token it chose ([1, 1], on the device)."""
        self.cache.load(cache)
        self.token.copy_(token)

    def static_tensors(self) -> list[torch.Tensor]:
        """The tensors the step reads or writes in place: fixed addresses for torch.compile."""
        return [self.token, self.slots, *self.cache.static_tensors()]

    def masks(self, length: int) -> dict:
        pos = self.cache.pos
        if self.attention == "flash_attn":
            seqlens = (pos + 1).to(torch.int32)
            return {"global": Band(causal=True, seqlens=seqlens),
                    "local": Band(causal=True, window=self.model.window, seqlens=seqlens)}
        slots = self.slots[:length]
        seen = (slots <= pos)[None, :]  # [1 query, length keys]
        masks = {"global": seen, "local": seen & ((pos - slots) < self.model.window)[None, :]}
        return masks_for(self.attention, masks, self.model.lm_head.weight.dtype)

    def step(self, length: int) -> torch.Tensor:
        """One token through the model, attending over `length` slots; returns `token` (updated)."""
        model, cache = self.model, self.cache
        cache.length = length
        x = model.embed(self.token, cache.pos)
        masks = self.masks(length)
        for i, block in enumerate(model.transformer.h):
            x = block(x, masks[block.attention_type], self.attend, cache, i)
        self.token.copy_(model.head(x)[:, -1].argmax(-1, keepdim=True))
        cache.pos.add_(1)
        return self.token
