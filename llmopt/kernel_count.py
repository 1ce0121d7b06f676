"""Kernels per token, counted in a child process: the timed process never starts the profiler.

A finished torch.profiler session can leave CUPTI attached to its process: Kineto finalizes
CUPTI only when TEARDOWN_CUPTI=1 (pytorch/pytorch#144455, about 10-20% slower training after
profiling), and torch turns teardown off where CUDA graphs are in use on older CUDA. On the H200
runner, cells timed in a process after other cells had been profiled ran 13-41% slower than the
same cells timed in processes that had not profiled yet (docs/results/NVIDIA-H200/session8).
So the benchmark process only asks: a child loads each cell's technique again on the same
checkpoint, warms it up, profiles one generate call of the first prompt
(hardware.device_profile) and answers in JSON on its last line of output.

`python -m llmopt.kernel_count` is the child: a Job as JSON on stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import hardware
from .options import build_strategy

# a child re-prepares every cell of a dataset: captures graphs, compiles (torch.compile runtime)
TIMEOUT_S = 1800.0
WARMUP_CALLS = 2  # lazy initialisation (allocator, cuBLAS handles) stays out of the profiled call


@dataclass(frozen=True)
class Job:
    """What the child profiles: each (technique, options) on one checkpoint and prompt."""

    checkpoint: str
    device: str
    prompt: list[int]
    max_new_tokens: int
    eos_id: int | None
    cells: list[tuple[str, dict]]


def count(job: Job) -> list[hardware.DeviceProfile | None]:
    """Each cell's kernels and device busy time per token, from a child process; None for a cell
    whose count failed (a warning says why) and everywhere off CUDA."""
    if torch.device(job.device).type != "cuda" or not job.cells:
        return [None] * len(job.cells)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)  # this llmopt, installed or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    try:
        done = subprocess.run([sys.executable, "-m", "llmopt.kernel_count"], input=json.dumps(asdict(job)),
                              capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        warnings.warn(f"kernels not counted: the profiling process ran past {TIMEOUT_S:.0f} s")
        return [None] * len(job.cells)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        warnings.warn(f"kernels not counted: the profiling process failed ({why})")
        return [None] * len(job.cells)
    found = []
    for (technique, _), answer in zip(job.cells, json.loads(lines[-1])):
        if answer is not None and "error" in answer:
            warnings.warn(f"{technique}: kernels not counted ({answer['error']})")
            answer = None
        found.append(None if answer is None else hardware.DeviceProfile(**answer))
    return found


def profile_cells(job: Job) -> list[dict | None]:
    """The child's work: each cell prepared, warmed up and profiled in turn, then freed."""
    answers = []
    for technique, options in job.cells:
        try:
            strategy = build_strategy(technique, options)
            strategy.prepare(Path(job.checkpoint), job.device)
            for _ in range(WARMUP_CALLS):  # greedy: the profiled call makes as many tokens in as many steps
                done = strategy.generate(job.prompt, job.max_new_tokens, job.eos_id)
            tokens = len(done.tokens)
            found = hardware.device_profile(lambda: strategy.generate(job.prompt, job.max_new_tokens, job.eos_id),
                                            tokens)
            answers.append(None if found is None else found._replace(tokens_per_step=tokens / done.forward_calls)._asdict())
        except Exception as exc:  # noqa: BLE001 - one cell's count fails, not the others'
            answers.append({"error": f"{type(exc).__name__}: {exc}"})
        strategy = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return answers


def main() -> None:
    fields = json.load(sys.stdin)
    job = Job(**{**fields, "cells": [tuple(c) for c in fields["cells"]]})
    print(json.dumps(profile_cells(job)))


if __name__ == "__main__":
    main()
