"""What every decoder shares, below all of them: a generation's record, the device-synchronised
clock, and the one greedy loop.

Plain greedy decoding (`greedy`) is the reference every fast path must reproduce token for token,
and the loop (`decode_loop`) that times it is the loop the eager techniques (naive, half, bf16,
flash2) and the captured step of `graphs` run: one definition of what `forward_calls`, `ttft_s`
and the per-phase timings mean. Speculative decoders (spec_stream) fill the same `Generation`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .models.gpt_neo import GPTNeo, KVCache


@dataclass
class Generation:
    """One greedy generation: the new tokens (through EOS, never past it) and how they were made."""

    tokens: list[int]
    forward_calls: int
    ttft_s: float = 0.0
    prepare_s: float = 0.0  # per-step host work before the forward: building inputs, trees, masks
    forward_s: float = 0.0  # model forward passes (device synchronised)
    verify_s: float = 0.0  # choosing/verifying tokens and committing the KV cache
    stats: dict = field(default_factory=dict)  # strategy-specific counters (e.g. accepted per depth)


class Clock:
    """Host clock that first waits for the device, so GPU work lands in the interval that queued it."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


Step = Callable[[], torch.Tensor]  # one forward; returns the next token id, left on the device


def decode_loop(step: Step, max_new_tokens: int, eos_id: int | None, clock: Clock,
                switch: Callable[[], Step] | None = None, queue_ahead: bool = False) -> Generation:
    """Call `step()` until EOS (kept) or max_new_tokens, timing the forward apart from reading the
    token back; its first call is the prefill. `switch()`, if given, runs once after the first
    token (timed as prepare_s, e.g. loading a static cache) and returns the step for the rest;
    `queue_ahead`: run that rest through `decode_ahead`."""
    out = Generation(tokens=[], forward_calls=0)
    tokens = out.tokens
    start = clock()
    while len(tokens) < max_new_tokens:
        if tokens and switch is not None:
            t0 = clock()
            step, switch = switch(), None
            out.prepare_s += clock() - t0
            if queue_ahead:
                decode_ahead(step, out, max_new_tokens, eos_id, clock)
                break
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


class ReadBehind:
    """The values a run of queued steps leave in a device tensor, each copied behind the step that
    wrote it into pinned host memory (slot k for the k-th step), so the host reads step k while
    later steps run. Two events do: step k is read before step k + 2 is queued."""

    def __init__(self, like: torch.Tensor, steps: int):
        self.log = torch.empty((steps, like.numel()), dtype=like.dtype, pin_memory=like.is_cuda)
        self.events = [torch.cuda.Event() for _ in range(2)] if like.is_cuda else []

    def copy(self, k: int, tensor: torch.Tensor) -> None:
        self.log[k].copy_(tensor.reshape(-1), non_blocking=True)
        if self.events:
            self.events[k % 2].record()

    def read(self, k: int) -> list[int]:
        if self.events:
            self.events[k % 2].synchronize()  # step k is done; the steps queued after it run on
        return self.log[k].tolist()


def decode_ahead(step: Step, out: Generation, max_new_tokens: int, eos_id: int | None, clock: Clock) -> None:
    """The rest of a generation with every step queued before the previous step's token is read, so
    that the host's turn (reading a token back, launching the next replay) overlaps the device's
    step instead of standing between steps. Only for a step whose inputs never leave the device (a
    captured static step): the host needs no token to queue the next one. Each step's token is
    copied out behind it (ReadBehind), before the next step overwrites it. When a token is EOS, the
    step after it is already queued: it runs, is timed and counted in stats (`steps_past_end`),
    and its token is dropped. Without host syncs between steps there is no per-phase split: all of
    it is forward_s."""
    remaining = max_new_tokens - len(out.tokens)
    out.stats["steps_past_end"] = 0  # the step count is known: only EOS leaves one queued past the end
    t0 = clock()
    ids = step()
    tokens = ReadBehind(ids, remaining)
    tokens.copy(0, ids)
    for k in range(remaining):
        if k + 1 < remaining:
            tokens.copy(k + 1, step())
        token = tokens.read(k)[0]
        out.tokens.append(token)
        out.forward_calls += 1
        if token == eos_id:
            out.stats["steps_past_end"] = int(k + 1 < remaining)
            break
    out.forward_s += clock() - t0  # waits for a step queued past EOS: the user waits for it too


def greedy(model: GPTNeo, prompt: list[int], max_new_tokens: int, eos_id: int | None, clock: Clock,
           forward: Callable[[torch.Tensor, KVCache], torch.Tensor] | None = None,
           static: Callable[[KVCache, torch.Tensor], Step] | None = None,
           queue_ahead: bool = False) -> Generation:
    """Greedy decoding over a dynamic KV cache, one forward call per token; stops at EOS (kept) or
    max_new_tokens. `forward(ids, cache)`: the logits to use (default: the model's own forward).
    `static(cache, ids)`: after the prefill, hand the cache and its token to a static-shape step
    and decode with the step it returns (the dynamic cache is dropped then); `queue_ahead`: queue
    each static step before the previous token is read (decode_ahead)."""
    forward = forward or model
    cache = model.new_cache()
    ids = torch.tensor([prompt], device=model.lm_head.weight.device)

    def step():
        nonlocal ids
        ids = forward(ids, cache)[:, -1:].argmax(-1)  # stays on the device: the next step's input
        return ids

    def switch():
        nonlocal cache
        step = static(cache, ids)
        cache = None  # the static cache holds a copy: free the dynamic one before decoding
        return step

    return decode_loop(step, max_new_tokens, eos_id, clock, switch if static else None, queue_ahead)
