"""Plain greedy decoding with our GPT-Neo: eager attention, a dynamic KV cache, one token per step."""

from __future__ import annotations

import time

import torch

from ..models.gpt_neo import GPTNeo
from .base import Clock, Generation, Strategy, parse_dtype, register


@register("naive")
class Naive(Strategy):
    def __init__(self, dtype: str | torch.dtype = "float32"):
        self.dtype = parse_dtype(dtype)

    def prepare(self, checkpoint, device):
        self.device = torch.device(device)
        self.model = GPTNeo.from_pretrained(checkpoint, device=self.device, dtype=self.dtype).eval()
        self.clock = Clock(self.device)

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        return greedy(self.model, prompt, max_new_tokens, eos_id, self.clock)


def greedy(model: GPTNeo, prompt: list[int], max_new_tokens: int, eos_id: int | None, clock: Clock) -> Generation:
    """Greedy decoding, one forward call per token; stops at EOS (kept) or max_new_tokens."""
    cache = model.new_cache()
    ids = torch.tensor([prompt], device=model.lm_head.weight.device)

    def step():
        nonlocal ids
        ids = model(ids, cache)[:, -1:].argmax(-1)  # stays on the device: the next step's input
        return ids

    return decode_loop(step, Generation(tokens=[], forward_calls=0), max_new_tokens, eos_id, clock, clock())


def decode_loop(step, out: Generation, max_new_tokens: int, eos_id: int | None, clock: Clock,
                start: float) -> Generation:
    """Call `step()` (one forward; returns the next token id, on the device) until EOS (kept) or
    max_new_tokens, timing the forward apart from reading the token back."""
    tokens = out.tokens
    while len(tokens) < max_new_tokens:
        t0 = clock()
        ids = step()
        t1 = clock()
        token = int(ids)
        t2 = time.perf_counter()
        out.forward_s += t1 - t0
        out.verify_s += t2 - t1
        out.forward_calls += 1
        tokens.append(token)
        if len(tokens) == 1:
            out.ttft_s = t2 - start
        if token == eos_id:
            break
    return out
