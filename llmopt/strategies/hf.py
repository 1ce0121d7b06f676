"""The references every user knows: stock transformers `generate`, fp32, eager attention, dynamic
cache (`hf`), and transformers' own speculative decoders over the same model, the stock twins of
ours (`hf+pld`: prompt lookup, `prompt_lookup_num_tokens`; `hf+sps`: assisted generation with the
sps draft checkpoint as `assistant_model`). Their options mirror ours (`num_draft`, `max_ngram`;
`draft`, `k`), so "ours against the library" compares implementations of one method."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GenerationConfig, GPTNeoForCausalLM
from transformers.generation.streamers import BaseStreamer

from ..generation import Clock, Generation
from ..spec_stream.draft_model import DEFAULT_K
from ..spec_stream.lookup import DEFAULT_MAX_NGRAM, DEFAULT_NUM_DRAFT, check_ngrams
from .base import Strategy
from .drafting import draft_options, drafter_fields, require_draft
from .techniques import Technique, parse_dtype, parse_technique

HF_ALONE = parse_technique("hf")


class FirstTokenTimer(BaseStreamer):
    """generate() hands the streamer the prompt first, then the new tokens: time the first."""

    def __init__(self, clock: Clock):
        self.clock, self.calls, self.first = clock, 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            self.first = self.clock()

    def end(self):
        pass


class HF(Strategy):
    name = "hf"

    def __init__(self, technique: Technique = HF_ALONE, dtype: str | torch.dtype = "float32",
                 num_draft: int = DEFAULT_NUM_DRAFT, max_ngram: int = DEFAULT_MAX_NGRAM,
                 draft: str | Path | None = None, k: int = DEFAULT_K):
        """hf+pld: num_draft (prompt_lookup_num_tokens), max_ngram (max_matching_ngram_size);
        hf+sps: draft (the draft checkpoint directory), k (num_assistant_tokens, a constant schedule
        and no confidence cut-off, as our sps drafts)."""
        self.technique, self.name = technique, technique.name
        self.dtype = parse_dtype(dtype)
        self.method = technique.drafting  # None, "pld" or "sps"
        self.num_draft, self.max_ngram, _ = check_ngrams(num_draft, max_ngram, 1)
        self.draft, self.k = draft_options(draft, k)

    def _load(self, checkpoint) -> GPTNeoForCausalLM:
        model = GPTNeoForCausalLM.from_pretrained(checkpoint, dtype=self.dtype, attn_implementation="eager")
        # generate() fills what its config leaves unset from the model's defaults, so a call without
        # an EOS would stop at the checkpoint's: the EOS is what generate() is given, or none
        model.generation_config.eos_token_id = None
        return model.to(self.device).eval()

    def prepare(self, checkpoint, device):
        self.device = torch.device(device)
        self.assistant = None
        if self.method == "sps":
            self.assistant = self._load(require_draft(self.technique, self.draft))
            # assisted generation reads its draft length, schedule and confidence cut-off from the
            # assistant's own generation config, not from the one generate() is given: k tokens
            # every step, as our sps drafts
            self.assistant.generation_config.update(num_assistant_tokens=self.k, num_assistant_tokens_schedule="constant",
                                                    assistant_confidence_threshold=0.0)
        self.model = self._load(checkpoint)
        self.clock = Clock(self.device)
        self.forwards = 0  # the target's forward calls when it drafts, counted by a hook: generate() does not say

        def count(*_):
            self.forwards += 1
        if self.method is not None:  # plain generate runs one forward per token: no hook in the baseline's way
            self.model.register_forward_hook(count)

    def _generation_config(self, max_new_tokens, eos_id) -> GenerationConfig:
        options = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=eos_id,
                       pad_token_id=eos_id if eos_id is not None else 0)
        if self.method == "pld":
            options.update(prompt_lookup_num_tokens=self.num_draft, max_matching_ngram_size=self.max_ngram)
        return GenerationConfig(**options)

    @torch.inference_mode()
    def generate(self, prompt, max_new_tokens, eos_id):
        ids = torch.tensor([prompt], device=self.device)
        config = self._generation_config(max_new_tokens, eos_id)
        extra = {"assistant_model": self.assistant} if self.assistant is not None else {}
        timer = FirstTokenTimer(self.clock)
        self.forwards = 0
        start = self.clock()
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, streamer=timer,
                                  **extra)
        end = self.clock()
        tokens = out[0, len(prompt):].tolist()
        # generate() cannot be split into phases from outside: the whole call counts as forward time
        return Generation(tokens=tokens, forward_calls=self.forwards if self.method else len(tokens),
                          ttft_s=(timer.first or end) - start,
                          forward_s=end - start)

    def config(self) -> dict:
        config = super().config()
        if self.method == "pld":
            config.update(techniques=self.technique.label, num_draft=self.num_draft, max_ngram=self.max_ngram,
                          **drafter_fields(None, None))
        elif self.method == "sps":
            config.update(techniques=self.technique.label, k=self.k, draft=self.draft.name,
                          **drafter_fields(self.assistant, self.draft))
        return config
