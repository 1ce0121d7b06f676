"""What else the host did while a round was timed.

At batch 1 an eager decode is bound by the host issuing kernels, so a round is slow when the host
is busy: other processes, a hypervisor taking the CPU away (steal time, on a virtual machine), or
this process being descheduled. Slow rounds and whole slow processes were seen on the H200 runner
(README, "Measurement noise and the gate"); these counters say which of the three it was.

The runner's host also ran slower with none of them showing (a launch cost 50% higher in one cell
of a process than in the next, no other process and no steal; session 10), so `launch_s` probes
the host's speed itself: what one tiny launch costs, timed beside every round. A code change does
not move it; a slower host does, and an eager step moves with it.

The counters are Linux only (/proc/stat); elsewhere every reading is None. Reading costs tens of
microseconds and a probe a millisecond or two, so both are taken around whole rounds, never inside
a step.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

try:
    import resource
except ImportError:  # Windows
    resource = None

PROC_STAT = Path("/proc/stat")
# /proc/stat's "cpu" line: user nice system idle iowait irq softirq steal guest guest_nice, in
# USER_HZ ticks; guest time is already counted in user
BUSY_FIELDS = (0, 1, 2, 5, 6)
STEAL_FIELD = 7
# ~1-2 ms of a GPU host's time: nothing beside a round of about a second, and enough launches that
# one timer tick or one preemption is a small part of it
LAUNCH_PROBE_OPS = 200


@dataclass(frozen=True)
class Counters:
    busy_s: float  # every CPU's non-idle time, this process included
    steal_s: float  # time the hypervisor ran something else on this machine's CPUs
    own_s: float  # this process's CPU time, all threads
    involuntary_switches: int  # times this process was preempted


@dataclass(frozen=True)
class Load:
    """The host during one region: CPU-seconds of other work, of steal, and preemptions of this
    process."""

    other_cpu_s: float
    steal_s: float
    involuntary_switches: int


def read(stat: Path = PROC_STAT) -> Counters | None:
    if resource is None:
        return None
    try:
        fields = stat.read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    ticks = [int(f) for f in fields]
    steal = ticks[STEAL_FIELD] if len(ticks) > STEAL_FIELD else 0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return Counters(sum(ticks[i] for i in BUSY_FIELDS) / tick, steal / tick, time.process_time(),
                    usage.ru_nivcsw)


def between(before: Counters | None, after: Counters | None) -> Load | None:
    if before is None or after is None:
        return None
    own = after.own_s - before.own_s
    # ticks are coarse (10 ms on most kernels): a quiet host can read slightly below this process
    other = max(0.0, after.busy_s - before.busy_s - own)
    return Load(other, after.steal_s - before.steal_s, after.involuntary_switches - before.involuntary_switches)


def launch_s(x: torch.Tensor, ops: int = LAUNCH_PROBE_OPS) -> float:
    """Seconds the host takes to issue one tiny op: `ops` in-place adds to the one-element tensor
    `x`, then its device synchronised. A GPU runs such an add faster than a host issues it, so on
    CUDA this is the host's cost per launch, which an eager batch-1 step (a few hundred launches)
    moves with; on a CPU it is the dispatch cost."""
    start = time.perf_counter()
    for _ in range(ops):
        x.add_(1)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return (time.perf_counter() - start) / ops
