"""Speculative Streaming (Bhendawade et al., 2024): one model drafts and verifies in one forward
pass through γ speculative streams in its top layers (multi-stream attention)."""

from .decode import Decoder
from .loss import build_ss, ss_loss
from .model import SpecStreamModel
from .tree import DraftTree

__all__ = ["Decoder", "DraftTree", "SpecStreamModel", "build_ss", "ss_loss"]
