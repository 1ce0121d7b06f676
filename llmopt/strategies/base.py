"""The Strategy interface every technique implements, and the registry of techniques by name."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import torch


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


class Strategy:
    """Prepare a checkpoint on a device once, then generate greedily for one prompt at a time."""

    name: ClassVar[str]
    dtype: torch.dtype = torch.float32
    attention_provider: str = "eager"
    runtime: str = "eager"
    objective: ClassVar[str] = "lm"  # the training objective a checkpoint needs for this technique
    setup_s: float = 0.0  # one-off capture/compile time spent in prepare() (graphs), apart from timings
    device: torch.device  # set by prepare()

    def prepare(self, checkpoint: Path, device: str | torch.device) -> None:
        raise NotImplementedError

    def generate(self, prompt: list[int], max_new_tokens: int, eos_id: int | None) -> Generation:
        raise NotImplementedError

    def config(self) -> dict:
        """Everything that identifies what ran, for the benchmark record."""
        return {"dtype": str(self.dtype).removeprefix("torch."),
                "attention_provider": self.attention_provider, "runtime": self.runtime}


STRATEGIES: dict[str, Callable[..., Strategy]] = {}


def register(name: str):
    def wrap(cls):
        cls.name = name
        STRATEGIES[name] = cls
        return cls
    return wrap


def get_strategy(name: str, **options) -> Strategy:
    """A registered technique, or a combination such as 'half+graphs' (see strategies/compose.py);
    an unknown or impossible name raises ValueError saying why, before any work."""
    validate_technique(name)
    if name in STRATEGIES:
        return STRATEGIES[name](**options)
    from .compose import build

    return build(name, **options)


def validate_technique(name: str) -> None:
    """Raise ValueError saying why, unless get_strategy(name) can build `name` (for CLI/bench checks)."""
    if name in STRATEGIES:
        return
    if not isinstance(name, str) or "+" not in name and name != "bf16":
        raise ValueError(f"unknown technique {name!r}; known: {', '.join(sorted(STRATEGIES))} "
                         "and '+' combinations of naive/half/bf16/flash2/graphs")
    from .compose import parse_technique

    parse_technique(name)


def known_technique(name: str) -> bool:
    """Whether `name` is a registered technique or a valid combination such as 'flash2+graphs'."""
    try:
        validate_technique(name)
    except ValueError:
        return False
    return True


def technique_objective(name: str) -> str:
    """The training objective a technique's checkpoint needs: "ss" if it includes ss, else "lm"."""
    validate_technique(name)
    if name in STRATEGIES:
        return STRATEGIES[name].objective
    return "ss" if "ss" in name.split("+") else "lm"


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    return DTYPES[dtype]


class Clock:
    """Host clock that first waits for the device, so GPU work lands in the interval that queued it."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()
