"""Checkpoint identity across processes: the same recipe trains the same weights (the fingerprint
that lets the gate compare output hashes), and concurrent processes train a missing checkpoint once."""

import json
import os
import subprocess
import sys
from pathlib import Path

from llmopt.checkpoints import fingerprint

WORKER = Path(__file__).with_name("train_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def start(*args, env=None):
    """tests/train_worker.py in a process of its own (all of them run at once)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return out


def test_the_same_recipe_trains_the_same_weights_and_another_seed_does_not(tmp_path):
    runs = {name: start("train", tmp_path / name, seed) for name, seed in (("a", 0), ("b", 0), ("other_seed", 1))}
    printed = {name: finish(p).split()[-1] for name, p in runs.items()}
    assert printed["a"] == printed["b"] != printed["other_seed"]
    for name, sha in printed.items():  # what llmopt.json records is the weights' fingerprint
        assert json.loads((tmp_path / name / "llmopt.json").read_text())["checkpoint_sha256"] == sha
        assert fingerprint(tmp_path / name) == sha


def test_two_processes_asking_for_one_missing_checkpoint_train_it_once(tmp_path):
    marker = tmp_path / "trained.txt"
    env = {"LLMOPT_CACHE_DIR": str(tmp_path / "cache")}
    first, second = start("ensure", marker, env=env), start("ensure", marker, env=env)
    outputs = finish(first), finish(second)
    assert any("waiting for another process" in out for out in outputs)  # they did overlap
    assert marker.read_text().splitlines() == ["trained"]  # without the lock both would train
    paths = {out.split()[-1] for out in outputs}
    assert len(paths) == 1 and (Path(paths.pop()) / "llmopt.json").is_file()
