"""Plain greedy decoding with our GPT-Neo (`naive`: eager attention, a dynamic KV cache, one token
per step), and the same in half precision (`half`: fp16, bf16 by option; attention scores stay in
float32, since GPT-Neo's unscaled scores overflow fp16, as in transformers)."""

from __future__ import annotations

import torch

from ..generation import Clock, greedy
from ..models.gpt_neo import GPTNeo
from .base import Strategy
from .techniques import parse_technique, resolve_dtype


class Naive(Strategy):
    name = "naive"
    technique = parse_technique("naive")

    def __init__(self, dtype: str | torch.dtype | None = None):
        self.dtype = resolve_dtype(self.technique, dtype)

    def prepare(self, checkpoint, device):
        self.device = torch.device(device)
        self.model = GPTNeo.from_pretrained(checkpoint, device=self.device, dtype=self.dtype).eval()
        self.clock = Clock(self.device)

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        return greedy(self.model, prompt, max_new_tokens, eos_id, self.clock)


class Half(Naive):
    name = "half"
    technique = parse_technique("half")
