"""The one measurement shared by the pytest harness and the CLI.

A *workload* is what every technique gets for one dataset: the checkpoint, the same N evaluation
prompts, max_new_tokens and EOS. A *pass* runs a strategy over all prompts; `summarize` turns
passes into the record the benchmark saves (see docs in benchmark-protocol.md: tokens/s = Σ new
tokens / Σ wall time of the generate calls)."""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data, near_ties, quality
from .checkpoints import resolve_model_dir
from .models.gpt_neo import SHAPES
from .strategies.base import Clock, Generation, Strategy
from .tokenizer import encode_prompt, load_tokenizer
from .train import default_recipe, ensure_trained


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


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def objective_for(techniques: list[str]) -> str:
    """The training objective whose checkpoint can serve every technique asked for."""
    from .strategies import known_technique, technique_objective

    return "ss" if any(technique_objective(t) == "ss" for t in techniques if known_technique(t)) else "lm"


def parse_strategy_options(text: str | None) -> dict[str, dict]:
    """`--strategy-options` JSON: {technique part: {option: value}}, e.g.
    '{"ss": {"topk": "2,1,1,1"}, "graphs": {"runtime": "torch.compile"}}'."""
    if not text:
        return {}
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"strategy options are JSON, e.g. '{{\"ss\": {{\"topk\": \"2,1,1,1\"}}}}': {exc}") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError(f"strategy options map a technique to its options ({{name: {{option: value}}}}), got {text!r}")
    return table


def strategy_options(technique: str, table: dict[str, dict]) -> dict:
    """The options of `technique` from the table: each part of a '+' name brings its own entry."""
    options = {}
    for part in technique.split("+"):
        options.update(table.get(part, {}))
    return options


def build_workload(dataset: str, model: str = "125m", num_prompts: int = 32, max_new_tokens: int = 128,
                   data_dir=None, device=None, progress: bool = True, objective: str = "lm") -> Workload:
    """The first `num_prompts` evaluation examples of `dataset`, encoded for the checkpoint.
    A shape name means "that shape trained on this dataset" (trained now if not cached)."""
    if model in SHAPES:
        recipe = default_recipe(dataset, model, objective=objective)
        checkpoint = ensure_trained(dataset, recipe, data_dir=data_dir, device=device or default_device(), progress=progress)
    else:
        checkpoint = resolve_model_dir(model)
    tokenizer = load_tokenizer(checkpoint)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{checkpoint}: the tokenizer has no EOS token")
    examples = data.load_split(dataset, "eval", data_dir)[:num_prompts]
    context = json.loads((checkpoint / "config.json").read_text())["max_position_embeddings"]
    if max_new_tokens >= context:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a {context}-token context")
    prompts = [encode_prompt(tokenizer, ex.prompt, context - max_new_tokens) for ex in examples]
    return Workload(dataset, model, objective, checkpoint, examples, prompts, max_new_tokens, tokenizer.eos_token_id, tokenizer)


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


def reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if torch.device(device).type == "cuda" else None


def output_hash(outputs: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(outputs).encode()).hexdigest()


def summarize(strategy: Strategy, workload: Workload, passes: list[list[tuple[Generation, float]]],
              reference: list[list[int]] | None = None, peak_memory_bytes: int | None = None) -> dict:
    """The benchmark record of one (dataset, technique) cell from one or more passes."""
    gens = [g for g, _ in passes[0]]
    outputs = [g.tokens for g in gens]
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
        "objective": workload.objective,
        "checkpoint": workload.checkpoint.name if workload.checkpoint else None,
        "num_prompts": len(outputs),
        "max_new_tokens": workload.max_new_tokens,
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
    if reference is not None and record["match_naive"] < 1 and workload.checkpoint is not None:
        found = near_ties.explain(workload.checkpoint, workload.prompts, outputs, reference, strategy.dtype,
                                  strategy.device)
        record.update(near_ties.summary(found, strategy.dtype))
    return record


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
    """Warm up, then time `rounds` passes (the CLI's path; pytest uses benchmark.pedantic)."""
    run_pass(strategy, workload, workload.prompts[:warmup_prompts])
    reset_peak_memory(strategy.device)
    passes = [run_pass(strategy, workload, progress=progress) for _ in range(rounds)]
    return summarize(strategy, workload, passes, reference, peak_memory(strategy.device))


def prepare(strategy: Strategy, workload: Workload, device) -> float:
    """Load the checkpoint into the strategy; returns the one-off preparation time."""
    start = time.perf_counter()
    strategy.prepare(workload.checkpoint, device)
    return time.perf_counter() - start


def plain_outputs(workload: Workload, dtype, device) -> list[list[int]]:
    """Plain greedy outputs of the checkpoint at `dtype`: what every technique must reproduce."""
    from .strategies.naive import Naive

    naive = Naive(dtype)
    naive.prepare(workload.checkpoint, device)
    outputs = [g.tokens for g, _ in run_pass(naive, workload)]
    del naive
    return outputs
