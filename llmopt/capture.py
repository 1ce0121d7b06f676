"""Capturing a static-shape step once and replaying it: what `graphs` adds to the plain decode step
(models/static_cache.py) and to Speculative Streaming's tree step (spec_stream/static.py).

Either with torch.cuda.CUDAGraph directly or through torch.compile (mode "reduce-overhead", or
"max-autotune" with gpt-fast's coordinate-descent tuning: COMPILE_MODES). The
step has static shapes per *bucket* (how many cache slots attention reads: a multiple of `bucket`,
up to the cache's slots), so one graph per bucket is captured up front; each generation uses the
smallest bucket that holds its prompt and new tokens. Capture/compile time is one-off and reported
as `setup_s`, apart from the per-token timings. The options are validated here, once
(`capture_options`), for the technique grammar and the runner alike.

torch.compile is used the gpt-fast way: the whole step is one graph (fullgraph=True: a graph
break fails setup instead of splitting the step), its only Python value is the bucket (one
specialisation per bucket, all compiled during setup), the position lives in a device tensor, every
tensor the step mutates has a static address, and a recompile while decoding raises
(fail_on_recompile) instead of silently costing a compile or an eager fallback mid-measurement.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Protocol

import torch

from .models.attention import allow_specialisations

# torch.compile's runtimes and the mode each compiles with on CUDA: "reduce-overhead" (inductor's
# kernels replayed as CUDA graphs), or "max-autotune" (the same, with matmul templates and kernel
# configurations benchmarked while compiling, and the coordinate-descent tuning of inductor's own
# kernels that gpt-fast turns on: minutes of compilation for each bucket)
COMPILE_MODES = {"torch.compile": "reduce-overhead", "torch.compile:max-autotune": "max-autotune"}
RUNTIMES = ("cuda_graph", *COMPILE_MODES, "static")  # "static": the same step, not captured (CPU tests)
# the default because, cell by cell in `pytest bench` on E2E (H100, session 20), neither compiled
# runtime's step was faster, and compiling costs 16-79 s a cell (the size sweep favours them: README)
DEFAULT_RUNTIME = "cuda_graph"
DEFAULT_BUCKET = 256


class StaticStep(Protocol):
    """What a capturable decoder offers (StaticDecoder, StaticTreeDecoder): a cache with `max_len`
    slots and a device `pos`, `static_tensors()` (every tensor the step reads or writes in place)
    and `step(length)`, which attends over the first `length` slots."""

    cache: object

    def static_tensors(self) -> list[torch.Tensor]: ...

    def step(self, length: int) -> object: ...


def capture_options(runtime: str | None = None, bucket: int | None = None,
                    max_len: int | None = None) -> tuple[str, int, int | None]:
    """The runtime, bucket and static cache slots (None: the model's context), defaults applied,
    or ValueError saying what is wrong."""
    runtime = runtime or DEFAULT_RUNTIME
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown graphs runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    bucket = int(bucket or DEFAULT_BUCKET)
    if bucket < 1:
        raise ValueError(f"bucket must be positive, got {bucket}")
    if max_len is not None and int(max_len) < 2:
        raise ValueError(f"max_len must be at least 2 cache slots, got {max_len}")
    return runtime, bucket, None if max_len is None else int(max_len)


class GraphRunner:
    """Runs a static-shape step, `decoder.step(length)`, for a fixed set of lengths, captured or not.

    `backend`: torch.compile's backend for the "torch.compile" runtime (inductor; "aot_eager" traces
    the same graph without generating code: CPU tests). On CUDA, inductor runs mode="reduce-overhead"
    (CUDA graphs); elsewhere the compiled step runs as generated."""

    def __init__(self, decoder: StaticStep, runtime: str, bucket: int, warmup: int = 3,
                 backend: str | Callable = "inductor"):
        runtime, bucket, _ = capture_options(runtime, bucket)
        self.decoder, self.runtime = decoder, runtime
        max_len = decoder.cache.max_len
        self.lengths = sorted({min(max_len, b * bucket) for b in range(1, math.ceil(max_len / bucket) + 1)})
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.compiled = None
        self.cuda = decoder.cache.pos.device.type == "cuda"
        start = time.perf_counter()
        if runtime == "cuda_graph":
            self._capture(warmup)
        elif runtime in COMPILE_MODES:
            self._compile(warmup, backend, COMPILE_MODES[runtime])
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

    def _compile(self, warmup: int, backend: str | Callable, mode: str) -> None:
        decoder = self.decoder
        for t in decoder.static_tensors():
            torch._dynamo.mark_static_address(t)  # mutated in place: must stay inside the cudagraph
        allow_specialisations(len(self.lengths))
        inductor = backend == "inductor"
        self.compiled = torch.compile(decoder.step, backend=backend, mode=mode if self.cuda and inductor else None,
                                      fullgraph=True, dynamic=False)
        with tuned(inductor and mode == "max-autotune"):
            for n in self.lengths:  # compile and record every bucket now, not during timing
                decoder.cache.pos.zero_()
                for _ in range(warmup):
                    torch.compiler.cudagraph_mark_step_begin()
                    self.compiled(n)
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, length: int) -> None:
        """One step over `length` slots; its results are in the decoder's output tensors."""
        if self.runtime == "cuda_graph":
            self.graphs[length].replay()
        elif self.runtime in COMPILE_MODES:
            torch.compiler.cudagraph_mark_step_begin()
            with torch.compiler.set_stance("fail_on_recompile"):  # every bucket was compiled in setup
                self.compiled(length)
        else:
            self.decoder.step(length)


def tuned(on: bool):
    """While compiling: inductor tunes its generated kernels by coordinate descent, as gpt-fast
    does (a batch-1 step's matrix-vector products are such kernels under max-autotune)."""
    if not on:
        return contextlib.nullcontext()
    import torch._inductor.config as inductor_config  # a torch submodule, not loaded by `import torch`

    return inductor_config.patch(coordinate_descent_tuning=True)

