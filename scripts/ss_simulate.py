"""SIMULATED sweep: Speculative Streaming's tokens/s against its acceptance ratio.

The streams' draft tokens are replaced by the true greedy continuation, each token kept with
probability `accuracy` and otherwise corrupted (`llmopt/spec_stream/simulate.py`); the forward,
the main stream's verification and the KV commit are the real ones, so the output still equals
plain greedy decoding (asserted). This shows where the technique starts to pay, not what the
trained streams achieve: every ss record carries `simulated: True`.

    python scripts/ss_simulate.py --out simulated.json [--datasets spider,e2e_nlg] [--topk 1,1,1,1]
                                  [--accuracies 0 0.2 0.4 0.6 0.8 0.9 1]

Prints one line per (dataset, accuracy): acceptance ratio, tokens/s and speed-up over `naive`
measured in the same run."""

from __future__ import annotations

import argparse
import json
import sys

from llmopt import measure
from llmopt.strategies.simulated import simulated_strategy
from ss_sweep import add_workload_arguments, naive_baseline  # same folder

DEFAULT_ACCURACIES = [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topk", default="1,1,1,1", help="the tree, as k per depth")
    p.add_argument("--accuracies", nargs="+", type=float, default=DEFAULT_ACCURACIES,
                   help="probability that each simulated chain token is the true one")
    p.add_argument("--seed", type=int, default=0)
    add_workload_arguments(p)
    args = p.parse_args(argv)

    records = []
    for dataset in args.datasets.split(","):
        work, reference, base = naive_baseline(dataset, args)
        warm = len(work.prompts)
        base["simulated"] = False
        records.append(base)
        print(f"{dataset:>10} naive (measured)        {base['tokens_per_s']:8.1f} tok/s", flush=True)
        print(f"{dataset:>10} {'accuracy':>8} {'acceptance':>10} {'tok/s':>8} {'speed-up':>8} {'accepted/step':>13}  [SIMULATED drafts]")
        for accuracy in args.accuracies:
            ss = simulated_strategy(args.topk, accuracy, args.seed)
            measure.prepare(ss, work, args.device)
            ss.set_references(work.prompts, reference)
            r = measure.measure(ss, work, args.rounds, warm, reference=reference)
            if r["match_naive"] != 1.0:
                raise AssertionError(f"{dataset}: simulated ss at accuracy {accuracy} changed the greedy output "
                                     f"(match_naive {r['match_naive']})")
            r.update(simulated=True, technique="ss", draft_accuracy=accuracy,
                     speedup_over_naive=r["tokens_per_s"] / base["tokens_per_s"])
            records.append(r)
            print(f"{dataset:>10} {accuracy:8.2f} {r['acceptance_ratio']:10.3f} {r['tokens_per_s']:8.1f} "
                  f"{'x%.2f' % r['speedup_over_naive']:>8} {r['mean_accepted_tokens']:13.2f}", flush=True)
            with open(args.out, "w") as f:
                json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
