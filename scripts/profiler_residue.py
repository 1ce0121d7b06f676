"""Does a finished profiler session slow what its process runs next? (pytorch/pytorch#144455)

    python3 scripts/profiler_residue.py --out residue.json [--arm profiled|control]
        [--techniques naive,graphs] [--shape 125m] [--rounds 10] [--new-tokens 128] [--prompt-len 64]

One process, one random-weight checkpoint of --shape: every technique is prepared and warmed up,
then timed --rounds generate calls each (round by round, A B A B ...), then, in the `profiled` arm,
each is profiled once with hardware.device_profile (as measure.py did until session 8), or, in the
`control` arm, run once unprofiled; then timed again the same way. The JSON has each technique's
tokens/s per call before and after, and hardware.host_op_s before and after. Run the arms in
alternating new processes (the GPU runner's validation_job.sh `residue` phase): only the profiled
arm moving between before and after says the profiler is the cause.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmopt import hardware  # noqa: E402
from llmopt.generation import Clock  # noqa: E402
from llmopt.models.gpt_neo import GPTNeo, make_config  # noqa: E402
from llmopt.strategies import get_strategy  # noqa: E402


def timed(strategies: dict, prompt: list[int], new_tokens: int, rounds: int, clock: Clock) -> dict[str, list[float]]:
    """tokens/s of `rounds` generate calls per technique, interleaved call by call."""
    rates = {name: [] for name in strategies}
    for _ in range(rounds):
        for name, strategy in strategies.items():
            start = clock()
            tokens = len(strategy.generate(prompt, new_tokens, None).tokens)
            rates[name].append(tokens / (clock() - start))
    return rates


def summary(rates: list[float]) -> str:
    return f"{statistics.median(rates):8.1f} [{min(rates):.1f}-{max(rates):.1f}]"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    parser.add_argument("--arm", choices=("profiled", "control"), default="profiled")
    parser.add_argument("--techniques", default="naive,graphs")
    parser.add_argument("--shape", default="125m")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    clock = Clock(device)
    config = make_config(args.shape)
    prompt = torch.randint(0, config.vocab_size, (args.prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()
    with tempfile.TemporaryDirectory(prefix="residue_") as tmp:
        GPTNeo.random(config, seed=0).save_pretrained(tmp)
        strategies = {}
        for name in args.techniques.split(","):
            options = {"runtime": "static"} if "graphs" in name and device.type != "cuda" else {}
            strategies[name] = get_strategy(name, **options)
            strategies[name].prepare(Path(tmp), device)
            for _ in range(2):
                strategies[name].generate(prompt, args.new_tokens, None)
        host_before = hardware.host_op_s(device)
        before = timed(strategies, prompt, args.new_tokens, args.rounds, clock)
        for name, strategy in strategies.items():
            call = lambda: strategy.generate(prompt, args.new_tokens, None)  # noqa: E731
            if args.arm == "profiled":
                hardware.device_profile(call, args.new_tokens)
            else:
                call()
        host_after = hardware.host_op_s(device)
        after = timed(strategies, prompt, args.new_tokens, args.rounds, clock)
    result = {"arm": args.arm, "device": str(device), "shape": args.shape, "rounds": args.rounds,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "host_op_s_before": host_before, "host_op_s_after": host_after,
              "tokens_per_s_before": before, "tokens_per_s_after": after}
    print(f"{args.arm}: host op {host_before * 1e6:.2f} -> {host_after * 1e6:.2f} us")
    for name in strategies:
        change = statistics.median(after[name]) / statistics.median(before[name]) - 1
        print(f"{args.arm}: {name:>14} before {summary(before[name])}  after {summary(after[name])}  {change:+.1%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
