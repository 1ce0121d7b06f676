"""What else the host did while a round was timed.

At batch 1 an eager decode is bound by the host issuing kernels, so a round is slow when the host
is busy: other processes, a hypervisor taking the CPU away (steal time, on a virtual machine), or
this process being descheduled. Slow rounds and whole slow processes were seen on the H200 runner
(README, "Measurement noise and the gate"); these counters say which of the three it was.

Linux only (/proc/stat); elsewhere every reading is None. Reading costs tens of microseconds, so
it is taken around whole rounds, never inside a step.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import resource
except ImportError:  # Windows
    resource = None

PROC_STAT = Path("/proc/stat")
# /proc/stat's "cpu" line: user nice system idle iowait irq softirq steal guest guest_nice, in
# USER_HZ ticks; guest time is already counted in user
BUSY_FIELDS = (0, 1, 2, 5, 6)
STEAL_FIELD = 7


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
