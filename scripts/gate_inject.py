"""A pytest plugin that scripts/gate_validation.py installs (`-p gate_inject`) to validate the gate
like a classifier: it makes one cell slower, or changes one cell's output, on purpose. Not a
product option: nothing in llmopt reads it; the script puts scripts/ on PYTHONPATH and sets

    GATE_INJECT=slow:TECHNIQUE:FRACTION   every generate call of TECHNIQUE takes FRACTION longer
                                          in tokens/s (0.10: 10% fewer tokens/s)
    GATE_INJECT=output:TECHNIQUE          the first prompt's last token of TECHNIQUE is changed
"""

from __future__ import annotations

import os
import time

from llmopt import measure


def _inject(strategy, kind: str, amount: float):
    generate = strategy.generate

    def slower(prompt, max_new_tokens, eos_id):
        start = time.perf_counter()
        out = generate(prompt, max_new_tokens, eos_id)
        # a rate of (1 - amount): the call takes 1 / (1 - amount) of its time
        time.sleep((time.perf_counter() - start) * (1 / (1 - amount) - 1))
        return out

    first = {"prompt": None}

    def changed(prompt, max_new_tokens, eos_id):
        out = generate(prompt, max_new_tokens, eos_id)
        if first["prompt"] is None:
            first["prompt"] = list(prompt)
        if list(prompt) == first["prompt"] and out.tokens:
            out.tokens[-1] = (out.tokens[-1] + 1) % 64  # another token, the same length
        return out

    strategy.generate = slower if kind == "slow" else changed
    return strategy


def pytest_configure(config):
    spec = os.environ.get("GATE_INJECT")
    if not spec:
        return
    kind, technique, *rest = spec.split(":")
    amount = float(rest[0]) if rest else 0.0
    build = measure.build_strategy

    def build_injected(name, options):
        strategy = build(name, options)
        return _inject(strategy, kind, amount) if name == technique else strategy

    measure.build_strategy = build_injected
