"""llmopt: measure what LLM inference optimisations buy, and prove each keeps the output unchanged."""

__version__ = "0.1.0"
