"""One module per technique; importing this package registers them all."""

from . import flash2, graphs, half, hf, naive, ss  # noqa: F401  (registration side effects)
from .base import (STRATEGIES, Generation, Strategy, get_strategy, known_technique, register,  # noqa: F401
                   technique_objective, validate_technique)
