"""FlashAttention-2 (`flash2`): fp16 (bf16 by option) greedy decoding whose attention runs
FlashAttention-2 kernels: the `flash_attn` package when importable (flash_attn_func, window_size for
GPT-Neo's local layers, softmax_scale=1.0), else PyTorch's SDPA with the FLASH_ATTENTION backend
forced. The provider that ran is recorded as `attention_provider`; CPU or fp32 fail with a message.
Also the `best` preset (see compose.BEST)."""

from __future__ import annotations

from .base import Strategy, register
from .compose import BEST, Fast, build


@register("flash2")
class Flash2(Fast):
    preset = ("flash2",)


@register("best")
def best(**options) -> Strategy:
    """The fastest composition measured (compose.BEST), under the name `best`."""
    strategy = build("+".join(BEST), **options)
    strategy.name = "best"
    return strategy


best.objective = "ss" if "ss" in BEST else "lm"  # the checkpoint it needs (see technique_objective)
