"""Where trained checkpoints live, how they are written safely, how a model is named, and how its
weights are fingerprinted (so that runs compare output hashes only between the same weights)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "LLMOPT_CACHE_DIR"
# The files that hold weights: single or sharded safetensors, legacy .bin, and the streams' own file
# (spec_stream.model.STREAM_WEIGHTS). Config and tokenizer files are not weights.
WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin", "spec_stream.safetensors")
FINGERPRINT_KEY = "checkpoint_sha256"  # the name of `fingerprint` in llmopt.json and in every benchmark record


def cache_dir() -> Path:
    """$LLMOPT_CACHE_DIR, else ~/.cache/llmopt."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llmopt")


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Yield a temporary directory beside `final`; rename it to `final` only if the block finishes,
    so an interrupted write never leaves a half-written checkpoint behind."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():  # replace an older copy: move it aside first, then swap
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def resolve_model_dir(spec: str) -> Path:
    """A checkpoint directory from a local path or, failing that, a Hugging Face hub id."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists() or spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model {spec!r}: no such checkpoint directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:  # network down, unknown repo, ...
        raise FileNotFoundError(f"model {spec!r} is neither a local directory nor a reachable hub id: {exc}") from exc


def recorded(directory: str | Path) -> dict:
    """What train() wrote about a checkpoint (its llmopt.json: recipe, training time, fingerprint),
    or {} for a checkpoint made elsewhere."""
    info = Path(directory) / "llmopt.json"
    return json.loads(info.read_text()) if info.is_file() else {}


def fingerprint(directory: str | Path) -> str:
    """sha256 over a checkpoint's weight files (WEIGHT_PATTERNS), sorted by name, each hashed as its
    name and size, then its bytes, read in chunks so a multi-GB checkpoint never sits in memory at once."""
    directory = Path(directory)
    files = sorted({f for pattern in WEIGHT_PATTERNS for f in directory.glob(pattern) if f.is_file()})
    if not files:
        raise FileNotFoundError(f"{directory}: no weight files ({', '.join(WEIGHT_PATTERNS)})")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0{f.stat().st_size}\0".encode())  # names and sizes delimit the files
        with f.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
