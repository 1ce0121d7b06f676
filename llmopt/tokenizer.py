"""A byte-level BPE tokenizer trained on a dataset's training split, and prompt/target encoding."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style) with EOS as its only special token; deterministic for a given
    text order. Returned wrapped for transformers, so `AutoTokenizer` loads what we save."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(directory))


def encode_prompt(tokenizer, prompt: str, max_len: int, warn: bool = True) -> list[int]:
    """Token ids of a prompt, cut from the left (with a warning) to at most `max_len` tokens: the end
    of a prompt holds the question and the cue ("SQL:", "Summary:"), which the model needs most."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) > max_len:
        if warn:
            warnings.warn(f"prompt of {len(ids)} tokens cut to its last {max_len} (model context)", stacklevel=2)
        ids = ids[-max_len:]
    return ids


def encode_example(tokenizer, prompt: str, target: str, max_len: int) -> tuple[list[int], int]:
    """(prompt ids + target ids + EOS, number of prompt tokens), the prompt cut from the left so that
    the whole sequence fits in `max_len` (silently: the trainer reports how many were cut).
    Loss is taken on the target and EOS only."""
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    target_ids = target_ids[: max_len - 1]
    prompt_ids = encode_prompt(tokenizer, prompt, max_len - len(target_ids), warn=False)
    return prompt_ids + target_ids, len(prompt_ids)
