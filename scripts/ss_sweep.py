"""Sweep Speculative Streaming's inference knobs (tree shape: k per depth; pruning threshold) against
plain decoding, on the SS-trained checkpoint of each dataset, in one process per GPU.

    python scripts/ss_sweep.py --out results.json [--datasets spider,e2e_nlg] [--technique ss+half+graphs]
        [--topk 1,1,1,1 2,1,1,1 3,2,2,1@0.05 ...]      (TREE@THRESHOLD: with tree pruning)

Prints one line per (dataset, tree, threshold): tokens/s, speed-up over the plain-decoding twin of
the technique (`naive` for `ss`, `half+graphs` for `ss+half+graphs`) measured in the same run, mean
accepted tokens per step, acceptance per depth and match_naive."""

from __future__ import annotations

import argparse
import json
import sys

from llmopt import data, measure
from llmopt.strategies import get_strategy

DEFAULT_TREES = ["1", "1,1", "1,1,1", "1,1,1,1", "2,1,1,1", "2,2,1,1", "3,1,1,1", "3,2,1"]


def add_workload_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared with scripts/ss_simulate.py."""
    p.add_argument("--datasets", default=",".join(data.DATASETS))
    p.add_argument("--model", default="125m")
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data-dir")
    p.add_argument("--device", default=measure.default_device())
    p.add_argument("--out", required=True, help="JSON file for every record (rewritten after each one)")


def save(records: list[dict], path) -> None:
    """Every record so far, rewritten after each one: a cut-off sweep keeps what it measured."""
    with open(path, "w") as f:
        json.dump(records, f, indent=1)


def plain_twin(technique: str) -> str:
    """The same technique without speculation: ss -> naive, ss+half+graphs -> half+graphs."""
    return "+".join(p for p in technique.split("+") if p != "ss") or "naive"


def naive_baseline(dataset: str, args, technique: str = "ss", model: str | None = None
                   ) -> tuple[measure.Workload, list[list[int]], dict]:
    """The SS checkpoint's workload (`model`, else --model), its plain greedy outputs and the
    plain twin of `technique` timed on it."""
    work = measure.build_workload(dataset, model or args.model, args.num_prompts, args.max_new_tokens,
                                  data_dir=args.data_dir, device=args.device, objective="ss")
    plain = get_strategy(plain_twin(technique))
    reference = measure.plain_outputs(work, plain.dtype, args.device)
    measure.prepare(plain, work, args.device)
    # warm up on every prompt: the first timed configuration must not pay for cache/allocator growth
    return work, reference, measure.measure(plain, work, args.rounds, len(work.prompts), reference=reference)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topk", nargs="+", default=DEFAULT_TREES,
                   help="trees to try, each as k per depth, optionally @ a tree-pruning threshold (2,2,1@0.05)")
    p.add_argument("--technique", default="ss", help="ss or a composition such as ss+half+graphs (default ss)")
    add_workload_arguments(p)
    args = p.parse_args(argv)
    get_strategy(args.technique)  # a bad name fails before any work

    records = []
    for dataset in args.datasets.split(","):
        work, reference, base = naive_baseline(dataset, args, args.technique)
        warm = len(work.prompts)
        records.append(base)
        print(f"{dataset:>10} {plain_twin(args.technique)}  {base['tokens_per_s']:8.1f} tok/s", flush=True)
        for choice in args.topk:
            topk, _, prune = choice.partition("@")
            ss = get_strategy(args.technique, topk=topk, prune=float(prune or 0))
            measure.prepare(ss, work, args.device)
            r = measure.measure(ss, work, args.rounds, warm, reference=reference)
            r["speedup_over_naive"] = r["tokens_per_s"] / base["tokens_per_s"]  # over the plain twin
            records.append(r)
            depth = " ".join(f"{a:.2f}" for a in r.get("acceptance_per_depth", []))
            print(f"{dataset:>10} {args.technique} k={choice:<14} {r['tokens_per_s']:8.1f} tok/s  "
                  f"x{r['speedup_over_naive']:.2f}  accepted/step {r['mean_accepted_tokens']:.2f}  "
                  f"per depth [{depth}]  match_naive {r['match_naive']:.2f}  quality {r['quality']:.1f}", flush=True)
            save(records, args.out)
            del ss
    return 0


if __name__ == "__main__":
    sys.exit(main())
