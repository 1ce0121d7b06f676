"""Host-load counters and the launch-cost probe around a timed round (counters on fake /proc/stat files)."""

import os
import sys

import pytest
import torch

from llmopt import host_load, measure
from llmopt.timing import PassTimer, Sample


def stat_file(path, user, system, idle, steal):
    path.write_text(f"cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    return path


def test_other_cpu_is_the_hosts_busy_time_less_this_process(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    before = host_load.Counters(busy_s=10.0, steal_s=1.0, own_s=5.0, involuntary_switches=3)
    after = host_load.Counters(busy_s=13.0, steal_s=1.5, own_s=6.0, involuntary_switches=7)
    assert host_load.between(before, after) == host_load.Load(other_cpu_s=2.0, steal_s=0.5, involuntary_switches=4)
    # coarse ticks never make other work negative
    quiet = host_load.Counters(busy_s=10.5, steal_s=1.0, own_s=6.0, involuntary_switches=3)
    assert host_load.between(before, quiet).other_cpu_s == 0.0
    read = host_load.read(stat_file(tmp_path / "stat", user=3 * tick, system=tick, idle=100, steal=tick // 2))
    assert read.busy_s == pytest.approx(4.0) and read.steal_s == pytest.approx(0.5, abs=1 / tick)


def test_no_proc_stat_means_no_reading(tmp_path):
    assert host_load.read(tmp_path / "absent") is None
    assert host_load.between(None, None) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_every_timed_round_records_the_host_load():
    samples = [PassTimer("cpu")(lambda: sum(range(10**5)) * 0 + 10) for _ in range(3)]
    assert all(s.host is not None and s.host.involuntary_switches >= 0 for s in samples)
    stats = measure.host_stats(samples)
    assert len(stats["round_other_cpu_s"]) == len(stats["round_steal_s"]) == 3
    assert measure.host_stats([Sample(0.0, 1.0, None, 1)]) == {}


def test_every_timed_round_records_the_hosts_launch_cost_outside_its_time():
    clock = iter(range(100))  # a fake clock read twice per pass: each pass lasts exactly 1 s
    timer = PassTimer("cpu", lambda: float(next(clock)))
    samples = [timer(lambda: 10) for _ in range(3)]
    assert [s.wall_s for s in samples] == [1.0] * 3  # the probes on either side are not in it
    assert all(0 < s.launch_s < 0.01 for s in samples)
    assert measure.host_stats(samples)["round_launch_s"] == [s.launch_s for s in samples]
    assert PassTimer("cpu", probe_launches=False)(lambda: 10).launch_s is None


def test_the_launch_probe_issues_the_ops_it_is_asked_for():
    x = torch.zeros(1)
    assert host_load.launch_s(x, ops=7) > 0 and x.item() == 7
