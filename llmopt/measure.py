"""The one measurement shared by the pytest harness and the CLI.

A *workload* is what every technique gets for one dataset: the checkpoint, the same N evaluation
prompts, max_new_tokens and EOS. A *pass* runs a strategy over all prompts; `summarize` turns
passes into the record the benchmark saves (README, "The benchmark": tokens/s = Σ new tokens /
Σ wall time of the generate calls). `Bench` is one session of cells, whichever front end runs it."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from tqdm.auto import tqdm

from . import data, hardware, kernel_count, near_ties, quality, timing
from .checkpoints import fingerprint, recorded, resolve_model_dir
from .models.gpt_neo import SHAPES
from .generation import Clock, Generation
from .options import Settings, build_strategy
from .strategies import technique_parts
from .strategies.techniques import plain_twin
from .strategies.base import Strategy
from .strategies.naive import Naive
from .tokenizer import encode_prompt, load_tokenizer
from .train import CUBLAS_ENV, default_recipe, draft_recipe, ensure_trained, medusa_recipe


@dataclass
class Workload:
    dataset: str
    model: str  # what the user asked for: a shape (trained on the dataset), a directory or a hub id
    objective: str  # the training objective of a shape checkpoint ("lm" or "ss")
    checkpoint: Path
    examples: list[data.Example]
    prompts: list[list[int]]
    max_new_tokens: int
    eos_id: int
    tokenizer: object
    fingerprint: str | None = None  # checkpoint_sha256 of the weights: outputs compare only between equal ones

    @functools.cached_property
    def shape(self) -> str | None:
        """The model's shape: the one asked for, else the one its checkpoint was trained at (None
        for a checkpoint made elsewhere); read once, not once per cell."""
        if self.model in SHAPES:
            return self.model
        return recorded(self.checkpoint).get("recipe", {}).get("shape") if self.checkpoint else None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_workload(dataset: str, model: str = "125m", num_prompts: int = 32, max_new_tokens: int = 128,
                   data_dir=None, device=None, progress: bool = True, objective: str = "lm") -> Workload:
    """The first `num_prompts` evaluation examples of `dataset`, encoded for the checkpoint.
    A shape name means "that shape trained on this dataset" (trained now if not cached)."""
    if model in SHAPES:
        recipe = default_recipe(dataset, model, objective=objective)
        checkpoint = ensure_trained(dataset, recipe, data_dir=data_dir, device=device or default_device(), progress=progress)
    else:
        checkpoint = resolve_model_dir(model)
    check_checkpoint(checkpoint, streams=objective == "ss")
    tokenizer = load_tokenizer(checkpoint)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{checkpoint}: the tokenizer has no EOS token")
    examples = data.load_split(dataset, "eval", data_dir)[:num_prompts]
    context = json.loads((checkpoint / "config.json").read_text())["max_position_embeddings"]
    if max_new_tokens >= context:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a {context}-token context")
    prompts = [encode_prompt(tokenizer, ex.prompt, context - max_new_tokens) for ex in examples]
    return Workload(dataset, model, objective, checkpoint, examples, prompts, max_new_tokens, tokenizer.eos_token_id,
                    tokenizer, checkpoint_fingerprint(checkpoint))


def checkpoint_fingerprint(checkpoint: Path) -> str:
    """The fingerprint train() recorded in llmopt.json, else computed from the weight files."""
    return recorded(checkpoint).get("checkpoint_sha256") or fingerprint(checkpoint)


def check_checkpoint(path: Path, streams: bool = False) -> None:
    """Refuse, naming the file, a checkpoint that cannot serve the techniques asked for: a missing
    or truncated file, or no speculative streams where a technique drafts with them. Cheap (reads
    headers only), so it runs before anything is measured."""
    needed = ["config.json"] + (["spec_stream.json", "spec_stream.safetensors"] if streams else [])
    for name in needed:
        if not (path / name).is_file():
            why = (" (no speculative streams: ss techniques need a checkpoint trained with --objective ss)"
                   if name.startswith("spec_stream") else "")
            raise ValueError(f"checkpoint {path}: {name} is missing{why}")
    weights = sorted(path.glob("*.safetensors"))
    if not any(f.name != "spec_stream.safetensors" for f in weights) and not list(path.glob("pytorch_model*.bin")):
        raise ValueError(f"checkpoint {path}: no model weights (model.safetensors or pytorch_model.bin)")
    for f in weights:
        try:
            with safe_open(str(f), "pt"):
                pass
        except Exception as exc:  # safetensors raises its own error type for a bad header
            raise ValueError(f"checkpoint {path}: {f.name} is damaged or truncated ({exc})") from None


def run_pass(strategy: Strategy, workload: Workload, prompts: list[list[int]] | None = None,
             progress: bool = False) -> list[tuple[Generation, float]]:
    """Generate for every prompt; each generate call is timed on a device-synchronised clock."""
    clock = Clock(strategy.device)
    results = []
    for prompt in tqdm(prompts or workload.prompts, disable=not progress, desc=strategy.name, leave=False):
        start = clock()
        gen = strategy.generate(prompt, workload.max_new_tokens, workload.eos_id)
        results.append((gen, clock() - start))
    return results


def driver_version() -> str | None:
    """The NVIDIA driver's version (NVML, else nvidia-smi), or None without a GPU or either tool."""
    if not torch.cuda.is_available():
        return None
    try:
        import pynvml  # shipped with torch's CUDA builds as nvidia-ml-py, when present

        pynvml.nvmlInit()
        return pynvml.nvmlSystemGetDriverVersion()
    except Exception:
        import subprocess

        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
        except (OSError, IndexError, subprocess.SubprocessError):
            return None


def machine_facts() -> dict:
    """What a saved run's machine_info adds to pytest-benchmark's: the GPU and the software stack."""
    cuda = torch.cuda.is_available()
    return {"gpu_name": torch.cuda.get_device_name(0) if cuda else None, "gpu_count": torch.cuda.device_count(),
            "driver_version": driver_version(), "cuda_version": torch.version.cuda,
            "torch_version": torch.__version__, "transformers_version": transformers.__version__,
            "python_version": platform.python_version(),
            # a fixed cuBLAS workspace changes the speed of what is measured (cublas_warning)
            "cublas_workspace_config": os.environ.get(CUBLAS_ENV),
            # the CPUs this process may run on: a pinned run (scripts/gate_validation.py --cpus) says so
            "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "cpu_count": os.cpu_count()}


def cublas_warning(device) -> str | None:
    """Why a CUDA benchmark should not run with CUBLAS_WORKSPACE_CONFIG set (None when it is not):
    the setting is what reproducible training needs, and batch-1 inference under it has been
    reported several times slower (ultralytics/ultralytics#16457, #19127). On an H200 every eager
    cell of runs made under it ran at about a third of its earlier speed (docs/results/NVIDIA-H200/session5)."""
    value = os.environ.get(CUBLAS_ENV)
    if value is None or torch.device(device).type != "cuda":
        return None
    return (f"{CUBLAS_ENV}={value} is set: cuBLAS keeps that fixed workspace for the whole process, and "
            "batch-1 matmuls under it can run several times slower; unset it to benchmark (training "
            "sets it in its own process)")


def reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if torch.device(device).type == "cuda" else None


def output_hash(outputs: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(outputs).encode()).hexdigest()


def summarize(strategy: Strategy, workload: Workload, passes: list[list[tuple[Generation, float]]],
              reference: list[list[int]] | None = None, peak_memory_bytes: int | None = None,
              measured: timing.Measurement | None = None) -> dict:
    """The benchmark record of one (dataset, technique) cell from one or more passes. With the
    `measured` rounds of llmopt.timing, tokens/s is their robust median with its interval (a
    round's rate: its tokens over the wall time of its pass); without, the median of Σ tokens /
    Σ generate-call time per pass."""
    gens = [g for g, _ in passes[0]]
    outputs = [g.tokens for g in gens]
    if any(len(o) > workload.max_new_tokens for o in outputs):
        raise AssertionError(f"{strategy.name}: more than max_new_tokens={workload.max_new_tokens} tokens returned")
    for other in passes[1:]:
        if [g.tokens for g, _ in other] != outputs:
            raise AssertionError(f"{strategy.name}: greedy output changed between rounds")
    generated = sum(len(o) for o in outputs)
    rates = [sum(len(g.tokens) for g, _ in p) / sum(w for _, w in p) for p in passes]
    calls = sum(g.forward_calls for g in gens)
    steps = max(calls, 1)
    texts = [workload.tokenizer.decode([t for t in o if t != workload.eos_id]) for o in outputs]
    metric, score = quality.score(workload.dataset, texts, workload.examples)
    config = strategy.config()
    record = {
        "dataset": workload.dataset,
        "technique": strategy.name,
        "model": workload.model,
        "shape": workload.shape,
        "objective": workload.objective,
        "checkpoint": workload.checkpoint.name if workload.checkpoint else None,
        "num_prompts": len(outputs),
        "max_new_tokens": workload.max_new_tokens,
        "checkpoint_sha256": workload.fingerprint,
        # what training the checkpoint cost (None for one made elsewhere); a peer adds its drafter's
        "checkpoint_train_time_s": recorded(workload.checkpoint).get("train_time_s") if workload.checkpoint else None,
        "tokens_per_s": statistics.median(rates),
        "tokens_per_s_min": min(rates),
        "tokens_per_s_max": max(rates),
        "tokens_per_s_rounds": rates,
        "prompt_median_tokens_per_s": statistics.median(
            len(g.tokens) / w for p in passes for g, w in p if w > 0),
        "generated_tokens": generated,
        "forward_calls": calls,
        "mean_accepted_tokens": generated / steps,
        "ttft_s": statistics.median(g.ttft_s for g in gens),
        # per-step time over every round (the same steps each round: greedy output is fixed)
        "step_prepare_s": sum(g.prepare_s for p in passes for g, _ in p) / (steps * len(passes)),
        "step_forward_s": sum(g.forward_s for p in passes for g, _ in p) / (steps * len(passes)),
        "step_verify_s": sum(g.verify_s for p in passes for g, _ in p) / (steps * len(passes)),
        "peak_memory_bytes": peak_memory_bytes,
        "output_sha256": output_hash(outputs),
        "match_naive": None if reference is None else sum(a == b for a, b in zip(outputs, reference)) / len(outputs),
        "quality_metric": metric,
        "quality": score,
        **config,  # dtype, attention_provider, runtime (and labels such as `simulated`) at the top
        "config": config,
        "samples": texts[:3],
    }
    record.update(speculative_stats(gens))
    past_end = [g.stats["steps_past_end"] for g in gens if "steps_past_end" in g.stats]
    if past_end:  # queue_ahead: steps that ran after the last one, their output dropped (one pass)
        record["steps_past_end"] = sum(past_end)
    if measured is not None:
        record.update(timing_stats(measured))
    if reference is not None and record["match_naive"] < 1 and workload.checkpoint is not None:
        found = near_ties.explain(workload.checkpoint, workload.prompts, outputs, reference, strategy.dtype,
                                  strategy.device)
        record.update(near_ties.summary(found, strategy.dtype))
    return record


def timing_stats(measured: timing.Measurement) -> dict:
    """What the timed rounds say: the robust median and its interval, every round's rate, start
    and device time, the flagged outliers, and whether the stopping rule converged."""
    rates = measured.values
    device = [s.device_s for s in measured.samples]
    device_rates = [s.device_rate for s in measured.samples if s.device_s]
    return {
        "tokens_per_s": measured.median,
        "tokens_per_s_ci": list(measured.ci) if measured.ci else None,
        "tokens_per_s_min": min(rates),
        "tokens_per_s_max": max(rates),
        "tokens_per_s_rounds": rates,
        "rounds": measured.rounds,
        "outlier_rounds": measured.outliers,
        "converged": measured.converged,
        "timed_s": sum(s.wall_s for s in measured.samples),
        "round_start_unix": [s.start_unix for s in measured.samples],
        "round_wall_s": [s.wall_s for s in measured.samples],
        "round_device_s": device if any(d is not None for d in device) else None,
        **host_stats(measured.samples),
        # the device's time per token: for a captured step the stable measure; for an eager step
        # the host's time is the cost, and the device idles between its kernels
        "device_tokens_per_s": timing.summarize(device_rates).median if device_rates else None,
    }


def host_stats(samples) -> dict:
    """Per round, what else the host did (llmopt.host_load): other processes' CPU-seconds, the
    hypervisor's steal, and how often this process was preempted (off Linux, none of them); and how
    fast the host itself ran around it, its cost of one launch (`round_launch_s`)."""
    stats, loads, launches = {}, [s.host for s in samples], [s.launch_s for s in samples]
    if all(load is not None for load in loads):
        stats = {"round_other_cpu_s": [load.other_cpu_s for load in loads],
                 "round_steal_s": [load.steal_s for load in loads],
                 "round_involuntary_switches": [load.involuntary_switches for load in loads]}
    if all(launch is not None for launch in launches):
        stats["round_launch_s"] = launches
    return stats


def speculative_stats(gens: list[Generation]) -> dict:
    """Acceptance counters summed over prompts, for strategies that draft."""
    proposed = [sum(c) for c in zip(*(g.stats["proposed_per_depth"] for g in gens if "proposed_per_depth" in g.stats))]
    if not proposed:
        return {}
    accepted = [sum(c) for c in zip(*(g.stats["accepted_per_depth"] for g in gens))]
    return {
        "acceptance_ratio": sum(accepted) / max(sum(proposed), 1),
        "acceptance_per_depth": [a / max(p, 1) for a, p in zip(accepted, proposed)],
    }


def measure(strategy: Strategy, workload: Workload, rounds: int = 3, warmup_prompts: int = 4,
            reference: list[list[int]] | None = None, progress: bool = False) -> dict:
    """Warm up, then time exactly `rounds` passes of one strategy (the scripts' sweeps); a
    benchmark session (`Bench`) times its cells to a stopping rule instead."""
    cell = Cell(strategy.name, strategy, 0.0, 0)
    cell.warm_up(workload, warmup_prompts)
    measured = timing.measure_until(cell.pass_fn(workload, progress), min_time_s=0, max_time_s=0,
                                    min_rounds=rounds, max_rounds=rounds, timer=cell.timer)
    return cell.record(workload, measured, reference)


class Cell:
    """One technique prepared on a dataset's checkpoint, and what its timed passes left."""

    def __init__(self, technique: str, strategy: Strategy, prepare_s: float, resident_bytes: int):
        self.technique, self.strategy, self.prepare_s = technique, strategy, prepare_s
        self.resident_bytes = resident_bytes  # what prepare() left on the device: weights, caches, graphs
        self.timer = timing.PassTimer(strategy.device)
        self.passes: list[list[tuple[Generation, float]]] = []
        self.warmup: timing.Warmup | None = None
        self.transient_bytes: int | None = None
        self.passes_per_round = 1

    def pass_fn(self, workload: Workload, progress: bool = False):
        """A timed round for llmopt.timing: `passes_per_round` passes over every prompt; keeps the
        passes, returns their tokens."""
        def one_round() -> int:
            tokens = 0
            for _ in range(self.passes_per_round):
                results = run_pass(self.strategy, workload, progress=progress)
                self.passes.append(results)
                tokens += sum(len(g.tokens) for g, _ in results)
            return tokens
        return one_round

    def calibrate(self, workload: Workload, round_time: float) -> None:
        """Passes per round so that a round lasts at least `round_time` seconds: as pytest-benchmark
        calibrates iterations per round, so a fast cell's rounds are as long as a slow one's, and
        a cycle of interleaved cells (which naive's rounds pair with) is not set by the fastest."""
        if round_time > 0:
            one = self.timer(lambda: sum(len(g.tokens) for g, _ in run_pass(self.strategy, workload)))
            self.passes_per_round = max(1, math.ceil(round_time / one.wall_s))

    def warm_up(self, workload: Workload, prompts: int = 4) -> None:
        """Passes over a few prompts until their time per token is steady (compilation, capture,
        allocator growth and autotuning stay out of the numbers); their peak memory is recorded."""
        device = self.strategy.device
        base = allocated_memory(device)
        reset_peak_memory(device)
        warm = workload.prompts[:prompts]
        self.warmup = timing.warm_up(lambda: sum(len(g.tokens) for g, _ in run_pass(self.strategy, workload, warm)),
                                     timer=self.timer)
        peak = peak_memory(device)
        self.transient_bytes = None if peak is None else peak - base

    def record(self, workload: Workload, measured: timing.Measurement, reference, bandwidth=None) -> dict:
        peak = None if self.transient_bytes is None else self.resident_bytes + self.transient_bytes
        record = summarize(self.strategy, workload, self.passes, reference, peak, measured)
        model = getattr(self.strategy, "model", None)
        weights = hardware.weight_bytes(model) if isinstance(model, torch.nn.Module) else None
        record.update(prepare_s=self.prepare_s, warmup_passes=self.warmup.passes, warmup_steady=self.warmup.steady,
                      passes_per_round=self.passes_per_round, weight_bytes=weights, copy_bandwidth=bandwidth,
                      # (weight bytes / copy bandwidth) / measured time per token: 1.0 is a step at the floor
                      bandwidth_floor_fraction=None if weights is None else hardware.bandwidth_floor_fraction(
                          weights, bandwidth, 1 / record["tokens_per_s"]))
        return record


def kernel_fields(profile: hardware.DeviceProfile | None, tokens_per_s: float, tokens_per_step: float = 1.0) -> dict:
    """A record's kernel counts (None when not counted), and the share of a token's measured time
    the device spent in kernels: the rest it waited (for the host: launches, Python,
    synchronisation; inside a CUDA graph, for the graph's next node).

    The profile covers one prompt. A step's kernels hardly depend on the prompt, but how many
    tokens a drafting method's step makes does: so the profile's figures are taken per step and
    spread over the workload's `tokens_per_step` (its mean accepted tokens), not the profiled
    prompt's (before session 14 they were per token of that prompt)."""
    if profile is None:
        return dict(kernels_per_token=None, kernels_per_step=None, kernel_s_per_token=None, device_busy_fraction=None)
    kernels_per_step = profile.kernels_per_token * profile.tokens_per_step
    kernel_s_per_token = profile.kernel_s_per_token * profile.tokens_per_step / tokens_per_step
    return dict(kernels_per_token=kernels_per_step / tokens_per_step, kernels_per_step=kernels_per_step,
                kernel_s_per_token=kernel_s_per_token, device_busy_fraction=kernel_s_per_token * tokens_per_s)


def allocated_memory(device) -> int:
    return torch.cuda.memory_allocated(device) if torch.device(device).type == "cuda" else 0


def prepare(strategy: Strategy, workload: Workload, device) -> float:
    """Load the checkpoint into the strategy; returns the one-off preparation time."""
    start = time.perf_counter()
    strategy.prepare(workload.checkpoint, device)
    return time.perf_counter() - start


def plain_outputs(workload: Workload, dtype, device) -> list[list[int]]:
    """Plain greedy outputs of the checkpoint at `dtype`: what every technique must reproduce."""
    naive = Naive(dtype)
    naive.prepare(workload.checkpoint, device)
    outputs = [g.tokens for g, _ in run_pass(naive, workload)]
    del naive
    return outputs


class Bench:
    """One benchmark session, whichever front end drives it (pytest or `llmopt bench`): the
    workloads (checkpoints trained once per dataset), the plain-decoding references per (dataset,
    dtype), and the records measured so far, in order.

    A dataset's cells are measured together (`measure_dataset`): each is prepared and warmed up,
    then all are timed round by round (`--interleave cells`, the default) so that drift on the
    machine hits them alike and each cell's speed-up over `naive` is a ratio of same-cycle rounds;
    or one after another (`--interleave off`)."""

    def __init__(self, settings: Settings, progress: bool = False):
        self.settings, self.progress = settings, progress
        self.records: list[dict] = []
        # where this session measures, in every record: the CUDA index and the xdist worker (or None)
        device = torch.device(settings.device)
        self.placement = {"gpu_index": (device.index if device.index is not None else torch.cuda.current_device())
                          if device.type == "cuda" else None, "xdist_worker": None}
        self.results: dict[tuple[str, str], dict | Exception] = {}  # cell -> its record or why it failed
        self.plan: dict[str, list[str]] = {d: list(settings.techniques) for d in settings.datasets}
        self._workloads: dict[str, Workload] = {}
        self._references: dict[tuple, list[list[int]]] = {}
        self._counted = 0
        if (warning := cublas_warning(device)) is not None:
            warnings.warn(warning, stacklevel=2)

    def workload(self, dataset: str) -> Workload:
        if dataset not in self._workloads:
            s = self.settings
            self._workloads[dataset] = build_workload(dataset, s.model, s.num_prompts, s.max_new_tokens,
                                                      data_dir=s.data_dir, device=s.device, objective=s.objective)
        return self._workloads[dataset]

    def reference(self, dataset: str, dtype) -> list[list[int]]:
        """Plain greedy outputs at `dtype`, computed once per dataset: the reference of match_naive."""
        if (dataset, dtype) not in self._references:
            self._references[dataset, dtype] = plain_outputs(self.workload(dataset), dtype, self.settings.device)
        return self._references[dataset, dtype]

    def cell(self, dataset: str, technique: str) -> dict:
        """The record of a cell, measuring its dataset's planned cells (together) first if need
        be; raises what made the cell fail."""
        if (dataset, technique) not in self.results:
            planned = self.plan.get(dataset, [])
            self.measure_dataset(dataset, planned if technique in planned else [technique])
        found = self.results[dataset, technique]
        if isinstance(found, Exception):
            raise found
        return found

    def measure_dataset(self, dataset: str, techniques: list[str]) -> dict[str, dict | Exception]:
        """Measure the cells of one dataset and keep their records; returns technique -> record, or
        the exception that stopped it (a cell that cannot prepare does not stop the others)."""
        out = self._measure(dataset, techniques)
        for technique in techniques:  # in the order asked for
            self.results[dataset, technique] = out[technique]
            if not isinstance(out[technique], Exception):
                self.records.append(out[technique])
        return out

    def remeasure(self, cells: list[tuple[str, str]]) -> list[dict]:
        """Fresh records of these cells, measured together per dataset (the gate's second look at
        suspected regressions); the session's own records stay as they were."""
        fresh = []
        for dataset in dict.fromkeys(d for d, _ in cells):
            out = self._measure(dataset, [t for d, t in cells if d == dataset], kernels=False)
            fresh += [r for r in out.values() if not isinstance(r, Exception)]
        return fresh

    def _measure(self, dataset: str, techniques: list[str], kernels: bool = True) -> dict[str, dict | Exception]:
        s, workload = self.settings, self.workload(dataset)
        cells: dict[str, Cell] = {}
        out: dict[str, dict | Exception] = {}
        options: dict[str, dict] = {}
        for technique in techniques:
            self._counted += 1
            if self.progress:
                total = sum(len(t) for t in self.plan.values())
                print(f"cell {self._counted}/{max(total, self._counted)}: {dataset} {technique}", file=sys.stderr)
            try:
                options[technique] = {**self.drafting_options(dataset, technique), **s.options_for(technique)}
                strategy = build_strategy(technique, options[technique])
                self.reference(dataset, strategy.dtype)  # before this strategy's model takes memory
                cells[technique] = self._prepare(strategy, workload)
                if not s.interleave:  # one after another: time it now, then free it
                    out[technique] = self._time({technique: cells.pop(technique)}, workload)[technique]
            except Exception as exc:  # noqa: BLE001 - reported as that cell's failure
                out[technique] = exc
        if cells:
            try:
                out.update(self._time(cells, workload))
            except Exception as exc:  # noqa: BLE001 - a pass failed mid-way: every cell timed with it fails
                out.update({t: exc for t in cells})
        del cells
        if torch.device(s.device).type == "cuda":
            torch.cuda.empty_cache()
        timed = {t: r for t, r in out.items() if not isinstance(r, Exception)}
        if kernels and s.kernel_count:  # not for the gate's second look: it reads tokens/s only
            self._count_kernels(workload, timed, options)
        else:
            for record in timed.values():
                record.update(kernel_fields(None, record["tokens_per_s"]))
        return {t: out[t] for t in techniques}

    def _count_kernels(self, workload: Workload, records: dict[str, dict], options: dict[str, dict]) -> None:
        """Each record's kernels and device busy time per token, from a child process once the
        dataset's cells are timed and freed (llmopt.kernel_count: profiling here would slow what this
        process times next); None off CUDA."""
        if self.progress and records and torch.device(self.settings.device).type == "cuda":
            print(f"counting kernels of {len(records)} cell(s) in a child process", file=sys.stderr)
        index = self.placement["gpu_index"]
        device = self.settings.device if index is None else f"cuda:{index}"
        found = kernel_count.count(kernel_count.Job(str(workload.checkpoint), device, workload.prompts[0],
                                                    workload.max_new_tokens, workload.eos_id,
                                                    [(t, options[t]) for t in records]))
        for record, profile in zip(records.values(), found):
            record.update(kernel_fields(profile, record["tokens_per_s"], record["mean_accepted_tokens"]))

    def drafting_options(self, dataset: str, technique: str) -> dict:
        """What a peer method drafts with, trained for this dataset's checkpoint once and cached:
        sps's draft model (a small shape with the target's tokenizer), Medusa's heads (on the
        frozen target). Options given by the user take precedence."""
        parts, s = technique_parts(technique), self.settings
        given = s.options_for(technique)
        if ("sps" not in parts or "draft" in given) and ("medusa" not in parts or "heads" in given):
            return {}  # nothing to draft with, or the user's own
        workload = self.workload(dataset)
        shape = workload.shape or "125m"  # the target's shape names the drafter's checkpoint

        def trained(recipe):
            return str(ensure_trained(dataset, recipe, data_dir=s.data_dir, device=s.device))
        if "sps" in parts:
            return {"draft": trained(draft_recipe(dataset, workload.checkpoint, "tiny" if shape == "tiny" else "draft"))}
        # heads of the kind asked for: their own LM heads (Medusa-1), or the base's (`share_head`)
        shared = {"objective_options": {"share_head": True}} if given.get("share_head") else {}
        return {"heads": trained(medusa_recipe(dataset, workload.checkpoint, shape, **shared))}

    def _prepare(self, strategy: Strategy, workload: Workload) -> Cell:
        device = self.settings.device
        before = allocated_memory(device)
        prepare_s = prepare(strategy, workload, device)
        cell = Cell(strategy.name, strategy, prepare_s, allocated_memory(device) - before)
        cell.warm_up(workload)
        cell.calibrate(workload, self.settings.round_time)
        return cell

    @functools.cached_property
    def copy_bandwidth(self) -> float | None:
        """The device's copy bandwidth (bytes/s), measured once per session: the floor's divisor."""
        return hardware.copy_bandwidth(self.settings.device)

    def _time(self, cells: dict[str, Cell], workload: Workload) -> dict[str, dict]:
        """Time the cells together under the stopping rule; naive, when among them, runs as long
        as any other so that every round of every cell has a naive round of its cycle."""
        rule = self.settings.stop_rule()
        reference = "naive" if "naive" in cells and len(cells) > 1 else None
        timer = next(iter(cells.values())).timer
        measured = timing.interleave({t: c.pass_fn(workload, self.progress) for t, c in cells.items()}, rule,
                                     reference=reference, timer=timer)
        host_op_s = hardware.host_op_s(self.settings.device)  # the host's cost per launch, right after the rounds
        records = {}
        for technique, cell in cells.items():
            dtype = cell.strategy.dtype
            record = cell.record(workload, measured[technique], self.reference(workload.dataset, dtype),
                                 self.copy_bandwidth)
            record["host_op_s"] = host_op_s
            record["interleaved_with"] = sorted(set(cells) - {technique})
            record.update(self.placement)
            if reference and technique != reference:
                ratio = timing.paired_ratio(measured[technique].samples, measured[reference].samples)
                record.update(speedup_over_naive=ratio.median,
                              speedup_over_naive_ci=list(ratio.ci) if ratio.ci else None,
                              speedup_over_naive_rounds=ratio.values)
            twin = plain_twin(technique, cells)  # among the cells timed with it
            if twin is not None:  # a drafting cell against the plain technique it should beat, paired too
                ratio = timing.paired_ratio(measured[technique].samples, measured[twin].samples)
                record.update(twin=twin, speedup_over_twin=ratio.median,
                              speedup_over_twin_ci=list(ratio.ci) if ratio.ci else None)
            records[technique] = record
        return records


def table(records: list[dict]) -> str:
    """Markdown table of tokens/s: techniques x datasets, with the speed-up over naive beside."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    techniques = list(dict.fromkeys(r["technique"] for r in records))
    found = {(r["technique"], r["dataset"]): r for r in records}

    def cell(t, d):
        if (t, d) not in found:
            return "–"
        record, naive = found[t, d], found.get(("naive", d))
        # the speed-up paired round by round with naive when the cells were interleaved
        speedup = record.get("speedup_over_naive") or (record["tokens_per_s"] / naive["tokens_per_s"] if naive else None)
        return f"{record['tokens_per_s']:.1f}" + (f" ({speedup:.2f}×)" if speedup and t != "naive" else "")

    lines = ["| technique | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
    lines += [f"| {t} | " + " | ".join(cell(t, d) for d in datasets) + " |" for t in techniques]
    return "\n".join(lines)
