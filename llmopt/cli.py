"""Command line: `llmopt train`, `bench`, `compare` and `report` (run `llmopt COMMAND --help`).

Each command imports what it runs (torch, the model, the measurement) when it runs, so `--help`
and a bad argument answer at once; nothing here is lazy to dodge a circle (tests/test_architecture.py
counts function-level imports too)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import data, options
from .models.gpt_neo import SHAPES

EPILOG = f"""data: the hub by default; a local directory of the original files with --data-dir or
${data.DATA_DIR_ENV}. Checkpoints are cached under $LLMOPT_CACHE_DIR (default ~/.cache/llmopt)."""


class Parser(argparse.ArgumentParser):
    """Bad input is one line on stderr and exit 2; the usage is one --help away."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="llmopt", description=(
        "Measure what LLM inference optimisations buy (tokens/s, batch 1, greedy) and check that each "
        "keeps the model's output unchanged."), epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = sub.add_parser("train", help="train a GPT-Neo on a dataset (cached by dataset, shape and recipe)",
                           epilog=EPILOG)
    train.add_argument("--dataset", required=True, choices=data.DATASETS)
    train.add_argument("--shape", default="125m", choices=SHAPES, help="model shape (default 125m)")
    train.add_argument("--base", help="fine-tune this checkpoint (directory or hub id) instead of training from scratch")
    train.add_argument("--steps", type=options.positive_int, help="optimizer steps (default: the dataset's recipe)")
    train.add_argument("--batch-size", type=options.positive_int)
    train.add_argument("--micro-batch", type=options.non_negative_int,
                       help="rows per forward and backward, gradients summed over the batch (default: 16 for 1.3b "
                            "and 2.7b, else 0: the whole batch at once)")
    train.add_argument("--lr", type=options.positive_float,
                       help="peak learning rate (default 3e-4; 1e-4 for 1.3b and 8e-5 for 2.7b, as GPT-3 scaled its own; "
                            "1e-3 for medusa heads)")
    train.add_argument("--objective", default="lm", choices=("lm", "ss", "medusa"),
                       help="lm (next token), ss (Speculative Streaming: main + 0.1 x each stream's CE) or medusa "
                            "(Medusa-1 heads on the frozen --base checkpoint)")
    train.add_argument("--augment-copies", type=options.positive_int,
                       help="spider: add this many renamed copies of each training example (made-up table/column "
                            "names, consistent across schema, question and SQL) to teach copying from the schema")
    train.add_argument("--gamma", type=options.positive_int,
                       help="ss: number of speculative streams; medusa: number of heads (default 4)")
    train.add_argument("--stream-layers", type=options.positive_int,
                       help="ss: layers with multi-stream attention (default: 1/6 of the layers for spider, 1/2 otherwise)")
    train.add_argument("--stream-lr-scale", type=options.positive_float, metavar="X",
                       help="ss: the stream embeddings' learning rate as a multiple of --lr (default 1: the paper's); "
                            "larger lets a short run tell the streams apart sooner")
    train.add_argument("--share-head", action="store_true",
                       help="medusa: heads end in the base's LM head instead of a vocabulary head each (far fewer parameters)")
    train.add_argument("--output", type=Path, help="write the checkpoint here instead of the cache")
    train.add_argument("--save-every", type=options.non_negative_int, metavar="N",
                       help="save a resumable state every N steps, so that an interrupted run continues where it "
                            "stopped (default 250; 0: never, where an interruption would lose the machine anyway: "
                            "at 1.3b a save writes about 20 GB)")
    train.add_argument("--samples", type=options.non_negative_int, default=32, help="evaluation prompts to decode for the quality metric")
    _common(train)

    bench = sub.add_parser("bench", help="benchmark techniques on datasets and print the tokens/s table",
                           description="Benchmark every technique on every dataset (batch 1, greedy) and print "
                                       "tokens/s with the speed-up over naive. The same options and defaults as "
                                       "`pytest bench/`.", epilog=EPILOG)
    options.add_bench_options(bench.add_argument)
    bench.add_argument("--json", type=Path, metavar="FILE",
                       help="also write every record to this JSON file (rewritten after each dataset, so an "
                            "interrupted run keeps what it measured)")
    bench.add_argument("--progress", action="store_true",
                       help="print a cell counter (cell 3/12: e2e_nlg ss) and per-prompt progress bars on stderr")

    compare = sub.add_parser("compare", help="gate a saved run against a baseline run of the same GPU model "
                                             "(exit 1 on a slower cell, a changed output or a missing cell)",
                             description="Gate CURRENT against BASELINE: a cell fails when its tokens/s (and its "
                                         "speed-up over naive) fell by more than --tolerance and a one-sided "
                                         "Mann-Whitney U test on the rounds finds the drop significant at --alpha, "
                                         "when its output changed on the same checkpoint, or when a baseline cell "
                                         "is missing (unless --datasets/--techniques leave it out).", epilog=EPILOG)
    compare.add_argument("baseline", type=Path, help="pytest-benchmark JSON of the reference run")
    compare.add_argument("current", type=Path, help="pytest-benchmark JSON of the run to check")
    compare.add_argument("--tolerance", type=options.fraction, default=0.05,
                         help="allowed tokens/s drop per cell, as a fraction (default 0.05)")
    compare.add_argument("--alpha", type=options.fraction, default=0.05,
                         help="significance level of the test on the rounds (default 0.05)")
    compare.add_argument("--datasets", type=options.dataset_list, help="the current run measured only these")
    compare.add_argument("--techniques", type=options.technique_list, help="the current run measured only these")

    merge = sub.add_parser("merge", help="join runs of one GPU model that split the matrix (e.g. one dataset "
                                         "per GPU of a host) into one saved run")
    merge.add_argument("runs", type=Path, nargs="+", metavar="RUN.json", help="pytest-benchmark JSON files")
    merge.add_argument("--out", type=Path, required=True, help="the merged JSON file to write")

    report = sub.add_parser("report", help="write the Markdown results (and PNG plots) of saved runs")
    report.add_argument("runs", type=Path, nargs="+", metavar="RUN.json", help="pytest-benchmark JSON files")
    report.add_argument("--out", type=Path, default=Path("docs/results"), help="output directory (default docs/results)")
    report.add_argument("--simulated", type=Path, metavar="SWEEP.json", action="append", default=[],
                        help="simulated-draft sweep (scripts/ss_simulate.py, same GPU) to add to the acceptance plot of "
                             "the run that measured its checkpoint; --random-weights sweeps get their own section "
                             "and figure (speed-up against accepted tokens per step, a line per size); repeat it "
                             "for several sweeps")
    report.add_argument("--readme", type=Path, metavar="README.md",
                        help="also fill this README's results block (between its llmopt report markers)")

    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code
    try:
        return {"train": cmd_train, "bench": cmd_bench, "compare": cmd_compare, "merge": cmd_merge,
                "report": cmd_report}[args.command](args)
    except (data.DataError, ValueError, FileNotFoundError) as exc:
        print(f"llmopt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmopt: interrupted", file=sys.stderr)
        return 130


def _common(p):
    p.add_argument("--data-dir", type=options.data_directory, metavar="DIR",
                   help=f"local directory of the original dataset files (else ${data.DATA_DIR_ENV}, else the hub)")
    p.add_argument("--device", type=options.device_name, help="cpu, cuda or cuda:N (default: cuda when available)")


def cmd_train(args) -> int:
    from . import measure, quality
    from .strategies.naive import Naive
    from .train import default_recipe, ensure_trained, medusa_recipe, train

    overrides = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, base=args.base,
                                       augment_copies=args.augment_copies, micro_batch=args.micro_batch,
                                       stream_lr_scale=args.stream_lr_scale).items()
                 if v is not None}
    if args.objective == "medusa":
        if not args.base:
            raise ValueError("--objective medusa trains heads on a frozen checkpoint: name it with --base DIR")
        recipe = medusa_recipe(args.dataset, overrides.pop("base"), args.shape, **overrides)
    else:
        recipe = default_recipe(args.dataset, args.shape, objective=args.objective, **overrides)
    if (args.stream_layers or args.stream_lr_scale is not None) and args.objective != "ss":
        raise ValueError(f"{'--stream-layers' if args.stream_layers else '--stream-lr-scale'} needs --objective ss")
    if args.gamma and args.objective not in ("ss", "medusa"):
        raise ValueError("--gamma needs --objective ss or medusa")
    if args.share_head and args.objective != "medusa":
        raise ValueError("--share-head needs --objective medusa")
    recipe.objective_options.update({k: v for k, v in dict(
        gamma=args.gamma, num_stream_layers=args.stream_layers, share_head=args.share_head).items() if v})
    device = args.device or measure.default_device()
    saves = {} if args.save_every is None else {"save_every": args.save_every}  # else train's default
    if args.output:
        path = train(args.dataset, recipe, args.output, data_dir=args.data_dir, device=device, **saves)
    else:
        path = ensure_trained(args.dataset, recipe, data_dir=args.data_dir, device=device, **saves)
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

    settings = options.settings(args)  # bad names, options or combinations fail here, before any work
    bench = measure.Bench(settings, progress=args.progress)
    failed = []
    try:
        for dataset in settings.datasets:
            for technique, result in bench.measure_dataset(dataset, settings.techniques).items():
                if isinstance(result, Exception):
                    failed.append(f"{dataset} {technique}: {type(result).__name__}: {result}")
                    print(f"{dataset:>10} {technique:>8}: FAILED: {result}", file=sys.stderr)
                else:
                    print(f"{dataset:>10} {technique:>8}: {result['tokens_per_s']:8.1f} tokens/s  "
                          f"match_naive={result['match_naive']:.2f}", file=sys.stderr)
            if args.json:
                _write_json(args.json, bench.records)
    except KeyboardInterrupt:
        if bench.records:
            print(measure.table(bench.records))
        saved = f", {len(bench.records)} cells kept in {args.json}" if args.json and bench.records else ""
        print(f"llmopt: interrupted after {len(bench.records)} cells{saved}", file=sys.stderr)
        return 130
    if bench.records:
        print(measure.table(bench.records))
    for line in failed:
        print(f"llmopt: failed: {line}", file=sys.stderr)
    return 1 if failed else 0


def _write_json(path: Path, records: list[dict]) -> None:
    """Through a temporary file and a rename: an interrupted write leaves the last complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(records, indent=2))
    tmp.replace(path)


def cmd_compare(args) -> int:
    from . import compare

    baseline, current = compare.load_run(args.baseline), compare.load_run(args.current)
    selected = None
    if args.datasets or args.techniques:
        cells = baseline.cells
        selected = compare.selected_by(args.datasets or {d for d, _ in cells}, args.techniques or {t for _, t in cells})
    failures = compare.gate(current, baseline, args.tolerance, args.alpha, selected)  # refuses other GPU models
    print(compare.render(current, baseline, failures, args.tolerance, args.alpha, selected))
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


if __name__ == "__main__":
    raise SystemExit(main())
