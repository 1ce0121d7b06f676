"""The near-tie report: where a strategy's output parts from plain decoding, and by how much."""

import torch

from llmopt import near_ties
from llmopt.models.gpt_neo import GPTNeo, make_config
from llmopt.generation import Clock, greedy


def test_first_divergence():
    assert near_ties.first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert near_ties.first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert near_ties.first_divergence([1, 2], [1, 2, 3]) == 2


def test_explain_scores_both_candidates_with_the_fp32_model(tmp_path):
    model = GPTNeo.random(make_config("tiny", vocab_size=64, max_position_embeddings=64), seed=1)
    model.save_pretrained(tmp_path)
    prompts = [[1, 2, 3], [4, 5]]
    with torch.inference_mode():
        reference = [greedy(model, p, 6, None, Clock("cpu")).tokens for p in prompts]
        logits = model(torch.tensor([prompts[1] + reference[1][:2]]))[0, -1]
    runner_up = int(logits.topk(2).indices[1])
    outputs = [reference[0], reference[1][:2] + [runner_up, 7, 7, 7]]
    found = near_ties.explain(tmp_path, prompts, outputs, reference, torch.float16, "cpu")
    assert len(found) == 1 and found[0]["prompt"] == 1 and found[0]["position"] == 2
    top = logits.topk(2).values
    assert abs(found[0]["logit_gap"] - float(top[0] - top[1])) < 1e-5
    assert found[0]["logit_gap"] == found[0]["top2_gap"] > 0
    assert found[0]["near_tie"] == (found[0]["logit_gap"] <= near_ties.TOLERANCE[torch.float16])
    summary = near_ties.summary(found, torch.float16)
    assert summary["near_tie_mismatches"] == int(found[0]["near_tie"]) and summary["near_tie_tolerance"] == 0.1
    assert near_ties.explain(tmp_path, prompts, reference, reference, torch.float16, "cpu") == []
