"""Prompt lookup decoding (Saxena 2023): draft by copying. No extra parameters, no training.

Input-grounded outputs (SQL over a schema, a summary of a dialogue, text from a meaning
representation) repeat spans of their prompt. Each step looks up the last n tokens (n = max_ngram
down to min_ngram: the longest match first) at their latest earlier occurrence in prompt +
generated tokens and drafts the num_draft tokens that followed it (where they run past the end,
the match's period repeats); the plain model verifies the chain (chain.py). No match: the step is
a plain one-token step.

The lookup is an index updated as tokens arrive (n-gram -> where its latest earlier occurrence's
successor sits), so a step costs O(max_ngram) on the host whatever the prompt's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from ..models.gpt_neo import GPTNeo, KVCache
from .chain import ChainDecoder, ChainState
from .static_chain import StaticChainDecoder

DEFAULT_NUM_DRAFT = 10
DEFAULT_MAX_NGRAM = 3
DEFAULT_MIN_NGRAM = 1


def check_ngrams(num_draft: int, max_ngram: int, min_ngram: int) -> tuple[int, int, int]:
    """The lookup's options (validated), or ValueError saying why."""
    num_draft, max_ngram, min_ngram = int(num_draft), int(max_ngram), int(min_ngram)
    if num_draft < 1:
        raise ValueError(f"num_draft must be at least 1, got {num_draft}")
    if not 1 <= min_ngram <= max_ngram:
        raise ValueError(f"need 1 <= min_ngram <= max_ngram, got min_ngram={min_ngram}, max_ngram={max_ngram}")
    return num_draft, max_ngram, min_ngram


class NgramIndex:
    """The tokens so far, and for every n-gram (min_n <= n <= max_n) the index of the token after
    its latest occurrence that has a successor: the last n tokens themselves are never their own match."""

    def __init__(self, min_n: int, max_n: int, tokens: Iterable[int] = ()):
        self.min_n, self.max_n = min_n, max_n
        self.tokens: list[int] = []
        self.after: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            i = len(self.tokens)  # the n-grams ending just before i now have a successor: i
            for n in range(self.min_n, min(self.max_n, i) + 1):
                self.after[tuple(self.tokens[i - n: i])] = i  # later occurrences overwrite: latest wins
            self.tokens.append(token)

    def lookup(self, k: int) -> list[int]:
        """The k tokens that followed the latest earlier occurrence of the longest suffix that
        occurred before; [] if none did. A match close to the end runs into the tokens being
        drafted: they are copied as they are drafted (an overlapping copy, as in LZ77), i.e. the
        text is guessed to repeat with the match's period (what a loop in the output does)."""
        if k <= 0:
            return []
        end = len(self.tokens)
        for n in range(min(self.max_n, end), self.min_n - 1, -1):
            start = self.after.get(tuple(self.tokens[end - n:]))
            if start is not None:
                draft = self.tokens[start: start + k]
                period = end - start
                while len(draft) < k:  # past the end: repeat the period
                    draft.append(draft[len(draft) - period])
                return draft
        return []


@dataclass
class LookupState(ChainState):
    index: NgramIndex | None = None  # set by new_state


class LookupDrafting:
    """Prompt lookup as a chain's drafter: the state keeps an n-gram index of the history, and a
    draft is its lookup. Mixed into a chain decoder, dynamic or static."""

    state_type = LookupState
    min_ngram: int
    max_ngram: int

    def new_state(self, cache: KVCache, root: torch.Tensor, prompt: list[int], max_new_tokens: int) -> LookupState:
        state = super().new_state(cache, root, prompt, max_new_tokens)
        state.index = NgramIndex(self.min_ngram, self.max_ngram, state.history)
        return state

    def draft_tokens(self, state: LookupState, length: int) -> list[int]:
        index = state.index
        index.extend(state.history[len(index):])  # the last step's tokens
        return index.lookup(length)


class LookupDecoder(LookupDrafting, ChainDecoder):
    """Prompt lookup decoding over the plain model and its dynamic cache."""

    def __init__(self, model: GPTNeo, num_draft: int = DEFAULT_NUM_DRAFT, max_ngram: int = DEFAULT_MAX_NGRAM,
                 min_ngram: int = DEFAULT_MIN_NGRAM):
        num_draft, self.max_ngram, self.min_ngram = check_ngrams(num_draft, max_ngram, min_ngram)
        super().__init__(model, num_draft)

    def draft(self, state: LookupState, length: int) -> torch.Tensor:
        return torch.tensor(self.draft_tokens(state, length), dtype=torch.long, device=self.device)


class StaticLookupDecoder(LookupDrafting, StaticChainDecoder):
    """Prompt lookup decoding with the static, capturable verify step (`pld+graphs`)."""

    def __init__(self, model: GPTNeo, num_draft: int = DEFAULT_NUM_DRAFT, max_ngram: int = DEFAULT_MAX_NGRAM,
                 min_ngram: int = DEFAULT_MIN_NGRAM, max_len: int | None = None):
        num_draft, self.max_ngram, self.min_ngram = check_ngrams(num_draft, max_ngram, min_ngram)
        super().__init__(model, num_draft, max_len)
