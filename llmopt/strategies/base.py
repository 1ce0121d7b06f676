"""The Strategy interface every technique implements: prepare a checkpoint once, then generate."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from ..generation import Generation


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
