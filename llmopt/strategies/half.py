"""Half precision: plain greedy decoding with fp16 weights and activations (bf16 by option).

Attention scores stay in float32 (GPT-Neo's unscaled scores overflow fp16), as in transformers."""

from __future__ import annotations

import torch

from .base import register
from .naive import Naive


@register("half")
class Half(Naive):
    def __init__(self, dtype: str = "float16"):
        super().__init__(dtype)
        if self.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"half precision means float16 or bfloat16, not {dtype!r}")
