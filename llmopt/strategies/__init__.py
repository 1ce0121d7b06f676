"""The techniques, by name: `get_strategy` parses a name once (techniques.py) and builds the
strategy that runs it; `expand_techniques` replaces a group of techniques (GROUPS, e.g. `peers`)
in a list by its members."""

from __future__ import annotations

from functools import partial
from typing import Callable

from .base import Strategy
from .compose import Fast
from .hf import HF
from .medusa import Medusa
from .naive import Half, Naive
from .pld import PromptLookup
from .sps import DraftModelSpeculation
from .ss import SpecStream
from .techniques import (GROUPS, TECHNIQUES, expand_techniques, known_technique, parse_technique,  # noqa: F401
                         technique_objective, technique_parts, validate_technique)

OWN_CLASS = {("naive",): Naive, ("half",): Half}  # names alone whose strategy has its own class
# the strategy of each drafting method (with whatever parts it composes with)
DRAFTERS = {"ss": SpecStream, "pld": PromptLookup, "sps": DraftModelSpeculation, "medusa": Medusa}


def get_strategy(name: str, **options) -> Strategy:
    """A technique, or a combination such as 'half+graphs' (see strategies/techniques.py); an
    unknown or impossible name raises ValueError saying why, before any work."""
    technique = parse_technique(name)
    if technique.stock:  # hf, hf+pld, hf+sps: transformers' generate runs them all
        return HF(technique, **options)
    if technique.parts in OWN_CLASS:
        strategy = OWN_CLASS[technique.parts](**options)
        strategy.name = technique.name
        return strategy
    return DRAFTERS.get(technique.drafting, Fast)(technique, **options)


# every technique by name, each a factory taking the technique's options
STRATEGIES: dict[str, Callable[..., Strategy]] = {name: partial(get_strategy, name) for name in TECHNIQUES}
