"""Tokenizer and trainer on tiny data: deterministic tokenizer, loss falls, atomic checkpoints."""

import contextlib
import json
import os

import pytest
import torch
from transformers import AutoTokenizer, GPTNeoForCausalLM

from llmopt import train as training
from llmopt.checkpoints import fingerprint
from llmopt.models.gpt_neo import GPTNeo, make_config
from llmopt.spec_stream import SpecStreamModel
from llmopt.tokenizer import EOS, encode_example, encode_prompt, train_tokenizer
from train_worker import EXAMPLES

TEXTS = [f"name[Place {i}], food[{f}] -> Place {i} serves {f} food." for i in range(60) for f in ("Thai", "Indian")]


def test_tokenizer_is_deterministic_and_loads_with_autotokenizer(tmp_path):
    a, b = train_tokenizer(TEXTS, 300), train_tokenizer(TEXTS, 300)
    assert a.get_vocab() == b.get_vocab()
    a.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.eos_token == EOS and loaded.eos_token_id == a.eos_token_id
    text = "Place 7 serves Thai food."
    assert loaded.decode(loaded(text)["input_ids"]) == text  # byte-level: lossless


def test_encoding_masks_the_prompt_and_ends_with_eos():
    tok = train_tokenizer(TEXTS, 300)
    ids, n_prompt = encode_example(tok, "name[Place 1]", " Place 1 serves food.", max_len=64)
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == " Place 1 serves food."
    # too long: the prompt is cut from the left, the target kept whole
    long_ids, n_long = encode_example(tok, "food " * 100 + "name[Place 1]", " Place 1.", max_len=20)
    assert len(long_ids) == 20 and tok.decode(long_ids[n_long:-1]) == " Place 1."
    with pytest.warns(UserWarning, match="cut to its last 5"):
        assert len(encode_prompt(tok, "food " * 50, 5)) == 5


@pytest.fixture
def toy_data(monkeypatch):
    monkeypatch.setattr(training.data, "load_split", lambda name, split, data_dir=None: EXAMPLES)
    return EXAMPLES


def test_loss_falls_and_checkpoint_loads_everywhere(tmp_path, toy_data, monkeypatch):
    monkeypatch.setenv("LLMOPT_CACHE_DIR", str(tmp_path / "cache"))
    recipe = training.default_recipe("e2e_nlg", "tiny", steps=60, vocab_size=300, lr=3e-3, batch_size=16)
    path = training.ensure_trained("e2e_nlg", recipe, device="cpu", progress=False)
    info = json.loads((path / "llmopt.json").read_text())
    losses = [h["eval_loss"] for h in info["history"]]
    assert losses[-1] < 0.6 * 5.7  # from ~ln(300) at the start
    assert not list(path.parent.glob(".*"))  # no temporary directories or resume files left
    ours = GPTNeo.from_pretrained(path)
    theirs = GPTNeoForCausalLM.from_pretrained(path)
    ids = torch.tensor([AutoTokenizer.from_pretrained(path)("name[Place 3]")["input_ids"]])
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max() < 1e-4
    # cached: a second call trains nothing
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained a cached checkpoint"))
    assert training.ensure_trained("e2e_nlg", recipe, device="cpu") == path


def test_interrupted_run_resumes_and_leaves_no_checkpoint(tmp_path, toy_data, monkeypatch):
    recipe = training.default_recipe("e2e_nlg", "tiny", steps=20, vocab_size=300)
    out = tmp_path / "ck"
    calls = {"n": 0}
    real_evaluate = training.evaluate

    def interrupt(*args):  # the run dies right after its step-10 save
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args)

    monkeypatch.setattr(training, "evaluate", interrupt)
    with pytest.raises(KeyboardInterrupt):
        training.train("e2e_nlg", recipe, out, device="cpu", progress=False, eval_every=10, save_every=10)
    assert not out.exists()  # never a half-written checkpoint
    assert out.with_name("ck.resume.pt").is_file()
    # a state saved before a recipe field existed (here micro_batch) still resumes
    state = torch.load(out.with_name("ck.resume.pt"), weights_only=False)
    del state["recipe"]["micro_batch"]
    torch.save(state, out.with_name("ck.resume.pt"))
    evaluated = []
    monkeypatch.setattr(training, "evaluate", lambda *args: evaluated.append(1) or real_evaluate(*args))
    training.train("e2e_nlg", recipe, out, device="cpu", progress=False, eval_every=10, save_every=10)
    history = json.loads((out / "llmopt.json").read_text())["history"]
    assert [h["step"] for h in history] == [10, 20] and len(evaluated) == 1  # step 10 came from the saved state
    monkeypatch.setattr(training, "evaluate", real_evaluate)
    assert not out.with_name("ck.resume.pt").exists()
    # and the resumed run wrote the weights an uninterrupted one writes (training is deterministic)
    straight = training.train("e2e_nlg", recipe, tmp_path / "straight", device="cpu", progress=False, eval_every=10)
    assert fingerprint(out) == fingerprint(straight) == json.loads((out / "llmopt.json").read_text())["checkpoint_sha256"]


def test_resume_states_are_saved_every_save_every_steps_or_never(tmp_path, toy_data, monkeypatch):
    """--save-every 0: at 1.3b a state is about 20 GB, written for nothing where an interruption
    loses the machine anyway."""
    recipe = training.default_recipe("e2e_nlg", "tiny", steps=12, vocab_size=300)
    saved = []
    monkeypatch.setattr(training, "atomic_save", lambda state, path: saved.append(state["step"]))
    training.train("e2e_nlg", recipe, tmp_path / "a", device="cpu", progress=False, eval_every=12, save_every=5)
    assert saved == [5, 10]  # never at the last step: the checkpoint itself follows
    saved.clear()
    training.train("e2e_nlg", recipe, tmp_path / "b", device="cpu", progress=False, eval_every=12, save_every=0)
    assert saved == []


def test_recipe_key_changes_with_the_recipe():
    a = training.default_recipe("spider", "125m")
    assert a.key() == training.default_recipe("spider", "125m").key()
    assert a.key() != training.default_recipe("spider", "125m", lr=1e-4).key()
    assert training.default_recipe("e2e_nlg", "125m").batch_size == 128


def test_a_batch_in_slices_gives_the_whole_batchs_gradient():
    """Recipe.micro_batch (the 1.3b and 2.7b shapes' default): slices of the batch, each weighted
    by its share of the targets, sum to the gradient of the batch taken at once (lm objective)."""
    model = GPTNeo.random(make_config("tiny", vocab_size=40), seed=0)
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(1, 40, (n,), generator=g).tolist(), p) for n, p in [(9, 3), (14, 5), (6, 2), (11, 1), (8, 4)]]
    ids, labels = training.collate(items)
    grads = []
    for rows in (0, 2):
        model.zero_grad()
        loss = training.sliced_backward(model, training.lm_loss, ids, labels, rows, contextlib.nullcontext)
        grads.append((loss, [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    for sliced, whole in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(sliced, whole, rtol=1e-4, atol=1e-6)
    assert training.default_recipe("e2e_nlg", "1.3b").micro_batch == 16
    assert training.default_recipe("e2e_nlg", "125m").micro_batch == 0
    assert training.Recipe().key() == "dc60eb3395ff"  # recipes that leave it unset keep their names


def test_large_shapes_train_at_a_lower_learning_rate():
    # GPT-3's scaling from 125M to 1.3B and 2.7B; 125m's recipe (and so its cached name) unchanged
    assert training.default_recipe("e2e_nlg", "125m").lr == 3e-4
    assert training.default_recipe("e2e_nlg", "1.3b", objective="ss").lr == 1e-4
    assert training.default_recipe("e2e_nlg", "2.7b").lr == 8e-5
    assert training.default_recipe("e2e_nlg", "1.3b", lr=3e-4).lr == 3e-4  # an explicit --lr wins
    target = "/ckpt/e2e_nlg-1.3b-ss"
    assert training.medusa_recipe("e2e_nlg", target, "1.3b").lr == 1e-3  # heads keep Medusa-1's rate


def test_keeps_the_weights_of_the_best_evaluation(tmp_path, toy_data, monkeypatch):
    losses = iter([2.0, 1.0, 3.0])  # the second evaluation (step 10) is the best
    snapshots = {}

    def fake_evaluate(model, *args):
        assert torch.are_deterministic_algorithms_enabled()  # while training
        step = len(snapshots) * 5 + 5
        snapshots[step] = model.transformer.wte.weight.detach().clone()
        return next(losses), {}

    monkeypatch.setattr(training, "evaluate", fake_evaluate)
    recipe = training.default_recipe("e2e_nlg", "tiny", steps=15, vocab_size=300)
    out = training.train("e2e_nlg", recipe, tmp_path / "ck", device="cpu", progress=False, eval_every=5)
    assert json.loads((out / "llmopt.json").read_text())["kept_step"] == 10
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is back
    assert torch.equal(GPTNeo.from_pretrained(out).transformer.wte.weight, snapshots[10])


@pytest.mark.skipif(not os.environ.get(training.data.DATA_DIR_ENV), reason="the child loads the real data")
def test_a_benchmark_trains_in_a_child_process_and_only_the_child_fixes_the_cublas_workspace(tmp_path, monkeypatch):
    # the fixed workspace reproducible training needs stays for a whole process, and batch-1
    # inference under it was measured at a third of its speed: a benchmark must not inherit it
    monkeypatch.setenv("LLMOPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(training.CUBLAS_ENV, raising=False)
    recipe = training.default_recipe("e2e_nlg", "tiny", steps=4, vocab_size=300)
    path = training.ensure_trained("e2e_nlg", recipe, device="cpu", progress=False, isolate=True)
    assert training.CUBLAS_ENV not in os.environ
    assert json.loads((path / "llmopt.json").read_text())["checkpoint_sha256"] == fingerprint(path)
    with pytest.raises(RuntimeError, match="failed in its own process"):
        training.train_in_child("e2e_nlg", recipe, tmp_path / "bad", data_dir=tmp_path / "no-data", device="cpu",
                                progress=False)


def test_each_evaluation_records_the_objectives_terms(tmp_path, toy_data):
    """ss: the main stream's and each stream's eval loss beside the total, so a log shows whether the
    streams learn (at 1.3b in 600 steps the main stream did and the streams barely did)."""
    recipe = training.default_recipe("e2e_nlg", "tiny", steps=4, vocab_size=300, objective="ss",
                                     objective_options={"gamma": 2, "num_stream_layers": 1})
    out = training.train("e2e_nlg", recipe, tmp_path / "ck", device="cpu", progress=False, eval_every=2)
    history = json.loads((out / "llmopt.json").read_text())["history"]
    assert [sorted(h["eval_terms"]) for h in history] == [["main", "stream1", "stream2"]] * 2
    last = history[-1]
    assert last["eval_loss"] == pytest.approx(last["eval_terms"]["main"] + 0.1 * (
        last["eval_terms"]["stream1"] + last["eval_terms"]["stream2"]), rel=1e-4)


def test_the_streams_own_learning_rate(tmp_path, toy_data):
    """stream_lr_scale: the stream embeddings move about that many times farther a step (AdamW's
    step is about lr per entry); the default leaves every earlier recipe's name as it was."""
    def streams(scale, steps):
        recipe = training.default_recipe("e2e_nlg", "tiny", steps=steps, vocab_size=300, objective="ss", warmup_steps=1,
                                         stream_lr_scale=scale, objective_options={"gamma": 2, "num_stream_layers": 1})
        out = training.train("e2e_nlg", recipe, tmp_path / f"ck{scale}-{steps}", device="cpu", progress=False)
        return SpecStreamModel.from_pretrained(out).stream_embeddings.detach()

    start = streams(1.0, 0)  # the trainer at 0 steps writes the initial weights
    moved = {scale: (streams(scale, 2) - start).abs().mean() for scale in (1.0, 10.0)}
    assert 5 < moved[10.0] / moved[1.0] < 15
    assert training.Recipe(stream_lr_scale=1.0).key() == training.Recipe().key() == "dc60eb3395ff"
    assert training.Recipe(stream_lr_scale=10.0).key() != training.Recipe().key()
