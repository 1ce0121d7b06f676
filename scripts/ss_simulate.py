"""SIMULATED sweep: Speculative Streaming's tokens/s against its acceptance ratio.

The streams' draft tokens are replaced by the true greedy continuation, each token kept with
probability `accuracy` and otherwise corrupted (`llmopt/spec_stream/simulate.py`); the forward,
the main stream's verification and the KV commit are the real ones, so the output is still the
technique's greedy output (asserted; in fp32 plain greedy's). This shows where the technique starts to pay, not what the
trained streams achieve: every ss record carries `simulated: True`.

    python scripts/ss_simulate.py --out simulated.json [--datasets spider,e2e_nlg] [--topk 1,1,1,1]
        [--technique ss+half+graphs] [--model 1.3b --random-weights] [--accuracies 0 0.2 0.4 0.6 0.8 0.9 1]

--technique: any ss composition; the baseline is its plain twin (`half+graphs` for
`ss+half+graphs`), timed in the same process. One strategy is prepared (and captured) per dataset;
each accuracy only rebuilds its draft tables.
--random-weights: the --model shape with random weights (seed 0, streams included) and the
dataset's tokenizer, instead of a trained checkpoint: the real step cost at sizes with no trained
checkpoint (records say `random_weights: True`).

The "true" continuation is the technique's own greedy output, made first with drafts that are
never right: fp16 near-ties (rare with trained weights, frequent with random ones, whose logits are
near-uniform) can make it differ from the plain twin's, and a draft table built from the twin's
would then be wrong from that token on. Each record's `match_naive` is that output's match with the
plain twin, asserted 1.0 for fp32 on trained weights, recorded otherwise; `match_own_greedy` (1.0,
asserted) says the simulated drafts left the output unchanged.

Prints one line per (dataset, accuracy): acceptance ratio, tokens/s and speed-up over the plain
twin measured in the same run."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from llmopt import measure
from llmopt.train import default_recipe, train
from llmopt.strategies.simulated import simulated_strategy
from ss_sweep import add_workload_arguments, naive_baseline, plain_twin, save  # same folder

DEFAULT_ACCURACIES = [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0]


def random_checkpoint(dataset: str, shape: str, directory: Path, args) -> Path:
    """A `shape` SS checkpoint with random weights and `dataset`'s tokenizer: the trainer at 0 steps."""
    print(f"{dataset:>10} {shape}: writing a random-weight SS checkpoint (the trainer at 0 steps)", flush=True)
    recipe = default_recipe(dataset, shape, objective="ss", steps=0)
    return train(dataset, recipe, out_dir=directory / f"{dataset}-{shape}-random", data_dir=args.data_dir,
                 device=args.device, progress=False)


def own_outputs(ss, work) -> list[list[int]]:
    """The technique's greedy outputs, drafted with tokens that are never right (accuracy 0)."""
    ss.set_accuracy(0.0)
    ss.set_references(work.prompts, [[] for _ in work.prompts])
    return [ss.generate(p, work.max_new_tokens, work.eos_id).tokens for p in work.prompts]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topk", default="1,1,1,1", help="the tree, as k per depth")
    p.add_argument("--accuracies", nargs="+", type=float, default=DEFAULT_ACCURACIES,
                   help="probability that each simulated chain token is the true one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--technique", default="ss", help="ss or a composition such as ss+half+graphs (default ss)")
    p.add_argument("--random-weights", action="store_true",
                   help="the --model shape with random weights instead of a trained checkpoint")
    add_workload_arguments(p)
    args = p.parse_args(argv)
    simulated_strategy(args.topk, technique=args.technique)  # a bad name or tree fails before any work

    records = []
    with tempfile.TemporaryDirectory(prefix="ss_simulate_") as tmp:
        for dataset in args.datasets.split(","):
            model = str(random_checkpoint(dataset, args.model, Path(tmp), args)) if args.random_weights else None
            work, reference, base = naive_baseline(dataset, args, args.technique, model)
            warm = len(work.prompts)
            label = f"{args.model} (random weights)" if args.random_weights else args.model
            base.update(simulated=False, random_weights=args.random_weights, simulated_model=label)
            records.append(base)
            print(f"{dataset:>10} {label}: {plain_twin(args.technique)} (measured) {base['tokens_per_s']:8.1f} tok/s",
                  flush=True)
            ss = simulated_strategy(args.topk, technique=args.technique, seed=args.seed)
            measure.prepare(ss, work, args.device)
            # the technique's own greedy output is the truth (see the docstring); in fp32 on trained
            # weights it must be plain greedy's
            own = own_outputs(ss, work)
            plain_match = sum(a == b for a, b in zip(own, reference)) / len(own)
            if plain_match != 1.0 and ss.dtype == torch.float32 and not args.random_weights:
                raise AssertionError(f"{dataset}: {args.technique}'s greedy output differs from "
                                     f"{plain_twin(args.technique)}'s (match {plain_match})")
            print(f"{dataset:>10} {'accuracy':>8} {'acceptance':>10} {'tok/s':>8} {'speed-up':>8} "
                  f"{'accepted/step':>13}  [SIMULATED drafts, {args.technique}]")
            for accuracy in args.accuracies:
                ss.set_accuracy(accuracy)
                ss.set_references(work.prompts, own)
                r = measure.measure(ss, work, args.rounds, warm, reference=own)
                if r["match_naive"] != 1.0:
                    raise AssertionError(f"{dataset}: simulated {args.technique} at accuracy {accuracy} changed "
                                         f"its greedy output (match {r['match_naive']})")
                # match_naive: with the plain twin, as everywhere (equal outputs at every accuracy)
                r.update(match_own_greedy=r["match_naive"], match_naive=plain_match,
                         simulated=True, technique=args.technique, draft_accuracy=accuracy,
                         random_weights=args.random_weights, simulated_model=label,
                         speedup_over_naive=r["tokens_per_s"] / base["tokens_per_s"])
                records.append(r)
                print(f"{dataset:>10} {accuracy:8.2f} {r['acceptance_ratio']:10.3f} {r['tokens_per_s']:8.1f} "
                      f"{'x%.2f' % r['speedup_over_naive']:>8} {r['mean_accepted_tokens']:13.2f}  "
                      f"match_naive {r['match_naive']:.2f}", flush=True)
                save(records, args.out)
            del ss
    return 0


if __name__ == "__main__":
    sys.exit(main())
