"""Command line: `llmopt train`, `bench`, `compare` and `report` (run `llmopt COMMAND --help`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import data

EPILOG = f"""data: the hub by default; a local directory of the original files with --data-dir or
${data.DATA_DIR_ENV}. Checkpoints are cached under $LLMOPT_CACHE_DIR (default ~/.cache/llmopt)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmopt", description=(
        "Measure what LLM inference optimisations buy (tokens/s, batch 1, greedy) and check that each "
        "keeps the model's output unchanged."), epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a GPT-Neo on a dataset (cached by dataset, shape and recipe)",
                           epilog=EPILOG)
    train.add_argument("--dataset", required=True, choices=data.DATASETS)
    train.add_argument("--shape", default="125m", help="model shape: tiny, 125m, 1.3b, 2.7b (default 125m)")
    train.add_argument("--base", help="fine-tune this checkpoint (directory or hub id) instead of training from scratch")
    train.add_argument("--steps", type=int, help="optimizer steps (default: the dataset's recipe)")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--objective", default="lm", choices=("lm", "ss"),
                       help="lm (next token) or ss (Speculative Streaming: main + 0.1 x each stream's CE)")
    train.add_argument("--augment-copies", type=int,
                       help="spider: add this many renamed copies of each training example (made-up table/column "
                            "names, consistent across schema, question and SQL) to teach copying from the schema")
    train.add_argument("--gamma", type=int, help="ss: number of speculative streams (default 4)")
    train.add_argument("--stream-layers", type=int,
                       help="ss: layers with multi-stream attention (default: 1/6 of the layers for spider, 1/3 otherwise)")
    train.add_argument("--output", type=Path, help="write the checkpoint here instead of the cache")
    train.add_argument("--samples", type=int, default=32, help="evaluation prompts to decode for the quality metric")
    _common(train)

    bench = sub.add_parser("bench", help="benchmark techniques on datasets and print the tokens/s table",
                           epilog=EPILOG)
    bench.add_argument("--dataset", action="append", choices=data.DATASETS,
                       help="repeat for several (default: all three)")
    bench.add_argument("--technique", action="append", help="repeat for several (default: hf, naive, half, ss)")
    bench.add_argument("--model", default=None,
                       help="a shape trained per dataset (default 125m on GPU, tiny on CPU), a checkpoint directory or a hub id")
    bench.add_argument("--num-prompts", type=int, default=32)
    bench.add_argument("--max-new-tokens", type=int, default=128)
    bench.add_argument("--rounds", type=int, default=3)
    bench.add_argument("--json", type=Path, help="also write every record to this JSON file")
    bench.add_argument("--strategy-options", metavar="JSON",
                       help='options per technique part, e.g. \'{"ss": {"topk": "2,1,1,1"}}\'')
    bench.add_argument("--objective", help="training objective of shape checkpoints: lm or ss "
                       "(default: ss when a technique needs speculative streams, else lm)")
    _common(bench)

    compare = sub.add_parser("compare", help="gate a saved run against a baseline run of the same GPU model "
                                             "(exit 1 on a slower cell or a changed output)")
    compare.add_argument("baseline", type=Path, help="pytest-benchmark JSON of the reference run")
    compare.add_argument("current", type=Path, help="pytest-benchmark JSON of the run to check")
    compare.add_argument("--tolerance", type=float, default=0.05,
                         help="allowed tokens/s drop per cell, as a fraction (default 0.05)")

    merge = sub.add_parser("merge", help="join runs of one GPU model that split the matrix (e.g. one dataset "
                                         "per GPU of a host) into one saved run")
    merge.add_argument("runs", type=Path, nargs="+", metavar="RUN.json", help="pytest-benchmark JSON files")
    merge.add_argument("--out", type=Path, required=True, help="the merged JSON file to write")

    report = sub.add_parser("report", help="write the Markdown results (and PNG plots) of saved runs")
    report.add_argument("runs", type=Path, nargs="+", metavar="RUN.json", help="pytest-benchmark JSON files")
    report.add_argument("--out", type=Path, default=Path("docs/results"), help="output directory (default docs/results)")
    report.add_argument("--simulated", type=Path, metavar="SWEEP.json",
                        help="simulated-draft sweep (scripts/ss_simulate.py, same GPU) to add to the acceptance plot")
    report.add_argument("--readme", type=Path, metavar="README.md",
                        help="also fill this README's results block (between its llmopt report markers)")

    args = parser.parse_args(argv)
    try:
        return {"train": cmd_train, "bench": cmd_bench, "compare": cmd_compare, "merge": cmd_merge,
                "report": cmd_report}[args.command](args)
    except (data.DataError, ValueError, FileNotFoundError) as exc:
        print(f"llmopt: error: {exc}", file=sys.stderr)
        return 2


def _common(p):
    p.add_argument("--data-dir", help=f"local directory of the original dataset files (else ${data.DATA_DIR_ENV}, else the hub)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")


def cmd_train(args) -> int:
    from . import measure, quality
    from .strategies.naive import Naive
    from .train import default_recipe, ensure_trained, train

    overrides = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, base=args.base,
                                       augment_copies=args.augment_copies).items()
                 if v is not None}
    recipe = default_recipe(args.dataset, args.shape, objective=args.objective, **overrides)
    if args.gamma or args.stream_layers:
        if args.objective != "ss":
            raise ValueError("--gamma and --stream-layers need --objective ss")
        recipe.objective_options.update({k: v for k, v in dict(
            gamma=args.gamma, num_stream_layers=args.stream_layers).items() if v})
    device = args.device or measure.default_device()
    if args.output:
        path = train(args.dataset, recipe, args.output, data_dir=args.data_dir, device=device)
    else:
        path = ensure_trained(args.dataset, recipe, data_dir=args.data_dir, device=device)
    info = json.loads((path / "llmopt.json").read_text())
    print(f"checkpoint: {path}")
    print(f"train time: {info['train_time_s']:.0f} s on {info['device']}; "
          f"eval loss {info['history'][-1]['eval_loss']:.3f} nats/token")
    if args.samples:
        workload = measure.build_workload(args.dataset, str(path), args.samples, 128, data_dir=args.data_dir)
        naive = Naive()
        naive.prepare(path, device)
        outputs = [g.tokens for g, _ in measure.run_pass(naive, workload, progress=True)]
        texts = [workload.tokenizer.decode([t for t in o if t != workload.eos_id]) for o in outputs]
        metric, score = quality.score(args.dataset, texts, workload.examples)
        print(f"{metric} on {len(texts)} evaluation prompts: {score:.1f}")
        for ex, text in list(zip(workload.examples, texts))[:3]:
            print(f"--- prompt ...{ex.prompt[-120:]!r}\n    output {text!r}\n    reference {ex.references[0]!r}")
    return 0


def cmd_bench(args) -> int:
    from . import measure
    from .strategies import get_strategy

    device = args.device or measure.default_device()
    model = args.model or ("125m" if device.startswith("cuda") else "tiny")
    datasets = args.dataset or list(data.DATASETS)
    techniques = args.technique or ["hf", "naive", "half", "ss"]
    table = measure.parse_strategy_options(args.strategy_options)
    # unknown names or options fail before any work
    strategies = {t: get_strategy(t, **measure.strategy_options(t, table)) for t in techniques}
    records = []
    for dataset in datasets:
        workload = measure.build_workload(dataset, model, args.num_prompts, args.max_new_tokens,
                                          data_dir=args.data_dir, device=device,
                                          objective=args.objective or measure.objective_for(techniques))
        references = {}
        for name, strategy in strategies.items():
            if strategy.dtype not in references:
                references[strategy.dtype] = measure.plain_outputs(workload, strategy.dtype, device)
            prepare_s = measure.prepare(strategy, workload, device)
            record = measure.measure(strategy, workload, args.rounds, reference=references[strategy.dtype], progress=True)
            record["prepare_s"] = prepare_s
            records.append(record)
            print(f"{dataset:>10} {name:>8}: {record['tokens_per_s']:8.1f} tokens/s  "
                  f"match_naive={record['match_naive']:.2f}", file=sys.stderr)
    print(table(records))
    if args.json:
        args.json.write_text(json.dumps(records, indent=2))
    return 0


def cmd_compare(args) -> int:
    from . import compare

    baseline, current = compare.load_run(args.baseline), compare.load_run(args.current)
    failures = compare.gate(current, baseline, args.tolerance)  # refuses runs of different GPU models
    print(compare.render(current, baseline, failures, args.tolerance))
    return 1 if failures else 0


def cmd_merge(args) -> int:
    from . import compare

    merged = compare.merge(args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(merged, indent=4))
    print(f"wrote {args.out}: {len(merged['benchmarks'])} benchmarks from {len(args.runs)} runs")
    return 0


def cmd_report(args) -> int:
    from . import report

    for path in report.write(args.runs, args.out, args.simulated, args.readme):
        print(f"wrote {path}")
    return 0


def table(records: list[dict]) -> str:
    """Markdown table: techniques x datasets, tokens/s."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    techniques = list(dict.fromkeys(r["technique"] for r in records))
    cell = {(r["technique"], r["dataset"]): r["tokens_per_s"] for r in records}
    lines = ["| technique | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
    for t in techniques:
        lines.append(f"| {t} | " + " | ".join(f"{cell[t, d]:.1f}" if (t, d) in cell else "–" for d in datasets) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
