"""Is a mismatch with plain greedy decoding a floating-point near-tie, or a bug?

A fast strategy at half precision may pick another token than plain decoding at the same precision
where the two best candidates score almost alike: kernels that sum in another order move logits
by a few units in the last place. At the first token where the outputs part, the checkpoint's fp32
model scores both candidates after the common prefix; a gap within the tolerance of the
strategy's precision is a near-tie, anything wider is reported as a suspected bug.
"""

from __future__ import annotations

import torch

from .models.gpt_neo import GPTNeo

# logit units; fp16 keeps 11 significant bits, bf16 8: its rounding is 8x coarser
TOLERANCE = {torch.float16: 0.1, torch.bfloat16: 0.8, torch.float32: 1e-4, torch.float64: 1e-9}


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """The first index where two token lists differ (one ending early counts), or None."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.inference_mode()
def explain(checkpoint, prompts: list[list[int]], outputs: list[list[int]], reference: list[list[int]],
            dtype: torch.dtype, device) -> list[dict]:
    """One entry per prompt whose output differs from the reference: where, the two tokens, the fp32
    logit gap between them and the top-2 gap there, and whether it is within TOLERANCE[dtype]."""
    parted = [(i, first_divergence(o, r)) for i, (o, r) in enumerate(zip(outputs, reference))]
    parted = [(i, j) for i, j in parted if j is not None]
    if not parted:
        return []
    model = GPTNeo.from_pretrained(checkpoint, device=device, dtype=torch.float32).eval()
    tolerance = TOLERANCE.get(dtype, 0.0)
    found = []
    for i, j in parted:
        got, ref = outputs[i], reference[i]
        if j >= len(got) or j >= len(ref):  # one stopped without a different token: not a choice
            found.append({"prompt": i, "position": j, "near_tie": False, "why": "lengths differ"})
            continue
        logits = model(torch.tensor([prompts[i] + ref[:j]], device=device))[0, -1]
        top = logits.topk(2).values
        gap = float(logits[ref[j]] - logits[got[j]])
        found.append({"prompt": i, "position": j, "reference_token": ref[j], "token": got[j],
                      "logit_gap": gap, "top2_gap": float(top[0] - top[1]), "near_tie": abs(gap) <= tolerance})
    del model
    return found


def summary(found: list[dict], dtype: torch.dtype) -> dict:
    """The benchmark record's fields: every mismatch, how many are near-ties, and the tolerance."""
    return {"mismatches": found, "near_tie_mismatches": sum(f["near_tie"] for f in found),
            "near_tie_tolerance": TOLERANCE.get(dtype, 0.0)}
