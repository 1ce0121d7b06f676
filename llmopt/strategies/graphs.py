"""Static KV cache + CUDA graphs (`graphs`): the decode step over a preallocated cache, captured once
and replayed, either with torch.cuda.CUDAGraph directly or through torch.compile(mode="reduce-overhead").

The step has static shapes per *bucket* (how many cache slots attention reads: a multiple of
`bucket`, up to the model's context), so one graph per bucket is captured in prepare(); each
generation uses the smallest bucket that holds its prompt and new tokens. Capture/compile time is
one-off and reported as `setup_s`, apart from the per-token timings.
"""

from __future__ import annotations

import math
import time

import torch

from ..models.static_cache import StaticDecoder
from .base import register
from .compose import Fast

RUNTIMES = ("cuda_graph", "torch.compile", "static")  # "static": the same step, not captured (CPU tests)


class GraphRunner:
    """Runs a static-shape step, `decoder.step(length)`, for a fixed set of lengths, captured or not.

    The decoder (StaticDecoder, or spec_stream's StaticTreeDecoder) has `cache.max_len` slots, a
    `cache.pos`, and `static_tensors()`: every tensor its step reads or writes in place."""

    def __init__(self, decoder: StaticDecoder, runtime: str, bucket: int, warmup: int = 3):
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown graphs runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
        self.decoder, self.runtime = decoder, runtime
        max_len = decoder.cache.max_len
        self.lengths = sorted({min(max_len, b * bucket) for b in range(1, math.ceil(max_len / bucket) + 1)})
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.compiled = None
        start = time.perf_counter()
        if runtime == "cuda_graph":
            self._capture(warmup)
        elif runtime == "torch.compile":
            self._compile(warmup)
        self.setup_s = time.perf_counter() - start

    def length_for(self, total: int) -> int:
        """The smallest bucket holding `total` positions (prompt + new tokens)."""
        for n in self.lengths:
            if n >= total:
                return n
        raise ValueError(f"{total} positions exceed the static cache ({self.lengths[-1]} slots: the model's context)")

    def _capture(self, warmup: int) -> None:
        decoder = self.decoder
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (allocator, cuBLAS handles) off the capture stream
            for n in self.lengths:
                decoder.cache.pos.zero_()
                for _ in range(warmup):
                    decoder.step(n)
        torch.cuda.current_stream().wait_stream(side)
        for n in self.lengths:
            decoder.cache.pos.zero_()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                decoder.step(n)
            self.graphs[n] = graph
        torch.cuda.synchronize()

    def _compile(self, warmup: int) -> None:
        decoder = self.decoder
        for t in decoder.static_tensors():
            torch._dynamo.mark_static_address(t)  # mutated in place: must stay inside the cudagraph
        import torch._dynamo.config as dynamo_config

        for knob in ("recompile_limit", "cache_size_limit"):  # one specialisation per bucket
            if hasattr(dynamo_config, knob):
                setattr(dynamo_config, knob, max(getattr(dynamo_config, knob), len(self.lengths) + 2))
                break
        self.compiled = torch.compile(decoder.step, mode="reduce-overhead", dynamic=False, fullgraph=False)
        for n in self.lengths:  # compile and record every bucket now, not during timing
            decoder.cache.pos.zero_()
            for _ in range(warmup):
                torch.compiler.cudagraph_mark_step_begin()
                self.compiled(n)
        torch.cuda.synchronize()

    def __call__(self, length: int) -> None:
        """One step over `length` slots; its results are in the decoder's output tensors."""
        if self.runtime == "cuda_graph":
            self.graphs[length].replay()
        elif self.runtime == "torch.compile":
            torch.compiler.cudagraph_mark_step_begin()
            self.compiled(length)
        else:
            self.decoder.step(length)


@register("graphs")
class Graphs(Fast):
    """`naive` (fp32, eager attention) with the static cache and a captured decode step."""

    preset = ("graphs",)
