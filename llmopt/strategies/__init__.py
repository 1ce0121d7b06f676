"""The techniques, by name: `get_strategy` parses a name once (techniques.py) and builds the
strategy that runs it."""

from __future__ import annotations

from functools import partial
from typing import Callable

from .base import Strategy
from .compose import Fast
from .hf import HF
from .naive import Half, Naive
from .ss import SpecStream
from .techniques import (TECHNIQUES, known_technique, parse_technique, technique_objective,  # noqa: F401
                         technique_parts, validate_technique)

OWN_CLASS = {("hf",): HF, ("naive",): Naive, ("half",): Half}  # names alone whose strategy has its own class


def get_strategy(name: str, **options) -> Strategy:
    """A technique, or a combination such as 'half+graphs' (see strategies/techniques.py); an
    unknown or impossible name raises ValueError saying why, before any work."""
    technique = parse_technique(name)
    if technique.parts in OWN_CLASS:
        strategy = OWN_CLASS[technique.parts](**options)
        strategy.name = technique.name
        return strategy
    return (SpecStream if technique.ss else Fast)(technique, **options)


# every technique by name, each a factory taking the technique's options
STRATEGIES: dict[str, Callable[..., Strategy]] = {name: partial(get_strategy, name) for name in TECHNIQUES}
