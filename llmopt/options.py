"""The benchmark's options, declared once for both front ends: `pytest bench/` and `llmopt bench`.

As pytest-benchmark's `add_*_options(addoption)` serves its plugin and its CLI alike, so
`add_bench_options` serves pytest's `parser.getgroup(...).addoption` and argparse's `add_argument`:
the two front ends cannot drift apart in names, defaults or checks. Every value is checked when it
is parsed (a bad one fails in one line, naming the option and what is allowed), and `settings`
checks what needs several options together, so nothing is trained or measured before bad input
is refused."""

from __future__ import annotations

import argparse
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import data, timing
from .strategies import (expand_techniques, get_strategy, parse_technique, technique_objective, technique_parts,
                         validate_technique)

DEFAULT_TECHNIQUES = ("hf", "naive", "half", "ss")
# A round of passes over the prompts lasts at least this long on a GPU (a pass of a fast cell over 32
# E2E prompts takes 0.3 s): fast cells then need no more rounds than slow ones.
ROUND_TIME_S = 1.0
# A GPU run measures the real workload until its median is tight (llmopt.timing: at least 10
# rounds and 10 s of timed work per cell), at most 20 s a cell, so that the full matrix (3 datasets x
# 15 techniques) stays within about 25 minutes; a CPU run (CI) is a smoke run of the tiny shape:
# exactly its rounds.
GPU_DEFAULTS = dict(model="125m", num_prompts=32, max_new_tokens=128, rounds=timing.MIN_ROUNDS,
                    min_time=timing.MIN_TIME_S, max_time=20.0, round_time=ROUND_TIME_S)
CPU_DEFAULTS = dict(model="tiny", num_prompts=2, max_new_tokens=16, rounds=1, min_time=0.0, max_time=0.0,
                    round_time=0.0)


def _bad(message: str):
    return argparse.ArgumentTypeError(message)


def _number(text: str, convert, expected: str):
    try:
        return convert(text)
    except ValueError:
        raise _bad(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive whole number")
    if value < 1:
        raise _bad(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 0:
        raise _bad(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value > 0:
        raise _bad(f"must be positive, got {value}")
    return value


def seconds(text: str) -> float:
    value = _number(text, float, "seconds")
    if not 0 <= value < float("inf"):
        raise _bad(f"seconds must be 0 or more, got {value}")
    return value


def fraction(text: str) -> float:
    value = _number(text, float, "a fraction such as 0.05")
    if not 0 <= value < 1:
        raise _bad(f"a fraction in [0, 1), got {value}")
    return value


def dataset_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    for name in names:
        if name not in data.DATASETS:
            raise _bad(f"unknown dataset {name!r}; known: {', '.join(data.DATASETS)}")
    if not names:
        raise _bad("no dataset named")
    return names


def technique_list(text: str) -> list[str]:
    names = expand_techniques([x.strip() for x in text.split(",") if x.strip()])  # groups, e.g. peers
    for name in names:
        try:
            validate_technique(name)
        except ValueError as exc:
            raise _bad(str(exc)) from None
    if not names:
        raise _bad("no technique named")
    return names


def device_name(text: str) -> str:
    """cpu, cuda or cuda:N, and only where this machine has it."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise _bad(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise _bad(f"{text}: this machine has no CUDA GPU (torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise _bad(f"{text}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type != "cpu":
        raise _bad(f"unsupported device {text!r}; use cpu, cuda or cuda:N")
    return text


def data_directory(text: str) -> str:
    if not Path(text).expanduser().is_dir():
        raise _bad(f"{text}: no such directory (it should hold spider/, dialogsum/ and e2e_nlg/)")
    return text


def strategy_table(text: str) -> dict[str, dict]:
    """`--strategy-options` JSON: {technique part or name: {option: value}}."""
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(f"not JSON ({exc}); e.g. '{{\"ss\": {{\"topk\": \"2,1,1,1\"}}}}'") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise _bad(f"expected a map from a technique to its options ({{name: {{option: value}}}}), got {text}")
    return table


def objective_name(text: str) -> str:
    if text not in ("lm", "ss"):
        raise _bad(f"expected lm or ss, got {text!r}")
    return text


def _both(key: str, unit: str = "") -> str:
    """A default as the help says it: the GPU's, then the CPU's."""
    return f"{GPU_DEFAULTS[key]:g}{unit} on a GPU, {CPU_DEFAULTS[key]:g}{unit} on a CPU"


def add_bench_options(addoption) -> None:
    """Declare the options on `addoption` (pytest's group.addoption or argparse's add_argument)."""
    gpu, cpu = GPU_DEFAULTS, CPU_DEFAULTS
    addoption("--datasets", "--dataset", dest="datasets", type=dataset_list, action="extend", default=None,
              metavar="D[,D...]", help=f"datasets, comma-separated or repeated (default: all of "
                                       f"{', '.join(data.DATASETS)})")
    addoption("--techniques", "--technique", dest="techniques", type=technique_list, action="extend", default=None,
              metavar="T[,T...]", help=f"techniques, comma-separated or repeated (default: "
                                       f"{','.join(DEFAULT_TECHNIQUES)}); '+' combines them, e.g. ss+half+graphs; 'peers' stands for "
                                       f"the methods Speculative Streaming is compared against")
    addoption("--model", default=None,
              help=f"a shape trained per dataset and cached (tiny, 125m, 1.3b, 2.7b), a checkpoint directory or a "
                   f"hub id (default {gpu['model']} on a GPU, {cpu['model']} on a CPU)")
    addoption("--objective", type=objective_name, default=None,
              help="training objective of shape checkpoints: lm or ss (default: ss when a technique needs "
                   "speculative streams, else lm); every technique runs on the same checkpoint")
    addoption("--num-prompts", dest="num_prompts", type=positive_int, default=None, metavar="N",
              help=f"evaluation prompts per dataset (default {_both('num_prompts')})")
    addoption("--max-new-tokens", dest="max_new_tokens", type=positive_int, default=None, metavar="N",
              help=f"new tokens per prompt at most (default {_both('max_new_tokens')})")
    addoption("--rounds", type=positive_int, default=None, metavar="N",
              help=f"timed passes over the prompts per cell, at least (default {_both('rounds')})")
    addoption("--min-time", dest="min_time", type=seconds, default=None, metavar="S",
              help=f"timed work per cell, at least (default {_both('min_time', ' s')}); "
                   f"then rounds go on until the {timing.CONFIDENCE:.0%}% interval of the median is within --target-ci")
    addoption("--max-time", dest="max_time", type=seconds, default=None, metavar="S",
              help=f"timed work per cell, at most (default {_both('max_time', ' s')}: on a CPU exactly --rounds rounds); "
                   f"it stops a cell short of --rounds only once it has the {timing.rounds_for_interval()} rounds an "
                   f"interval of the median needs; a cell stopped by it is marked not converged")
    addoption("--round-time", dest="round_time", type=seconds, default=None, metavar="S",
              help=f"a timed round repeats the pass over the prompts until it lasts this long (default "
                   f"{_both('round_time', ' s')}: one pass)")
    addoption("--target-ci", dest="target_ci", type=fraction, default=None, metavar="FRACTION",
              help=f"relative width of the median's confidence interval to stop at (default {timing.REL_CI})")
    addoption("--interleave", dest="interleave", default=None, choices=("cells", "off"),
              help="cells (default): time a dataset's cells round by round (A B C, B C A, ...), so drift between "
                   "them cancels and each cell's speed-up over naive is paired by round; off: one cell after another "
                   "(less GPU memory: one model loaded at a time)")
    addoption("--kernel-count", dest="kernel_count", default=None, choices=("child", "off"),
              help="child (default): on a GPU, once a dataset's cells are timed, a child process loads each again "
                   "and profiles one generate call for kernels_per_token (a profiler session would slow what this "
                   "process times next); off: skip it (about a second or two per cell)")
    addoption("--strategy-options", dest="strategy_options", type=strategy_table, default=None, metavar="JSON",
              help='options per technique part, e.g. \'{"ss": {"topk": "2,1,1,1"}, "graphs": {"runtime": '
                   '"torch.compile"}}\': every technique containing that part gets them')
    addoption("--data-dir", dest="data_dir", type=data_directory, default=None, metavar="DIR",
              help=f"local copy of the original dataset files (else ${data.DATA_DIR_ENV}, else the hub)")
    addoption("--device", type=device_name, default=None,
              help="cpu, cuda or cuda:N (default: cuda when available)")


@dataclass
class Settings:
    """The options after defaults and cross-checks: what one benchmark session measures."""

    datasets: list[str]
    techniques: list[str]
    model: str
    objective: str
    num_prompts: int
    max_new_tokens: int
    rounds: int
    device: str
    data_dir: str | None = None
    strategy_options: dict = field(default_factory=dict)
    min_time: float = 0.0
    max_time: float = 0.0
    target_ci: float = timing.REL_CI
    interleave: bool = True
    round_time: float = 0.0
    kernel_count: bool = True

    def stop_rule(self) -> timing.StopRule:
        """When a cell has been timed enough (llmopt.timing.StopRule)."""
        return timing.StopRule(min_time_s=self.min_time, max_time_s=max(self.max_time, self.min_time),
                               rel_ci=self.target_ci, min_rounds=self.rounds,
                               max_rounds=max(self.rounds, timing.MAX_ROUNDS))

    def options_for(self, technique: str) -> dict:
        """The options of `technique`: each part of a '+' name brings its own entry, and so does each
        part of a preset (`best` gets the "graphs" entry too)."""
        found = {}
        for part in options_keys(technique):
            found.update(self.strategy_options.get(part, {}))
        return found


def settings(values) -> Settings:
    """Settings from parsed values (a namespace or a mapping, None = default); ValueError saying
    what is wrong when options contradict each other or a technique's options are bad."""
    get = values.get if isinstance(values, dict) else (lambda k: getattr(values, k, None))
    device = get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    defaults = GPU_DEFAULTS if torch.device(device).type == "cuda" else CPU_DEFAULTS
    techniques = list(dict.fromkeys(get("techniques") or DEFAULT_TECHNIQUES))
    result = Settings(
        datasets=list(dict.fromkeys(get("datasets") or data.DATASETS)), techniques=techniques,
        objective=get("objective") or objective_for(techniques), device=device, data_dir=get("data_dir"),
        strategy_options=get("strategy_options") or {}, target_ci=_given(get("target_ci"), timing.REL_CI),
        interleave=(get("interleave") or "cells") == "cells", kernel_count=(get("kernel_count") or "child") == "child",
        **{key: _given(get(key), default) for key, default in defaults.items()})
    if result.objective == "lm" and objective_for(techniques) == "ss":
        needy = [t for t in techniques if technique_objective(t) == "ss"]
        raise ValueError(f"--objective lm: {', '.join(needy)} need{'s' * (len(needy) == 1)} a checkpoint trained "
                         "with speculative streams (--objective ss)")
    unknown = [p for p in result.strategy_options if p not in {q for t in techniques for q in options_keys(t)}]
    if unknown:
        raise ValueError(f"--strategy-options: {', '.join(map(repr, unknown))} is part of no technique asked for "
                         f"({', '.join(techniques)})")
    for technique in techniques:
        build_strategy(technique, result.options_for(technique))  # bad options fail now, before any work
    result.stop_rule()  # an impossible stopping rule too
    return result


def options_keys(technique: str) -> tuple[str, ...]:
    """The --strategy-options entries a technique takes: the parts it runs (a preset expanded), then
    the parts as written ("best" itself), then the whole name ("flash2+graphs": that technique
    alone), so the more specific entry wins."""
    return tuple(dict.fromkeys(parse_technique(technique).parts + technique_parts(technique) + (technique,)))


def _given(value, default):
    return default if value is None else value


def objective_for(techniques: list[str]) -> str:
    """The training objective whose checkpoint can serve every technique asked for."""
    return "ss" if any(technique_objective(t) == "ss" for t in techniques) else "lm"


def build_strategy(technique: str, options: dict):
    """get_strategy with messages that name the technique and the option at fault."""
    try:
        return get_strategy(technique, **options)
    except TypeError as exc:  # an option the technique does not take
        accepted = _accepted_options(technique)
        bad = [k for k in options if accepted is not None and k not in accepted]
        if not bad:
            raise ValueError(f"{technique}: {exc}") from None
        raise ValueError(f"{technique}: unknown option{'s' * (len(bad) > 1)} {', '.join(map(repr, bad))}; "
                         f"accepted: {', '.join(sorted(accepted)) or 'none'}") from None
    except ValueError as exc:
        raise ValueError(f"{technique} with options {json.dumps(options)}: {exc}") from None


def _accepted_options(technique: str) -> set[str] | None:
    """The keyword options a technique's constructor takes (None when it cannot tell)."""
    try:
        strategy = get_strategy(technique)
    except (TypeError, ValueError):
        return None
    params = inspect.signature(type(strategy).__init__).parameters
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {n for n, p in params.items() if p.kind in kinds and n not in ("self", "techniques")}
