"""Train (or fine-tune) a GPT-Neo on a dataset's prompt -> target task.

One trainer for every objective: an objective turns (model, ids, labels) into a loss, so
Speculative Streaming adds its multi-stream loss by registering another objective.

Training is reproducible: the same recipe on the same hardware and software writes the same weights
(the same `checkpoint_sha256`), so that two machines that train a checkpoint each still compare
output hashes. The cache is safe for concurrent processes: one trains, the others wait for it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from . import data
from .augment import augment_split
from .checkpoints import FINGERPRINT_KEY, atomic_dir, atomic_save, cache_dir, fingerprint, resolve_model_dir
from .models.gpt_neo import SHAPES, GPTNeo, make_config
from .spec_stream.loss import IGNORE, build_ss, ss_loss
from .spec_stream.medusa import build_medusa, medusa_loss
from .tokenizer import encode_example, load_tokenizer, train_tokenizer


# fields added to Recipe after checkpoints were cached, with the value that leaves them unset: a
# recipe that leaves them so keeps its name, and a resume state saved before them still matches
ADDED_LATER = {"tokenizer_from": None, "micro_batch": 0, "stream_lr_scale": 1.0}


@dataclass
class Recipe:
    """Everything that decides the trained weights; its hash names the cached checkpoint."""

    shape: str = "125m"
    vocab_size: int = 8192
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    max_len: int = 1024
    seed: int = 0
    base: str | None = None  # fine-tune this checkpoint (its tokenizer too) instead of training from scratch
    keep_best: bool = True  # write the weights of the evaluation with the lowest loss (early stopping)
    objective: str = "lm"
    objective_options: dict = field(default_factory=dict)
    augment_copies: int = 0  # Spider only: add this many name-renamed copies of each training example (llmopt.augment)
    # train from scratch with this checkpoint's tokenizer, vocabulary size and context (sps's draft
    # model must share its target's); None: train a tokenizer on the dataset
    tokenizer_from: str | None = None
    # rows per forward and backward: a batch of batch_size rows is taken in slices of this many, their
    # gradients summed (the 1.3b and 2.7b shapes, whose activations for a whole batch would not fit
    # one GPU beside the optimizer's state); 0: the whole batch at once
    micro_batch: int = 0
    # ss: the stream embeddings' learning rate as a multiple of lr. They start at the init scale
    # (0.02) beside hidden states of order one and AdamW moves each entry by about lr a step, so
    # a short run leaves the streams hard to tell from the main stream (1.3b, 600 steps: 1.21
    # tokens/step accepted); a CPU trial at the draft shape (300 steps, three seeds) raised the
    # accepted tokens per step from 1.54 to 1.65 with 10. 1.0: the paper's single learning rate.
    stream_lr_scale: float = 1.0

    def key(self) -> str:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ADDED_LATER or v != ADDED_LATER[k]}
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# The large shapes' learning rate: 125m's 3e-4 scaled as GPT-3 scaled its own from 125M (6e-4) to
# 1.3B (2e-4) and 2.7B (1.6e-4) (Brown et al. 2020, table 2.1); our batches are far smaller than its,
# which asks for no more. At 3e-4 the 1.3b SS run of session 13 (E2E, H100, 600 steps) was unstable:
# its gradient norm rose from about 6 to 10-31 while 125m's falls from 4 to 1, and its eval loss at
# steps 250 and 500 (4.65, 4.29) stayed far above 125m's at the same steps (3.60, 2.96).
LARGE_LR = {"1.3b": 1e-4, "2.7b": 8e-5}


def default_recipe(dataset: str, shape: str = "125m", **overrides) -> Recipe:
    """Per-dataset defaults: E2E sequences are short, so bigger batches; Spider schemas and
    DialogSum dialogues need the longer context."""
    # Spider: two schema-renamed copies of each example (llmopt.augment), or a model trained from
    # scratch memorises the training databases' names instead of copying them from the prompt: its
    # eval loss bottoms out early and the kept weights are undertrained (H100, 2026-11-26: without
    # copies the lowest eval loss came at step 250 or 750 and the streams accepted 1.20 or 2.10
    # tokens/step; with them at step 1250, 2.17)
    per_dataset = {"e2e_nlg": dict(batch_size=128, max_len=256), "spider": dict(augment_copies=2), "dialogsum": {}}
    if shape == "tiny":  # CI: a few seconds on a CPU
        per_dataset = {d: dict(steps=30, batch_size=8, max_len=256, vocab_size=512, warmup_steps=5) for d in data.DATASETS}
    # the large shapes in slices of 16 rows: 1.3b's activations for 128 rows of 256 tokens come to
    # about 55 GiB beside its 21 GiB of weights, gradients and AdamW state
    large = {"micro_batch": 16, "lr": LARGE_LR[shape]} if shape in LARGE_LR else {}
    recipe = Recipe(shape=shape, **{**per_dataset[dataset], **large, **overrides})
    if recipe.objective == "ss" and not recipe.objective_options:
        # the paper's layer choice: MSA in the top 1/6 of the layers for SQL, 1/2 otherwise (on
        # E2E, H200: 6 of 12 layers accepted 2.56 tokens/step against 2.41 with 4, and kept quality)
        layers = SHAPES[shape]["num_layers"]
        recipe.objective_options = {"gamma": 4, "num_stream_layers": max(1, layers // (6 if dataset == "spider" else 2))}
    return recipe


def draft_recipe(dataset: str, target: str | Path, shape: str = "draft", **overrides) -> Recipe:
    """The recipe of sps's draft model for the `target` checkpoint: a small shape trained on the
    same data with the target's tokenizer (shape="tiny" for CI)."""
    return default_recipe(dataset, shape, tokenizer_from=str(target), **overrides)


def medusa_recipe(dataset: str, target: str | Path, shape: str = "125m", **overrides) -> Recipe:
    """The recipe of Medusa heads for the `target` checkpoint (of `shape`, for the name): the
    "medusa" objective on the frozen target, at Medusa-1's learning rate for heads (1e-3)."""
    return default_recipe(dataset, shape, **{"base": str(target), "objective": "medusa", "lr": 1e-3, **overrides})


def checkpoint_dir(dataset: str, recipe: Recipe) -> Path:
    return cache_dir() / "checkpoints" / f"{dataset}-{recipe.shape}-{recipe.objective}-{recipe.key()}"


# -- objectives ---------------------------------------------------------------------------------

def lm_loss(model, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Next-token cross-entropy on target tokens (labels = ids, IGNORE on prompt and padding)."""
    logits = model(ids)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)
    return loss, {"loss": loss.detach()}


def build_lm(config, base: GPTNeo | None, options: dict, seed: int) -> torch.nn.Module:
    return base if base is not None else GPTNeo.random(config, seed=seed)


# name -> (build model from (config, base model or None, options, seed), loss function)
OBJECTIVES: dict[str, tuple[Callable, Callable]] = {"lm": (build_lm, lm_loss), "ss": (build_ss, ss_loss),
                                                    "medusa": (build_medusa, medusa_loss)}


# -- data ---------------------------------------------------------------------------------------

def encode_split(examples, tokenizer, max_len) -> list[tuple[list[int], int]]:
    encoded = [encode_example(tokenizer, ex.prompt, ex.target, max_len) for ex in examples]
    cut = sum(len(ids) >= max_len for ids, _ in encoded)
    if cut:
        warnings.warn(f"{cut} of {len(encoded)} examples reach the {max_len}-token limit: prompts cut from the left")
    return encoded


def batches(encoded, batch_size: int, rng: random.Random):
    """Endless padded batches; examples of similar length are batched together (less padding)."""
    while True:
        order = list(range(len(encoded)))
        rng.shuffle(order)
        chunk = batch_size * 50
        groups = []
        for i in range(0, len(order), chunk):
            part = sorted(order[i: i + chunk], key=lambda j: len(encoded[j][0]))
            groups += [part[k: k + batch_size] for k in range(0, len(part), batch_size)]
        rng.shuffle(groups)
        yield from (collate([encoded[j] for j in g]) for g in groups)


def collate(items, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for row, (seq, n_prompt) in enumerate(items):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, n_prompt: len(seq)] = torch.tensor(seq[n_prompt:])
    return ids, labels


# -- the loop -----------------------------------------------------------------------------------

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"


def fixed_cublas_workspace() -> None:
    """cuBLAS is reproducible only with a fixed workspace, read when its handle is created. Only a
    process that trains sets it: the benchmark trains in a child process (`ensure_trained`), because
    the variable stays for the whole process and batch-1 inference under it has been reported
    several times slower (ultralytics/ultralytics#16457, #19127); see measure.cublas_warning."""
    os.environ.setdefault(CUBLAS_ENV, ":4096:8")


@contextlib.contextmanager
def deterministic(seed: int):
    """Seeded RNGs and deterministic kernels for the block, the previous kernel setting restored after.

    cuBLAS is reproducible only with a fixed workspace, and reads CUBLAS_WORKSPACE_CONFIG when its
    handle is created: setting it here works in a fresh process whose first CUDA work is training
    (`llmopt train`, or the child process `ensure_trained` starts for a benchmark). A process that
    ran cuBLAS before would have to set it at start-up: torch checks the variable, not the workspace
    its handle got, so setting it late is silently not enough. It stays set after training.

    Measured on an H200 (torch 2.11, 2026-12-03): three bf16-autocast steps of the tiny and 125m
    shapes, lm and ss objectives, fused AdamW or not, gave other weights on a repeat without it (5 of 8)
    and identical ones with it; no op of the step raised, so the fused AdamW stays."""
    fixed_cublas_workspace()
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=False)
    random.seed(seed)
    torch.manual_seed(seed)  # every device's generator
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def sliced_backward(model, loss_fn, ids: torch.Tensor, labels: torch.Tensor, rows: int, autocast) -> torch.Tensor:
    """The batch's loss backpropagated in slices of `rows` rows (0: at once), each weighted by its
    share of the batch's next-token targets, so the summed gradients are the whole batch's (exactly
    for the lm objective; the streams' and heads' terms, whose targets a slice shares a little
    differently, nearly). Returns the batch's loss, detached."""
    if not 0 < rows < len(ids):
        with autocast():
            loss, _ = loss_fn(model, ids, labels)
        loss.backward()
        return loss.detach()
    total = (labels[:, 1:] != IGNORE).sum()
    loss = ids.new_zeros((), dtype=torch.float32)
    for part_ids, part_labels in zip(ids.split(rows), labels.split(rows)):
        with autocast():
            part, _ = loss_fn(model, part_ids, part_labels)
        share = (part_labels[:, 1:] != IGNORE).sum() / total
        if part.requires_grad:  # a slice with no target for any Medusa head has a constant loss
            (part * share).backward()
        loss += part.detach() * share
    return loss


@torch.no_grad()
def evaluate(model, loss_fn, eval_batches, device, autocast) -> tuple[float, dict[str, float]]:
    """The eval loss per target token, and each term the objective logs (ss: `main` and `stream1`..,
    whose separate curves show whether the streams learn), averaged the same way."""
    model.eval()
    total, count, terms = 0.0, 0, {}
    for ids, labels in eval_batches:
        with autocast():
            loss, logs = loss_fn(model, ids.to(device), labels.to(device))
        n = int((labels[:, 1:] != IGNORE).sum())
        total, count = total + float(loss) * n, count + n
        for name, value in logs.items():
            if name != "loss":
                terms[name] = terms.get(name, 0.0) + float(value) * n
    model.train()
    return total / max(count, 1), {name: value / max(count, 1) for name, value in terms.items()}


def train(dataset: str, recipe: Recipe, out_dir: Path | None = None, data_dir=None, device=None,
          progress: bool = True, eval_every: int = 250, save_every: int = 250) -> Path:
    """Train and write an HF-format checkpoint (weights, tokenizer, llmopt.json with the weights'
    `checkpoint_sha256`) to `out_dir` atomically, reproducibly (`deterministic`). A run interrupted
    after a periodic save (every `save_every` steps; 0: never) resumes from it when called again."""
    with deterministic(recipe.seed):
        return _train(dataset, recipe, out_dir, data_dir, device, progress, eval_every, save_every)


def _train(dataset, recipe, out_dir, data_dir, device, progress, eval_every, save_every) -> Path:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_dir = Path(out_dir or checkpoint_dir(dataset, recipe))
    resume_path = out_dir.with_name(out_dir.name + ".resume.pt")
    rng = random.Random(recipe.seed)  # the data order

    train_examples = data.load_split(dataset, "train", data_dir)
    if recipe.augment_copies:
        if dataset != "spider":
            raise ValueError(f"augment_copies renames Spider schema names; it does not apply to {dataset}")
        train_examples = augment_split(train_examples, recipe.augment_copies, 0.5, recipe.seed)
    eval_examples = data.load_split(dataset, "eval", data_dir)[:256]
    if recipe.base:
        base_dir = resolve_model_dir(recipe.base)
        tokenizer = load_tokenizer(base_dir)
        base = GPTNeo.from_pretrained(base_dir)
        config = base.config
    elif recipe.tokenizer_from:
        source = resolve_model_dir(recipe.tokenizer_from)
        tokenizer = load_tokenizer(source)
        base = None
        like = json.loads((source / "config.json").read_text())  # its token ids and positions
        config = make_config(recipe.shape, vocab_size=like["vocab_size"],
                             max_position_embeddings=like["max_position_embeddings"])
        config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    else:
        tokenizer = train_tokenizer((t for ex in train_examples for t in (ex.prompt, ex.target)), recipe.vocab_size)
        base = None
        config = make_config(recipe.shape, vocab_size=len(tokenizer))
        config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    max_len = min(recipe.max_len, config.max_position_embeddings)
    build, loss_fn = OBJECTIVES[recipe.objective]
    model = build(config, base, recipe.objective_options, recipe.seed).to(device)
    model.set_attention("sdpa")
    model.train()

    encoded = encode_split(train_examples, tokenizer, max_len)
    eval_encoded = encode_split(eval_examples, tokenizer, max_len)
    eval_batches = [collate(eval_encoded[i: i + 32]) for i in range(0, len(eval_encoded), 32)]
    # decay matrices only: not biases, norms or stream identifiers (embeddings to learn freely); the
    # streams get a group of their own only when their learning rate differs, so the default keeps
    # the groups (and so the weights) of the recipes trained before the option
    groups = {"decay": {"params": [], "weight_decay": recipe.weight_decay},
              "no_decay": {"params": [], "weight_decay": 0.0},
              "streams": {"params": [], "weight_decay": 0.0, "lr": recipe.lr * recipe.stream_lr_scale}}
    for name, param in model.named_parameters():
        streams = "stream_embeddings" in name
        group = "streams" if streams and recipe.stream_lr_scale != 1.0 else "decay" if param.dim() >= 2 and not streams else "no_decay"
        groups[group]["params"].append(param)
    groups = [g for key, g in groups.items() if g["params"] or key != "streams"]
    optimizer = torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.95), fused=device.type == "cuda")

    def lr_factor(step):  # linear warm-up, then cosine decay to min_lr_ratio
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        done = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    start, elapsed, history, best = 0, 0.0, [], None  # best: (eval loss, step, weights on the CPU)
    if resume_path.is_file():
        state = torch.load(resume_path, map_location=device, weights_only=False)
        if {**ADDED_LATER, **state["recipe"]} == dataclasses.asdict(recipe):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start, elapsed, history, best = state["step"], state["elapsed"], state["history"], state["best"]

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    stream = batches(encoded, recipe.batch_size, rng)
    # replay the batch order from the seed to where the saved run stopped (restoring the generator's
    # state instead would start a new epoch's shuffle there: another order than an uninterrupted run)
    for _ in range(start):
        next(stream)
    bar = tqdm(total=recipe.steps, initial=start, disable=not progress, desc=f"train {dataset}", mininterval=5)
    t_last, tokens, skipped = time.perf_counter(), 0, 0
    for step in range(start, recipe.steps):
        ids, labels = next(stream)
        ids, labels = ids.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = sliced_backward(model, loss_fn, ids, labels, recipe.micro_batch, autocast)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if torch.isfinite(grad_norm):
            optimizer.step()
            skipped = 0
        else:  # a non-finite step would poison the weights for good: drop it, stop if it keeps happening
            skipped += 1
            bar.write(f"step {step + 1}: non-finite loss/gradient ({float(loss)}), step skipped", file=sys.stderr)
            if skipped >= 10:
                raise FloatingPointError(f"{dataset}: 10 non-finite steps in a row at step {step + 1}; lower --lr")
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += ids.numel()
        last = step + 1 == recipe.steps
        if (step + 1) % 25 == 0 or last:
            now = time.perf_counter()
            elapsed += now - t_last
            bar.set_postfix(loss=f"{float(loss):.3f}", gnorm=f"{float(grad_norm):.2f}", tok_s=f"{tokens / (now - t_last):,.0f}", refresh=False)
            t_last, tokens = now, 0
        bar.update(1)
        if (step + 1) % eval_every == 0 or last:
            eval_loss, eval_terms = evaluate(model, loss_fn, eval_batches, device, autocast)
            history.append({"step": step + 1, "train_loss": float(loss), "eval_loss": eval_loss,
                            "eval_terms": eval_terms, "grad_norm": float(grad_norm), "elapsed_s": elapsed})
            if recipe.keep_best and (best is None or eval_loss < best[0]):
                best = (eval_loss, step + 1, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            terms = "".join(f", {name} {value:.3f}" for name, value in eval_terms.items())
            bar.write(f"step {step + 1}: train loss {float(loss):.3f}, eval loss {eval_loss:.3f}{terms}", file=sys.stderr)
            t_last = time.perf_counter()
        if save_every and (step + 1) % save_every == 0 and not last:
            atomic_save({"recipe": dataclasses.asdict(recipe), "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "step": step + 1, "elapsed": elapsed, "history": history,
                         "best": best},
                        resume_path)
            t_last = time.perf_counter()
    bar.close()

    if best is not None and best[1] != recipe.steps:
        bar.write(f"keeping the weights of step {best[1]} (lowest eval loss, {best[0]:.3f})", file=sys.stderr)
        model.load_state_dict(best[2])
    model.set_attention("eager")
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"dataset": dataset, "recipe": dataclasses.asdict(recipe), "train_time_s": elapsed,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "parameters": sum(p.numel() for p in model.parameters()), "history": history,
                "kept_step": best[1] if best else recipe.steps, FINGERPRINT_KEY: fingerprint(tmp)}
        (tmp / "llmopt.json").write_text(json.dumps(info, indent=2))
    resume_path.unlink(missing_ok=True)
    return out_dir


def ensure_trained(dataset: str, recipe: Recipe, data_dir=None, device=None, isolate: bool | None = None,
                   **options) -> Path:
    """The cached checkpoint for (dataset, shape, recipe), trained first if it is missing. A file
    lock beside it makes concurrent callers (one benchmark process per GPU) train it once: the
    first trains, the others wait and then load what it wrote.

    `isolate` (default: on a CUDA device) trains in a child process, so that the caller, a
    benchmark, never runs under the fixed cuBLAS workspace that reproducible training needs.
    `options` go to `train` (progress, save_every, ...)."""
    path = checkpoint_dir(dataset, recipe)
    if (path / "llmopt.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_name(path.name + ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process to train {path.name} ({lock.lock_file})", flush=True)
        lock.acquire()
    try:
        if not (path / "llmopt.json").is_file():  # it may have appeared while we waited
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            if isolate if isolate is not None else device.type == "cuda":
                train_in_child(dataset, recipe, path, data_dir=data_dir, device=device, **options)
            else:
                train(dataset, recipe, path, data_dir=data_dir, device=device, **options)
    finally:
        lock.release()
    return path


def train_in_child(dataset: str, recipe: Recipe, out_dir: Path, data_dir=None, device=None, **options) -> None:
    """`train` (with `options`) in a fresh (spawned) process, which alone gets the fixed cuBLAS
    workspace; its output goes where this process's does. A failure is raised here, with its exit code."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(
        target=train, args=(dataset, recipe, out_dir), name=f"train {dataset}",
        kwargs=dict(options, data_dir=data_dir, device=str(device) if device is not None else None))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"training {dataset} ({Path(out_dir).name}) failed in its own process "
                           f"(exit code {child.exitcode}); its error is printed above")
