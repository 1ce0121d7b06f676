"""The reference every user knows: stock transformers `generate`, fp32, eager attention, dynamic cache."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, GPTNeoForCausalLM
from transformers.generation.streamers import BaseStreamer

from ..generation import Clock, Generation
from .base import Strategy
from .techniques import parse_dtype


class FirstTokenTimer(BaseStreamer):
    """generate() hands the streamer the prompt first, then each new token: time the first token."""

    def __init__(self, clock: Clock):
        self.clock, self.calls, self.first = clock, 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            self.first = self.clock()

    def end(self):
        pass


class HF(Strategy):
    name = "hf"

    def __init__(self, dtype: str | torch.dtype = "float32"):
        self.dtype = parse_dtype(dtype)

    def prepare(self, checkpoint, device):
        self.device = torch.device(device)
        self.model = GPTNeoForCausalLM.from_pretrained(checkpoint, dtype=self.dtype, attn_implementation="eager")
        self.model.to(self.device).eval()
        self.clock = Clock(self.device)

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        ids = torch.tensor([prompt], device=self.device)
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                  eos_token_id=eos_id, pad_token_id=eos_id if eos_id is not None else 0)
        timer = FirstTokenTimer(self.clock)
        start = self.clock()
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, streamer=timer)
        end = self.clock()
        tokens = out[0, len(prompt):].tolist()
        # generate() runs one forward per token and cannot be split finer from outside
        return Generation(tokens=tokens, forward_calls=len(tokens), ttft_s=(timer.first or end) - start,
                          forward_s=end - start)
