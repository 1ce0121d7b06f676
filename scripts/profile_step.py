"""Where a technique's decode step spends its time: host (Python + kernel launches) against device
(kernels), and the kernels that cost most, from torch.profiler over whole generate calls.

    python3 scripts/profile_step.py [--techniques naive,ss] [--shape 125m] [--vocab 8192]
        [--prompt-len 600] [--new-tokens 64] [--gamma 4] [--stream-layers N] [--topk 2,2,1,1]
        [--device cuda] [--shapes] [--json out.json] [--runtime cuda_graph] [--pad-rows 16]
        [--decode-kernel sdpa_cudnn] [--queue-ahead]

The model is a random GPT-Neo of --shape with random stream embeddings and Medusa heads (speed per step does not
depend on what the weights say; acceptance does, so steps, not tokens, are the unit here). Per
technique: one warm-up generate, then one timed generate (wall per forward call) and one profiled
generate: total host time of the ops, total device time of the kernels, host launches per step
(a CUDA graph is one), device kernels per step (llmopt.hardware.device_kernels: a graph's kernels
each) and the top kernels by device time. --runtime / --pad-rows / --decode-kernel: options of the graphs
techniques (pad-rows: ss+graphs only; decode-kernel: the flash2 ones, flash2+graphs and best), e.g.
`--techniques ss+graphs --pad-rows 16` or `--techniques best --decode-kernel eager` against the default.
--queue-ahead: the graphs techniques (plain, ss, medusa) queue each step before the previous token or
verdict is read (generation.decode_ahead, DraftLoop.generate_ahead), so the host's turn between
replays can hide behind the device's step.
The device's idle time per step (llmopt.hardware.device_idle) is given by the kernel that waited:
inside a CUDA graph that is the graph's own latency between nodes, between replays the host's
turn. --trace DIR writes each technique's profiled generate as a Chrome trace (chrome://tracing,
Perfetto) to look at the timeline itself.
The wall times of every technique after the first are taken after a profiler session in this
process, which can slow them (llmopt/kernel_count.py): for walls to compare, run one technique per
invocation.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmopt.hardware import device_idle, device_kernels  # noqa: E402
from llmopt.models.gpt_neo import make_config  # noqa: E402
from llmopt.names import slug  # noqa: E402
from llmopt.spec_stream.medusa import MedusaModel  # noqa: E402
from llmopt.spec_stream.model import SpecStreamModel  # noqa: E402
from llmopt.strategies import get_strategy  # noqa: E402
from llmopt.strategies import parse_technique, technique_objective, technique_parts  # noqa: E402


def profile_technique(technique: str, checkpoint: Path, device: str, prompt: list[int], new_tokens: int,
                      topk: str, top: int = 12, shapes: bool = False, runtime: str | None = None,
                      pad_rows: int | None = None, trace: Path | None = None, decode_kernel: str | None = None,
                      queue_ahead: bool = False) -> dict:
    ss = technique_objective(technique) == "ss"
    options = {"topk": topk} if ss else {}
    parsed = parse_technique(technique)
    if parsed.graphs:
        options.update(runtime=runtime, **({"pad_rows": pad_rows} if ss else {}))
        if parsed.flash and decode_kernel and parsed.drafting in (None, "ss"):
            options["decode_kernel"] = decode_kernel
        if queue_ahead and parsed.drafting in (None, "ss", "medusa"):  # pld and sps have no such option
            options["queue_ahead"] = True
    strategy = get_strategy(technique, **options)
    strategy.prepare(checkpoint, device)
    strategy.generate(prompt, new_tokens, None)  # warm-up (and capture, for graphs)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    gen = strategy.generate(prompt, new_tokens, None)
    sync()
    wall = time.perf_counter() - start
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities, record_shapes=shapes) as prof:
        strategy.generate(prompt, new_tokens, None)
        sync()
    steps = gen.forward_calls
    if trace is not None:
        trace.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace / f"{slug(technique)}.json.gz"))  # Perfetto reads it gzipped
    idle_us, waits = device_idle(prof.events())
    kernels = collections.Counter()
    launches = 0
    device_us = 0.0
    for event in prof.events():
        if event.device_type.name == "CUDA":
            kernels[event.name] += event.device_time
            device_us += event.device_time
        elif event.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaGraphLaunch"):
            launches += 1
    if shapes:  # which op (and operand shapes) launched the costly kernels
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total", row_limit=top))
    return {
        "technique": technique, "forward_calls": steps, "wall_ms_per_step": 1e3 * wall / steps,
        "device_ms_per_step": device_us / 1e3 / steps, "launches_per_step": launches / steps,
        "device_kernels_per_step": device_kernels(prof.events()) / steps, "config": strategy.config(),
        "top_kernels_ms_per_step": per_step(kernels, steps, top),
        "device_idle_ms_per_step": idle_us / 1e3 / steps,
        "top_waits_ms_per_step": per_step(waits, steps, top),
    }


def per_step(us_by_name: collections.Counter, steps: int, top: int) -> dict[str, float]:
    """The `top` names by time, in ms per step; names cut to 90 characters, summed where they then
    coincide (many kernels share a long template prefix)."""
    cut = collections.Counter()
    for name, us in us_by_name.items():
        cut[name[:90]] += us
    return {name: round(us / 1e3 / steps, 4) for name, us in cut.most_common(top)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--techniques", default="naive,ss", help="comma-separated techniques (default naive,ss)")
    parser.add_argument("--shape", default="125m")
    parser.add_argument("--vocab", type=int, default=8192, help="vocabulary size (our trained tokenizers: 8192)")
    parser.add_argument("--prompt-len", type=int, default=600)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--stream-layers", type=int, help="default: half the layers (the E2E and DialogSum recipe's)")
    parser.add_argument("--topk", default="2,2,1,1")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", action="store_true", help="also print the costliest ops with their operand shapes")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--runtime", help="graphs runtime (cuda_graph, torch.compile, torch.compile:max-autotune; default cuda_graph)")
    parser.add_argument("--pad-rows", type=int, help="ss+graphs: pad the tree step's rows to a multiple of this")
    parser.add_argument("--decode-kernel", help="flash2+graphs and best (ss+flash2+graphs): the captured step's attention kernel "
                                              "(sdpa_cudnn, the default, sdpa_efficient, eager or flex)")
    parser.add_argument("--queue-ahead", action="store_true",
                        help="graphs techniques (plain, ss, medusa): queue each step before the previous one is read")
    parser.add_argument("--trace", type=Path, metavar="DIR", help="write each technique's profiled generate here "
                                                                  "as a gzipped Chrome trace (TECHNIQUE.json.gz, '+' as '-')")
    args = parser.parse_args()

    config = make_config(args.shape, vocab_size=args.vocab)
    model = SpecStreamModel.random(config, gamma=args.gamma, num_stream_layers=args.stream_layers or config.num_layers // 2)
    prompt = torch.randint(0, args.vocab - 1, (args.prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        techniques = args.techniques.split(",")
        if any("medusa" in technique_parts(t) for t in techniques):  # random heads beside it
            MedusaModel.random(model.base, args.gamma).save_pretrained(tmp)
        del model
        for technique in techniques:
            row = profile_technique(technique, Path(tmp), args.device, prompt, args.new_tokens, args.topk,
                                    shapes=args.shapes, runtime=args.runtime, pad_rows=args.pad_rows, trace=args.trace,
                                    decode_kernel=args.decode_kernel, queue_ahead=args.queue_ahead)
            rows.append(row)
            print(f"{technique:>20}: {row['wall_ms_per_step']:.3f} ms/step wall, {row['device_ms_per_step']:.3f} ms "
                  f"kernels, {row['launches_per_step']:.0f} launches/step, {row['device_kernels_per_step']:.0f} device "
                  f"kernels/step, {row['forward_calls']} steps; the device idle {row['device_idle_ms_per_step']:.3f} "
                  f"ms/step", flush=True)
            for name, ms in row["top_kernels_ms_per_step"].items():
                print(f"{'':>24}{ms:8.4f}  {name}")
            print(f"{'':>24}idle before (ms/step):")
            for name, ms in row["top_waits_ms_per_step"].items():
                print(f"{'':>24}{ms:8.4f}  {name}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
