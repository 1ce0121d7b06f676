"""Builders several test modules share (imported as `helpers`: pytest puts this folder on sys.path)."""

import importlib.util
import random
from pathlib import Path

import torch

from llmopt.models.gpt_neo import GPTNeo, make_config


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """scripts/NAME.py as a module (the scripts are no package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_tiny_checkpoint(path, vocab: int, **config) -> None:
    """A random tiny GPT-Neo whose weights (normal, std 0.3) are large enough to give varied,
    non-repeating greedy output; `config` overrides make_config's fields."""
    model = GPTNeo.random(make_config("tiny", vocab_size=vocab, **config), seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    model.save_pretrained(path)


def random_prompts(n: int, vocab: int, max_len: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randrange(1, max_len))] for _ in range(n)]


def perfect_stream_logits(continuation, vocab, rank):
    """Stream logits whose rank-`rank` tokens are the true greedy continuation (a test hook)."""
    logits = torch.zeros(len(continuation), vocab, dtype=torch.float64)
    for j, token in enumerate(continuation):
        logits[j, token] = 2.0 - rank
        logits[j, (token + 1) % vocab] = 1.0 + rank  # a wrong token above it when rank = 1
    return logits
