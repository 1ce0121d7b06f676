"""llmopt.hardware: the pure parts on any machine (weight bytes, the floor fraction, counting device
kernels among profiler events, None for what a CPU lacks); bandwidth and kernel counts on CUDA."""

from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

from llmopt.hardware import (bandwidth_floor_fraction, copy_bandwidth, device_idle, device_kernels, device_profile,
                             host_op_s,
                             kernels_per_token, weight_bytes)
from llmopt.models.gpt_neo import GPTNeo, make_config

from test_architecture import graph

CUDA = torch.cuda.is_available()


def test_weight_bytes_count_each_weight_once():
    model = GPTNeo.random(make_config("tiny", vocab_size=53), seed=0)
    config = model.config
    d, layers, vocab, inner = config.hidden_size, config.num_layers, config.vocab_size, 4 * config.hidden_size
    per_block = 4 * d * d + d + 2 * d * inner + inner + d + 4 * d  # attention, MLP, two layer norms
    params = vocab * d + config.max_position_embeddings * d + layers * per_block + 2 * d  # tied head once
    assert weight_bytes(model) == 4 * params  # float32; the boolean causal masks are no weights
    model.fuse_qkv()  # the fused weight's parts are views of it: nothing new to read
    assert weight_bytes(model) == 4 * params
    assert weight_bytes(model.half()) == 2 * params
    model.register_buffer("scale", torch.ones(10, dtype=torch.float16))
    assert weight_bytes(model) == 2 * params + 20


def test_bandwidth_floor_fraction():
    assert bandwidth_floor_fraction(2e9, 4e12, 1e-3) == pytest.approx(0.5)  # floor 0.5 ms, step 1 ms
    assert bandwidth_floor_fraction(2e9, 4e12, 0.5e-3) == pytest.approx(1.0)
    assert bandwidth_floor_fraction(2e9, None, 1e-3) is None  # no bandwidth measured (CPU)
    assert bandwidth_floor_fraction(2e9, 4e12, 0.0) is None


def test_device_kernels_count_cuda_events_only():
    events = [SimpleNamespace(device_type=t) for t in (DeviceType.CPU, DeviceType.CUDA, DeviceType.CUDA, DeviceType.CPU)]
    assert device_kernels(events) == 2 and device_kernels([]) == 0


def test_device_idle_sums_the_gaps_between_device_events_by_the_event_that_waited():
    def event(name, start, end, device=DeviceType.CUDA):
        return SimpleNamespace(name=name, device_type=device, time_range=SimpleNamespace(start=start, end=end))

    events = [event("gemm", 10, 20), event("copy", 25, 27), event("host", 0, 100, DeviceType.CPU),
              event("gemm", 27, 30), event("attn", 28, 29),  # back to back, then inside the gemm: no gap
              event("copy", 40, 41)]
    idle, before = device_idle(reversed(events))  # in any order
    assert idle == 15 and before == {"copy": 15}  # 20..25 and 30..40; the CPU event is no device time
    assert device_idle([]) == (0.0, {})


def test_host_op_s_is_a_launch_cost_per_op():
    device = "cuda" if CUDA else "cpu"
    one = host_op_s(device, ops=200, repeats=3)
    assert 1e-8 < one < 1e-3  # a host issues a tiny op in nanoseconds to a fraction of a millisecond
    # per op, not per batch: ten times the ops cost about the same per op, not ten times more
    assert host_op_s(device, ops=2000, repeats=3) < 5 * one


def test_hardware_imports_only_the_model_layer_and_the_launch_probe():
    assert {m.split(".")[0] for m in graph()["hardware"]} <= {"models", "host_load"}


@pytest.mark.skipif(CUDA, reason="checks what a CPU-only machine reports")
def test_a_cpu_has_no_bandwidth_floor_nor_kernels():
    assert copy_bandwidth("cpu") is None
    assert kernels_per_token(lambda: torch.ones(3) + 1, 1) is None
    assert device_profile(lambda: torch.ones(3) + 1, 1) is None


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_bandwidth_and_kernels():
    assert copy_bandwidth("cuda", mib=64) > 1e10  # any GPU copies faster than 10 GB/s
    x = torch.ones(1024, device="cuda")
    assert kernels_per_token(lambda: [x.add_(1) for _ in range(10)], 10) >= 1
    found = device_profile(lambda: [x.add_(1) for _ in range(10)], 10)
    assert found.kernels_per_token >= 1 and 0 < found.kernel_s_per_token < 0.01  # an add takes microseconds
