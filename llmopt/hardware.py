"""Hardware facts a benchmark record carries beside its speeds: how close a decode step comes to
the memory-bandwidth floor, and how many kernels it runs.

Batch-1 decoding reads every weight once per step, so a step cannot be faster than weight bytes /
memory bandwidth (the floor). `copy_bandwidth` measures the bandwidth on the device of the run
(a device-to-device copy: what a step's weight reads can at best achieve), `weight_bytes` says
what a step reads, and `bandwidth_floor_fraction` how close a measured step comes (1.0: at the
floor). `kernels_per_token` counts the device kernels behind each token: what CUDA graphs and
torch.compile's fusion exist to cut. `host_op_s` times the host issuing one tiny op: what a batch-1
eager step, a few hundred launches, is bound by. On a CPU there is neither a bandwidth copy worth timing nor a
kernel to count: both return None.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Callable, Iterable, NamedTuple

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from . import host_load
from .models.gpt_neo import param_bytes


def copy_bandwidth(device, mib: int = 1024, repeats: int = 5) -> float | None:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read + bytes written (2 * size / t):
    the median of `repeats` copies of a `mib` MiB buffer, each timed with CUDA events after a
    warm-up. None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    src = torch.ones(mib * 2 ** 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    seconds = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        seconds.append(start.elapsed_time(end) / 1e3)
    return 2 * src.numel() / statistics.median(seconds)


def host_op_s(device, ops: int = 1000, repeats: int = 5) -> float:
    """Seconds the host takes to issue one tiny op on `device` (`host_load.launch_s`): the median
    over `repeats` batches of `ops`, after one batch of warm-up (the first launches load the kernel)."""
    x = torch.zeros(1, device=torch.device(device))
    host_load.launch_s(x, ops)
    return statistics.median(host_load.launch_s(x, ops) for _ in range(repeats))


def weight_bytes(model: nn.Module) -> int:
    """Bytes a decode step reads from weights: the parameters (the tied head once, the fused
    query/key/value weight once: its parts are views) and the floating-point buffers. The boolean
    causal masks are left out: a step reads at most a row of them."""
    params = {id(p) for p in model.parameters()}
    buffers = sum(b.numel() * b.element_size() for b in model.buffers()
                  if b.is_floating_point() and id(b) not in params)
    return param_bytes(model) + buffers


def bandwidth_floor_fraction(weight_bytes: int, bandwidth: float | None, seconds_per_token: float) -> float | None:
    """(weight_bytes / bandwidth) / seconds_per_token: 1.0 is a step at the bandwidth floor, 0.5
    twice as slow. None without a bandwidth (CPU) or a positive time."""
    if not bandwidth or seconds_per_token <= 0:
        return None
    return weight_bytes / bandwidth / seconds_per_token


def on_device(events: Iterable) -> list:
    """The profiler's events that ran on a CUDA device (kernels, memcpy and memset; inside a CUDA
    graph, each of the graph's kernels: one host launch, many kernels)."""
    return [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]


def device_kernels(events: Iterable) -> int:
    """How many of the profiler's events ran on a CUDA device (on_device)."""
    return len(on_device(events))


def device_idle(events: Iterable) -> tuple[float, Counter]:
    """When the device waited between its own events (on_device), in the profiler's µs: the idle
    time from the first one's start to the last one's end, and the same time by the name of the
    event that came after each gap. Inside a CUDA graph a gap is the graph's own latency between
    nodes; between replays it is the host's turn (the gap lands on the step's first kernel)."""
    idle, before, end = 0.0, Counter(), None
    for start, stop, name in sorted((e.time_range.start, e.time_range.end, e.name) for e in on_device(events)):
        if end is not None and start > end:
            idle += start - end
            before[name] += start - end
        end = stop if end is None else max(end, stop)
    return idle, before


class DeviceProfile(NamedTuple):
    kernels_per_token: float
    kernel_s_per_token: float  # the device's busy time: the kernels' durations summed
    # the profiled call's tokens per forward call: 1 for plain decoding, a drafting method's
    # acceptance on the profiled prompt (which need not be its mean over a workload)
    tokens_per_step: float = 1.0


def device_profile(step_fn: Callable[[], object], tokens: int) -> DeviceProfile | None:
    """One call of `step_fn` (which makes `tokens` tokens: one decode step, or a whole generate call
    with its prefill) under torch.profiler: its CUDA kernels counted (device_kernels) and their
    durations summed, per token. Beside the measured time per token, the busy time says how much of
    a token the device computes and how much it waits for the host. Warm `step_fn` up first:
    capture and compilation would be counted. None without CUDA (a CPU runs ops, not kernels)."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step_fn()
        torch.cuda.synchronize()
    kernels = on_device(prof.events())
    busy_us = sum(e.time_range.elapsed_us() for e in kernels)
    return DeviceProfile(len(kernels) / tokens, busy_us / 1e6 / tokens)


def kernels_per_token(step_fn: Callable[[], object], tokens: int) -> float | None:
    """Device kernels per token of one call of `step_fn` (device_profile); None without CUDA."""
    found = device_profile(step_fn, tokens)
    return None if found is None else found.kernels_per_token
