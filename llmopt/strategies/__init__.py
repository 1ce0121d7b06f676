"""One module per technique; importing this package registers them all."""

from . import half, hf, naive, ss  # noqa: F401  (registration side effects)
from .base import STRATEGIES, Generation, Strategy, get_strategy, register  # noqa: F401
