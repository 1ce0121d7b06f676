"""Medusa: the heads' shapes and extra parameters, their checkpoint round trip, the training
objective (frozen base, loss falls), the strategy against naive, the grammar."""

import pytest
import torch

from llmopt import train as training
from llmopt.checkpoints import fingerprint
from llmopt.models.gpt_neo import GPTNeo, make_config, param_bytes
from llmopt.spec_stream.medusa import MedusaModel, build_medusa, medusa_loss
from llmopt.strategies import get_strategy

from helpers import random_prompts, save_tiny_checkpoint
from train_worker import EXAMPLES


def base(vocab=31, hidden=16):
    config = make_config("tiny", vocab_size=vocab, num_layers=2, hidden_size=hidden, num_heads=2, window_size=4,
                         max_position_embeddings=64)
    return GPTNeo.random(config, seed=0)


@pytest.mark.parametrize("share_head, extra", [(False, 3 * (16 * 16 + 16 + 16 * 31)), (True, 3 * (16 * 16 + 16))])
def test_heads_shapes_and_extra_parameters(share_head, extra):
    model = MedusaModel.random(base(), 3, share_head)
    assert sum(p.numel() for p in model.drafting_modules().parameters()) == extra
    assert model.head_logits(torch.zeros(5, 16)).shape == (5, 3, 31)


def test_fresh_heads_start_as_the_next_token_head():
    b = base()
    model = MedusaModel.from_base(b, 2)
    h = model.hidden(torch.tensor([[1, 2, 3]]))
    logits = model.head_logits(h)
    torch.testing.assert_close(logits[..., 0, :], b.lm_head(h))
    torch.testing.assert_close(b.lm_head(h), b(torch.tensor([[1, 2, 3]])))
    assert not any(p.requires_grad for p in b.parameters())


def test_heads_round_trip_beside_a_stock_checkpoint(tmp_path):
    model = MedusaModel.random(base(), 2, seed=4)
    model.save_pretrained(tmp_path)
    loaded = MedusaModel.load_heads(GPTNeo.from_pretrained(tmp_path), tmp_path)
    h = torch.randn(3, 16)
    torch.testing.assert_close(loaded.head_logits(h), model.head_logits(h))
    with pytest.raises(ValueError, match="no Medusa heads"):
        MedusaModel.load_heads(loaded.base, tmp_path / "nowhere")


def test_medusa_objective_needs_a_base_and_known_options():
    with pytest.raises(ValueError, match="frozen checkpoint"):
        build_medusa(base().config, None, {}, 0)
    with pytest.raises(ValueError, match="unknown medusa options"):
        build_medusa(base().config, base(), {"gama": 2}, 0)


def test_the_loss_trains_the_heads_only():
    model = build_medusa(None, base(), {"gamma": 2}, 0)
    ids = torch.randint(0, 31, (4, 12))
    labels = ids.clone()
    labels[:, :3] = -100
    loss, logs = medusa_loss(model, ids, labels)
    loss.backward()
    assert set(logs) == {"head1", "head2", "loss"}
    assert all(p.grad is None for p in model.base.parameters())
    assert all(p.grad is not None for p in model.drafting_modules().parameters())


def test_heads_train_on_the_frozen_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(training.data, "load_split", lambda name, split, data_dir=None: EXAMPLES)
    monkeypatch.setenv("LLMOPT_CACHE_DIR", str(tmp_path / "cache"))
    target = training.ensure_trained("e2e_nlg", training.default_recipe("e2e_nlg", "tiny", steps=5, vocab_size=300),
                                     device="cpu", progress=False)
    recipe = training.medusa_recipe("e2e_nlg", target, shape="tiny", steps=30, objective_options={"gamma": 2})
    heads = training.ensure_trained("e2e_nlg", recipe, device="cpu", progress=False)
    # the frozen base's weights are written unchanged beside the heads
    assert GPTNeo.from_pretrained(heads).state_dict().keys() == GPTNeo.from_pretrained(target).state_dict().keys()
    for name, t in GPTNeo.from_pretrained(heads).state_dict().items():
        assert torch.equal(t, GPTNeo.from_pretrained(target).state_dict()[name]), name
    medusa = get_strategy("medusa", heads=str(heads), topk="2,1")
    medusa.prepare(target, "cpu")
    naive = get_strategy("naive")
    naive.prepare(target, "cpu")
    for prompt in random_prompts(3, 300, 20):
        assert medusa.generate(prompt, 20, None).tokens == naive.generate(prompt, 20, None).tokens
    assert fingerprint(target)  # the target is untouched


def test_strategy_matches_naive(tmp_path):
    save_tiny_checkpoint(tmp_path, 30, window_size=8)
    target = GPTNeo.from_pretrained(tmp_path)
    heads = MedusaModel.random(target, 3, seed=2, std=0.5)
    heads.save_pretrained(tmp_path)  # beside the checkpoint: the default place
    naive = get_strategy("naive", dtype="float64")
    naive.prepare(tmp_path, "cpu")
    medusa = get_strategy("medusa", dtype="float64", topk="2,2,1,1")
    medusa.prepare(tmp_path, "cpu")
    config = medusa.config()
    assert (config["topk"], config["tree_size"], config["gamma"], config["techniques"]) == ("2,2,1", 11, 3, "medusa")
    drafting = heads.drafting_modules().to(torch.float64)
    assert config["extra_parameters"] == sum(p.numel() for p in drafting.parameters())
    assert config["extra_parameter_bytes"] == param_bytes(drafting)
    # medusa+graphs: the static step, uncaptured on a CPU
    static = get_strategy("medusa+graphs", dtype="float64", topk="2,2,1,1", runtime="static", bucket=32)
    static.prepare(tmp_path, "cpu")
    assert (static.config()["runtime"], static.config()["graph_bucket"]) == ("static", 32)
    with pytest.raises(ValueError, match="trained with share_head=false, not true"):
        get_strategy("medusa", share_head=True).prepare(tmp_path, "cpu")
    with pytest.raises(ValueError, match="share_head must be true or false"):
        get_strategy("medusa", share_head="yes")
    for prompt in random_prompts(6, 30, 40):
        expected = naive.generate(prompt, 30, 7)
        for strategy in (medusa, static):
            out = strategy.generate(prompt, 30, 7)
            assert out.tokens == expected.tokens and out.forward_calls <= expected.forward_calls


def test_medusa_composes_with_a_precision_and_graphs(tmp_path):
    assert get_strategy("medusa+half").dtype == torch.float16
    assert get_strategy("medusa+bf16").dtype == torch.bfloat16
    assert get_strategy("medusa+half+graphs").dtype == torch.float16
    for name, why in {"medusa+ss": "both drafting methods", "medusa+flash2": "not built yet"}.items():
        with pytest.raises(ValueError, match=why):
            get_strategy(name)
    save_tiny_checkpoint(tmp_path, 30)
    with pytest.raises(ValueError, match="no Medusa heads"):
        get_strategy("medusa").prepare(tmp_path, "cpu")
