"""Sweep Speculative Streaming's inference knobs (tree shape: k per depth) against plain decoding,
on the SS-trained checkpoint of each dataset, in one process per GPU.

    python scripts/ss_sweep.py --out results.json [--datasets spider,e2e_nlg] [--topk 1,1,1,1 2,1,1,1 ...]

Prints one line per (dataset, tree): tokens/s, speed-up over `naive` measured in the same run,
mean accepted tokens per step, acceptance per depth and match_naive."""

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


def naive_baseline(dataset: str, args) -> tuple[measure.Workload, list[list[int]], dict]:
    """The SS checkpoint's workload, its plain greedy outputs and `naive` timed on it."""
    work = measure.build_workload(dataset, args.model, args.num_prompts, args.max_new_tokens,
                                  data_dir=args.data_dir, device=args.device, objective="ss")
    reference = measure.plain_outputs(work, "float32", args.device)
    naive = get_strategy("naive")
    measure.prepare(naive, work, args.device)
    # warm up on every prompt: the first timed configuration must not pay for cache/allocator growth
    return work, reference, measure.measure(naive, work, args.rounds, len(work.prompts), reference=reference)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topk", nargs="+", default=DEFAULT_TREES, help="trees to try, each as k per depth")
    add_workload_arguments(p)
    args = p.parse_args(argv)

    records = []
    for dataset in args.datasets.split(","):
        work, reference, base = naive_baseline(dataset, args)
        warm = len(work.prompts)
        records.append(base)
        print(f"{dataset:>10} naive        {base['tokens_per_s']:8.1f} tok/s", flush=True)
        for topk in args.topk:
            ss = get_strategy("ss", topk=topk)
            measure.prepare(ss, work, args.device)
            r = measure.measure(ss, work, args.rounds, warm, reference=reference)
            r["speedup_over_naive"] = r["tokens_per_s"] / base["tokens_per_s"]
            records.append(r)
            depth = " ".join(f"{a:.2f}" for a in r.get("acceptance_per_depth", []))
            print(f"{dataset:>10} ss k={topk:<9} {r['tokens_per_s']:8.1f} tok/s  x{r['speedup_over_naive']:.2f}  "
                  f"accepted/step {r['mean_accepted_tokens']:.2f}  per depth [{depth}]  "
                  f"match_naive {r['match_naive']:.2f}  quality {r['quality']:.1f}", flush=True)
            with open(args.out, "w") as f:
                json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
