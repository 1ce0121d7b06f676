"""Attention kernels for GPT-Neo: unscaled scores (no 1/sqrt(d)), fp32 or wider accumulation.

Every kernel takes q, k, v ([batch, heads, seq, head_dim]) and a mask: a boolean tensor
[queries, keys] (True = visible; None = all visible) for `eager`, `sdpa`, `sdpa_efficient`,
`sdpa_cudnn` and `flex`, or a `Band` descriptor for the FlashAttention kernels, which take no mask tensor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def eager_attention(q, k, v, mask):
    """Reference attention, as GPT-Neo defines it: unscaled scores, in at least float32."""
    acc = torch.promote_types(q.dtype, torch.float32)  # fp16/bf16 -> fp32; fp32/fp64 unchanged
    scores = q.to(acc) @ k.to(acc).transpose(-1, -2)
    if mask is not None:  # one kernel, not two (~mask + masked_fill): decode steps are launch-bound
        scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1).to(v.dtype) @ v


def sdpa_attention(q, k, v, mask):
    """The same function through PyTorch's fused kernels (used for training)."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


@dataclass(frozen=True)
class Band:
    """A mask that kernels taking no mask tensor (FlashAttention) understand: each query sees the keys
    at or before its own position (queries are the last ones of the keys: bottom-right aligned),
    the last `window` of them on local layers (None = no limit). `causal=False` lets every query see
    every key (single-token decode). `seqlens` (int32 device tensor [batch], optional): the keys
    that hold data in a preallocated static cache, read on the device (flash_attn_with_kvcache)."""

    causal: bool = True
    window: int | None = None
    seqlens: torch.Tensor | None = None

    def dense(self, q_len: int, k_len: int, device) -> torch.Tensor:
        """The same mask as a boolean [q_len, k_len] tensor (for exact fallbacks)."""
        i = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        j = torch.arange(k_len, device=device)[None, :]
        seen = (j <= i) if self.causal else torch.ones(q_len, k_len, dtype=torch.bool, device=device)
        return seen if self.window is None else seen & (i - j < self.window)


def _no_tensor_masks(mask, name):
    if isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} attention takes no mask tensor (FlashAttention kernels accept none): "
                        "pass GPTNeo.band_masks() instead of masks()")


def flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401  (lazily: an optional package, CUDA only)
    except Exception:  # noqa: BLE001 - an install built for another torch/CUDA fails with all sorts
        return False
    return True


def flash_attn_attention(q, k, v, mask):
    """The `flash_attn` package (FlashAttention-2): fp16/bf16 on CUDA, unscaled scores
    (softmax_scale=1.0; scores are accumulated in fp32 inside the kernel), GPT-Neo's local window
    through `window_size`. With `mask.seqlens` the keys are a static cache of which the first
    `seqlens` hold data (flash_attn_with_kvcache: static shapes, capturable in a CUDA graph)."""
    from flash_attn import flash_attn_func, flash_attn_with_kvcache  # lazily: optional (see flash_attn_available)

    _no_tensor_masks(mask, "flash_attn")
    band = mask if mask is not None else Band(causal=False)
    window = (-1, -1) if band.window is None else (band.window - 1, 0)
    # flash_attn wants [batch, seq, heads, head_dim]; ours are [batch, heads, seq, head_dim]
    q_, k_, v_ = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if band.seqlens is not None:
        y = flash_attn_with_kvcache(q_, k_, v_, cache_seqlens=band.seqlens, softmax_scale=1.0,
                                    causal=band.causal, window_size=window)
    else:
        y = flash_attn_func(q_, k_, v_, softmax_scale=1.0, causal=band.causal, window_size=window)
    return y.transpose(1, 2)


def _sdpa_banded(q, k, v, mask, force_flash: bool):
    _no_tensor_masks(mask, "sdpa_flash")
    band = mask if mask is not None else Band(causal=False)
    t, n = q.shape[2], k.shape[2]
    if band.seqlens is not None:
        raise ValueError("sdpa_flash cannot read a static cache's length on the device; use flash_attn")
    if band.window is not None and n > band.window:
        if t == 1:  # decode: the last `window` keys are exactly the visible ones
            k, v, n = k[:, :, -band.window:], v[:, :, -band.window:], band.window
        else:  # a band no mask-free kernel can express: the exact reference (fp32 scores)
            return eager_attention(q, k, v, band.dense(t, n, q.device))
    if t == 1 or not band.causal:
        causal = False
    elif t == n:
        causal = True  # SDPA's is_causal is top-left aligned: right only when queries == keys
    else:
        return eager_attention(q, k, v, band.dense(t, n, q.device))
    if not force_flash:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=1.0)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # fails rather than running another kernel
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=1.0)


def sdpa_flash_attention(q, k, v, mask):
    """PyTorch's SDPA with the FLASH_ATTENTION backend forced. Local layers: decode slices the last
    `window` keys; a prefill longer than the window (a band the kernel cannot express) runs the
    exact eager reference for those layers."""
    return _sdpa_banded(q, k, v, mask, force_flash=True)


def sdpa_efficient_attention(q, k, v, mask):
    """SDPA with a boolean mask, EFFICIENT_ATTENTION backend forced (fp32 accumulation): the
    static-shape decode step when flash_attn is missing (the flash kernel takes no mask)."""
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as the additive one SDPA's kernels read: 0 where visible, -inf elsewhere."""
    return torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


# kernels whose mask is additive: a caller that gives one mask to many layers converts it once
ADDITIVE_MASK_KERNELS = ("sdpa_cudnn",)


def masks_for(kernel: str, masks: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A step's boolean masks (one per layer kind) as `kernel` reads them: additive for the kernels
    that take them so, converted here once a step rather than in every layer."""
    if kernel not in ADDITIVE_MASK_KERNELS:
        return masks
    return {kind: additive_mask(m, dtype) for kind, m in masks.items()}


def sdpa_cudnn_attention(q, k, v, mask):
    """SDPA on the CUDNN_ATTENTION backend (CUDA only; fp32 accumulation). The mask is additive
    (additive_mask), or boolean and converted here at every call."""
    if mask is not None and mask.dtype == torch.bool:
        mask = additive_mask(mask, q.dtype)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


def allow_specialisations(n: int) -> None:
    """Room for n more compiled specialisations of a function. Dynamo keeps them per code object:
    every decoder of a kind shares `step`'s code, so each capture.GraphRunner adds its buckets to the
    limit, and flex's compiled kernel one per shape (past it, dynamo stops compiling: the function
    runs uncompiled)."""
    import torch._dynamo.config as dynamo_config  # a torch submodule, not loaded by `import torch`

    for knob in ("recompile_limit", "cache_size_limit"):  # the name changed in torch 2.6
        if hasattr(dynamo_config, knob):
            setattr(dynamo_config, knob, getattr(dynamo_config, knob) + n)
            return


# FlexAttention's tile: every tile of keys is visited and the mask read element by element, since a
# tree's mask changes every step and a block mask built per step would cost kernels of its own
FLEX_BLOCK = 128
_flex_tiles: dict = {}  # (queries, keys, device) -> the tiles' table, for the kernel compiled on its own
_flex_compiled = None


def _tiles(queries: int, keys: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every query tile visits every key tile (the block mask's table: counts, then indices)."""
    rows, cols = -(-queries // FLEX_BLOCK), -(-keys // FLEX_BLOCK)
    return (torch.full((1, 1, rows), cols, dtype=torch.int32, device=device),
            torch.arange(cols, dtype=torch.int32, device=device).expand(1, 1, rows, cols).contiguous())


def _flex_masked(q, k, v, mask, tiles):
    """flex_attention with a mask tensor read inside the kernel (a closure over it: a traced input,
    so a new mask is no recompile)."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    if mask is None:
        return flex_attention(q, k, v, scale=1.0)
    count, index = tiles
    blocks = BlockMask.from_kv_blocks(count, index, BLOCK_SIZE=FLEX_BLOCK, mask_mod=lambda b, h, i, j: mask[i, j],
                                      seq_lengths=(q.shape[2], k.shape[2]), compute_q_blocks=False)
    return flex_attention(q, k, v, block_mask=blocks, scale=1.0)


def flex_attention_kernel(q, k, v, mask):
    """PyTorch's FlexAttention (fp32 accumulation) with a boolean mask of any shape, e.g. a tree's:
    one generated kernel instead of eager's six or the memory-efficient kernel's dense bias. Inside
    a compiled step it is traced with the step; elsewhere on CUDA it is compiled on its own (once per
    shape: during a graph's warm-up); on the CPU it runs flex's unfused reference (tests)."""
    global _flex_compiled
    t, n = q.shape[2], k.shape[2]
    # traced: the table is made in the graph (a cache filled while tracing would recompile it)
    if torch.compiler.is_compiling() or q.device.type != "cuda":
        return _flex_masked(q, k, v, mask, _tiles(t, n, q.device))
    key = (t, n, q.device)
    if key not in _flex_tiles:  # a new shape: its table, and room for its compile (a tree step has two a bucket)
        _flex_tiles[key] = _tiles(t, n, q.device)
        allow_specialisations(1)
    if _flex_compiled is None:
        _flex_compiled = torch.compile(_flex_masked, fullgraph=True, dynamic=False)
    return _flex_compiled(q, k, v, mask, _flex_tiles[key])


ATTENTION = {"eager": eager_attention, "sdpa": sdpa_attention, "flash_attn": flash_attn_attention,
             "sdpa_flash": sdpa_flash_attention, "sdpa_efficient": sdpa_efficient_attention,
             "sdpa_cudnn": sdpa_cudnn_attention, "flex": flex_attention_kernel}
