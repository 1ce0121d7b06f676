"""Simulated drafts: the true greedy continuation corrupted at a controlled rate, verified for real."""

import pytest
import torch

from helpers import SCRIPTS, load_script
from llmopt.spec_stream.simulate import SimulatedDraftDecoder, SimulatedStaticTreeDecoder
from llmopt.generation import Clock, greedy
from tests.test_spec_stream import random_model

CLOCK = Clock("cpu")
PROMPTS = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]  # the second is longer than the window


def run(model, topk, accuracy, max_new=30, eos_id=None, seed=0, static=False):
    """static: the captured step's decoder (ss+graphs), here uncaptured (no runner) on the CPU."""
    dec = (SimulatedStaticTreeDecoder(model, topk, max_len=64, accuracy=accuracy, seed=seed) if static
           else SimulatedDraftDecoder(model, topk, accuracy=accuracy, seed=seed))
    outs = []
    for prompt in PROMPTS:
        truth = greedy(model.base, prompt, max_new, eos_id, CLOCK).tokens
        dec.set_continuation(truth)
        with torch.inference_mode():
            out = dec.generate(prompt, max_new, eos_id, CLOCK)
        assert out.tokens == truth
        outs.append(out)
    accepted = sum(sum(o.stats["accepted_per_depth"]) for o in outs)
    proposed = sum(sum(o.stats["proposed_per_depth"]) for o in outs)
    return outs, accepted / proposed


@pytest.fixture(scope="module")
def model():
    return random_model()


def test_perfect_drafts_accept_the_whole_chain(model):
    outs, ratio = run(model, (1, 1, 1), 1.0)
    for out in outs:
        steps = out.stats["accepted_per_step"]
        assert all(a == 3 for a in steps[:-1])  # the last step may run past max_new_tokens
        assert out.forward_calls == 1 + len(steps) == 1 + -(-(30 - 1) // 4)
    assert ratio > 0.9


def test_wrong_drafts_accept_nothing(model):
    outs, ratio = run(model, (1, 1, 1), 0.0)
    assert ratio == 0 and all(o.forward_calls == 30 for o in outs)


@pytest.mark.parametrize("topk", [(1, 1, 1), (3, 2)])
@pytest.mark.parametrize("static", [False, True])
def test_acceptance_rises_with_accuracy_and_output_stays_greedy(model, topk, static):
    ratios = [run(model, topk, a, static=static)[1] for a in (0.0, 0.3, 0.7, 1.0)]
    assert ratios == sorted(ratios) and ratios[0] == 0 and ratios[-1] > ratios[1]


@pytest.mark.parametrize("accuracy", [0.0, 0.5, 1.0])
def test_the_static_step_accepts_what_the_eager_one_does(model, accuracy):
    """Same tables, same verification: the same tokens accepted at every step."""
    eager, _ = run(model, (2, 1, 1), accuracy, seed=3)
    static, _ = run(model, (2, 1, 1), accuracy, seed=3, static=True)
    assert [o.stats["accepted_per_step"] for o in static] == [o.stats["accepted_per_step"] for o in eager]


def test_eos_inside_an_accepted_path(model):
    truth = greedy(model.base, PROMPTS[0], 30, None, CLOCK).tokens
    eos = truth[9]
    run(model, (1, 1, 1), 1.0, eos_id=eos)  # stops exactly at EOS, output greedy


def test_strategy_records_are_labelled_simulated(tmp_path):
    from llmopt import measure
    from llmopt.data import Example
    from llmopt.strategies.simulated import simulated_strategy

    class Tok:
        def decode(self, ids):
            return " ".join(map(str, ids))

    random_model(dtype=torch.float32).save_pretrained(tmp_path)
    ss = simulated_strategy("1,1,1", accuracy=0.5, dtype="float64")
    measure.prepare(ss, measure.Workload("e2e_nlg", "tiny", "ss", tmp_path, [], [], 0, 0, None), "cpu")
    truths = [greedy(ss.model.base, p, 20, None, CLOCK).tokens for p in PROMPTS]
    examples = [Example(str(i), "p", " t", ("x",)) for i in range(len(PROMPTS))]
    work = measure.Workload("e2e_nlg", "tiny", "ss", tmp_path, examples, PROMPTS, 20, -1, Tok())
    ss.set_references(work.prompts, truths)
    r = measure.measure(ss, work, rounds=1, warmup_prompts=1, reference=truths)
    assert r["match_naive"] == 1.0 and r["simulated"] is True and r["technique"] == "ss"
    assert 0 < r["acceptance_ratio"] < 1


def test_a_captured_composition_is_simulated_inside_its_step():
    """ss+graphs gets the static decoder (a CPU can run it uncaptured); accuracy changes without a new one."""
    from llmopt.strategies.simulated import SimulatedSpecStream, simulated_strategy

    ss = simulated_strategy("1,1,1", technique="ss+graphs")
    assert isinstance(ss, SimulatedSpecStream) and ss.graphs
    model = random_model()
    decoder = ss.static_decoder(model, (1, 1, 1), 64, 1)
    assert isinstance(decoder, SimulatedStaticTreeDecoder)
    ss.decoder = decoder
    ss.set_accuracy(0.25)
    assert decoder.drafts.accuracy == 0.25 and ss.config  # no rebuild
    with pytest.raises(ValueError, match="has none"):
        simulated_strategy("1,1,1", technique="half+graphs")


def test_ss_simulate_with_random_weights_end_to_end(tmp_path, monkeypatch):
    """scripts/ss_simulate.py --random-weights on the CPU (eager `ss`: graphs needs CUDA): a random tiny
    SS checkpoint with the dataset's tokenizer, the plain twin and each accuracy timed, every record
    labelled, acceptance rising."""
    import json

    monkeypatch.syspath_prepend(str(SCRIPTS))  # it imports ss_sweep from its folder
    module = load_script("ss_simulate")
    out = tmp_path / "sizes.json"
    module.main(["--out", str(out), "--device", "cpu", "--model", "tiny", "--random-weights", "--datasets", "e2e_nlg",
                 "--technique", "ss", "--topk", "2,1,1", "--num-prompts", "2", "--max-new-tokens", "12",
                 "--rounds", "1", "--accuracies", "0", "1"])
    base, *points = json.loads(out.read_text())
    assert base["technique"] == "naive" and base["simulated"] is False and base["random_weights"] is True
    assert [p["draft_accuracy"] for p in points] == [0, 1] and all(p["technique"] == "ss" for p in points)
    assert all(p["simulated"] and p["random_weights"] and p["simulated_model"] == "tiny (random weights)"
               and p["match_own_greedy"] == 1.0 for p in points)
    assert points[0]["mean_accepted_tokens"] == 1.0 < points[1]["mean_accepted_tokens"]
