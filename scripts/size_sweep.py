"""Size sweep: plain greedy decode of random-weight GPT-Neo shapes with each technique, against the
memory-bandwidth floor measured in the same run (where half precision and graphs start to pay).

    python3 scripts/size_sweep.py --out results.json [--shapes 125m,1.3b,2.7b]
        [--techniques naive,half,flash2,half+graphs,flash2+graphs] [--new-tokens 128] [--prompt-len 64]
        [--runs 3] [--device cuda] [--copy-mib 1024] [--runtime cuda_graph,torch.compile]
        [--queue-ahead off|on|both] [--decode-kernel sdpa_efficient]

Bandwidth: llmopt.hardware.copy_bandwidth, a --copy-mib buffer copied device-to-device (warm-up
first, median of timed copies with CUDA events); bandwidth = (bytes read + bytes written) / time =
2 * bytes / t. None on CPU, and with it the floor columns.
--runtime: the graphs runtime(s); with several, every graphs technique runs once per runtime (its
rows say which), so `--techniques half+graphs --runtime cuda_graph,torch.compile` compares them.
--queue-ahead: the graphs techniques' queue_ahead option (each step queued before the previous token
is read back: llmopt.generation.decode_ahead); "both" runs each graphs row without it, then with it.
--decode-kernel: the captured flash2 steps' attention kernel (option decode_kernel; its rows' config
says which ran: decode_attention); run the sweep with and without it to compare.
Per shape: GPTNeo.random(make_config(shape), seed=0) is built on the device in fp16 (GPT-2 vocab) and
saved to a temporary checkpoint (deleted after the shape); each technique's prepare() casts it to its
own dtype. Per technique: one warm-up generate, then --runs timed generates of --new-tokens from a
fixed seeded prompt of --prompt-len random ids, EOS ignored (eos_id=None), each call timed whole
(device synchronised + perf_counter). Recorded per row:
  tokens_per_s (median, min, max over runs; new tokens / wall time of the whole call),
  decode_ms_per_token = (wall - ttft) / (tokens - 1): decode steps only, prefill excluded,
  peak_memory_bytes (torch.cuda.max_memory_allocated, reset before prepare),
  weight_bytes = hardware.weight_bytes(model) at the technique's dtype (what each decode step must read),
  floor_ms = weight_bytes / bandwidth and floor_fraction = floor_ms / decode_ms_per_token
  (1.0 = at the bandwidth floor; the target for half+graphs / flash2+graphs on 1.3b and 2.7b is >= 0.5),
  kernels_per_token: device kernels per token over one profiled generate (prefill included; plain
  greedy makes one token per step, so it is also kernels per step; None on CPU), counted per shape
  after every technique is timed, in a child process (llmopt.kernel_count: a profiler session slows
  what its process times after it),
  runtime: the graphs runtime (None without graphs),
  match / first_mismatch: tokens equal to the plain decode at the same precision (naive for fp32,
  half for fp16), the tokens, setup_s and strategy.config(). A failing technique (OOM, no flash on CPU) is
  recorded with its error and the sweep goes on. The JSON (header: gpu, driver, versions, bandwidth,
  date) and a Markdown table next to it (same stem, .md) are rewritten after every technique.
On --device cpu (smoke tests, e.g. --shapes tiny) graphs techniques run the uncaptured "static" runtime.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmopt import kernel_count  # noqa: E402
from llmopt.hardware import bandwidth_floor_fraction, copy_bandwidth, weight_bytes  # noqa: E402
from llmopt.measure import driver_version, peak_memory, reset_peak_memory  # noqa: E402
from llmopt.models.gpt_neo import GPTNeo, make_config  # noqa: E402
from llmopt.near_ties import first_divergence  # noqa: E402
from llmopt.strategies import get_strategy  # noqa: E402
from llmopt.generation import Clock  # noqa: E402
from llmopt.strategies.techniques import DECODE_KERNELS, parse_technique  # noqa: E402
from llmopt.strategies.naive import Naive  # noqa: E402
from llmopt.capture import capture_options  # noqa: E402

GIB = 2 ** 30


def line(*parts):
    print(*parts, flush=True)


def header(device: torch.device, bandwidth: float | None, args) -> dict:
    import transformers

    cuda = device.type == "cuda"
    return {"gpu": torch.cuda.get_device_name(device) if cuda else None, "driver": driver_version() if cuda else None,
            "cuda": torch.version.cuda, "torch": torch.__version__, "transformers": transformers.__version__,
            "device": str(device), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "bandwidth_bytes_per_s": bandwidth, "bandwidth_gb_per_s": None if bandwidth is None else bandwidth / 1e9,
            "bandwidth_definition": f"device-to-device copy of {args.copy_mib} MiB: (bytes read + bytes written) / time",
            "floor_definition": "floor_ms = weight_bytes / bandwidth; floor_fraction = floor_ms / decode_ms_per_token, "
                                "decode_ms_per_token = (wall - ttft) / (new tokens - 1)",
            "kernels_definition": "device kernels (memcpy and memset included; a CUDA graph's kernels each) per "
                                  "new token over one profiled generate, prefill included",
            "new_tokens": args.new_tokens, "prompt_len": args.prompt_len, "runs": args.runs, "eos": None}


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


AHEAD = {"off": [False], "on": [True], "both": [False, True]}  # --queue-ahead's settings


def runs_of(name: str, device: torch.device, runtimes: list[str], ahead: list[bool]) -> list[tuple[str | None, bool | None]]:
    """The (graphs runtime, queue_ahead) pairs a technique runs with ((None, None): it has no graphs);
    on CPU the uncaptured runtime."""
    if "graphs" not in parse_technique(name):
        return [(None, None)]
    return [(r, a) for r in (["static"] if device.type != "cuda" else runtimes) for a in ahead]


def options_of(name: str, runtime: str | None, args, ahead: bool | None = None) -> dict:
    """A technique's options: with graphs, its runtime, queue_ahead and static cache slots (the
    prompt and new tokens rounded up to a bucket: one graph to capture), and with flash2 too the
    decode kernel asked for."""
    if runtime is None:
        return {}
    kernel = {"decode_kernel": args.decode_kernel} if args.decode_kernel and "flash2" in parse_technique(name) else {}
    return {"runtime": runtime, "queue_ahead": bool(ahead),
            "max_len": -(-(args.prompt_len + args.new_tokens) // 256) * 256, **kernel}


def measure(name: str, ckpt: Path, prompt: list[int], args, device, bandwidth: float | None,
            runtime: str | None = None, ahead: bool | None = None) -> tuple[dict, list[int]]:
    """One technique (with graphs: on `runtime`, queue_ahead or not) on one checkpoint: its row and its tokens."""
    strategy = get_strategy(name, **options_of(name, runtime, args, ahead))
    reset_peak_memory(device)
    strategy.prepare(ckpt, device)
    clock = Clock(device)
    strategy.generate(prompt, args.new_tokens, None)  # warm-up (allocator, kernels)
    walls, gens = [], []
    for _ in range(args.runs):
        start = clock()
        gens.append(strategy.generate(prompt, args.new_tokens, None))
        walls.append(clock() - start)
    tokens = gens[0].tokens
    rates = sorted(len(g.tokens) / w for g, w in zip(gens, walls))
    decode_ms = statistics.median((w - g.ttft_s) / max(len(g.tokens) - 1, 1) * 1e3 for g, w in zip(gens, walls))
    weights = weight_bytes(strategy.model)
    row = {"runtime": runtime, "queue_ahead": ahead, "tokens_per_s": statistics.median(rates), "tokens_per_s_min": rates[0],
           "tokens_per_s_max": rates[-1], "decode_ms_per_token": decode_ms,
           "ttft_ms": statistics.median(g.ttft_s for g in gens) * 1e3,
           "new_tokens": len(tokens), "peak_memory_bytes": peak_memory(device), "weight_bytes": weights,
           "floor_ms": None if bandwidth is None else weights / bandwidth * 1e3,
           "floor_fraction": bandwidth_floor_fraction(weights, bandwidth, decode_ms / 1e3),
           "kernels_per_token": None,  # counted per shape, after every timing (count_kernels)
           "stable_across_runs": all(g.tokens == tokens for g in gens),
           "setup_s": strategy.setup_s, "dtype": str(strategy.dtype).removeprefix("torch."), "config": strategy.config(),
           "tokens": tokens}
    del strategy
    return row, tokens


def count_kernels(rows: list[dict], ckpt: Path, prompt: list[int], args, device) -> None:
    """kernels_per_token of the shape's rows, from a child process (llmopt.kernel_count): a profiler
    session in this process would slow the techniques timed after it."""
    done = [r for r in rows if "error" not in r]
    job = kernel_count.Job(str(ckpt), str(device), prompt, args.new_tokens, None,
                           [(r["technique"], options_of(r["technique"], r["runtime"], args, r.get("queue_ahead"))) for r in done])
    for row, found in zip(done, kernel_count.count(job)):
        row["kernels_per_token"] = None if found is None else found.kernels_per_token
        if found is not None:
            line(f"{row['shape']:6s} {row['technique']:30s} kernels/token {found.kernels_per_token:.0f}")


def match_plain(tokens, plain: dict, dtype, ckpt: Path, prompt, args, device) -> dict:
    """Compare with the plain greedy decode at `dtype` (decoded now if that technique was not swept)."""
    try:
        if dtype not in plain:
            naive = Naive(dtype)
            naive.prepare(ckpt, device)
            plain[dtype] = naive.generate(prompt, args.new_tokens, None).tokens
            del naive
    except Exception as exc:  # noqa: BLE001 - recorded; the measurement stands
        return {"match": None, "first_mismatch": None, "match_error": f"{type(exc).__name__}: {exc}"}
    finally:
        free(device)
    ref = plain[dtype]
    mismatch = first_divergence(tokens, ref)
    return {"match": mismatch is None, "first_mismatch": mismatch}


def fmt(value, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    h = report["header"]
    bandwidth = "-" if h["bandwidth_gb_per_s"] is None else f"{h['bandwidth_gb_per_s']:.0f} GB/s"
    title = (f"# Size sweep: {h['gpu'] or h['device']}, {h['new_tokens']} new tokens, prompt {h['prompt_len']}, "
             f"copy bandwidth {bandwidth}")
    md = [title, "",
          "| shape | technique | runtime | tokens/s | decode ms/token | peak mem GiB | weight GiB | floor fraction "
          "| kernels/token | match |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["rows"]:
        runtime = (r.get("runtime") or "-") + (" ahead" if r.get("queue_ahead") else "")
        if "error" in r:
            md.append(f"| {r['shape']} | {r['technique']} | {runtime} | failed: {r['error'][:120].replace('|', '/')} "
                      "| | | | | | |")
            continue
        md.append(f"| {r['shape']} | {r['technique']} | {runtime} | {r['tokens_per_s']:.1f} | "
                  f"{r['decode_ms_per_token']:.2f} | {fmt(r['peak_memory_bytes'], GIB)} | {r['weight_bytes'] / GIB:.2f} | "
                  f"{fmt(r['floor_fraction'])} | {fmt(r['kernels_per_token'], digits=0)} | {r['match']} |")
    md += ["", "floor fraction = (weight bytes / copy bandwidth) / decode ms per token; 1.0 is the bandwidth floor.",
           "kernels/token: device kernels per token over a whole generate (prefill included; one step per token).",
           "runtime: the graphs runtime; ahead: with queue_ahead (the next step queued before a token is read).",
           "match: tokens equal to the plain decode at the same precision (naive for fp32, half for fp16)."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON results; the Markdown table goes next to it (.md)")
    parser.add_argument("--shapes", default="125m,1.3b,2.7b", help="comma-separated make_config shapes")
    parser.add_argument("--techniques", default="naive,half,flash2,half+graphs,flash2+graphs",
                        help="comma-separated get_strategy names (combinations with +)")
    parser.add_argument("--new-tokens", type=int, default=128, help="new tokens per generate (EOS ignored)")
    parser.add_argument("--prompt-len", type=int, default=64, help="random prompt ids (seed 0)")
    parser.add_argument("--runs", type=int, default=3, help="timed generates per technique, after one warm-up")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--copy-mib", type=int, default=1024, help="buffer size of the bandwidth copy")
    parser.add_argument("--runtime", default="cuda_graph",
                        help="comma-separated runtimes of the graphs techniques, each run in turn "
                             "(cuda_graph, torch.compile, torch.compile:max-autotune; default cuda_graph)")
    parser.add_argument("--queue-ahead", choices=sorted(AHEAD), default="off",
                        help="the graphs techniques' queue_ahead option: off (default), on, or both in turn")
    parser.add_argument("--decode-kernel", choices=DECODE_KERNELS,
                        help="the captured flash2 steps' attention kernel (default: the technique's)")
    args = parser.parse_args(argv)
    runtimes = args.runtime.split(",")
    for runtime in runtimes:
        capture_options(runtime)  # an unknown runtime fails here, before any work
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    bandwidth = copy_bandwidth(device, args.copy_mib)  # None on CPU
    report = {"header": header(device, bandwidth, args), "rows": []}
    line(f"device {report['header']['gpu'] or device}: copy bandwidth "
         f"{fmt(bandwidth, 1e9, 1)} GB/s (read + write)")
    for shape in args.shapes.split(","):
        config = make_config(shape)
        prompt = torch.randint(0, config.vocab_size, (args.prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()
        with tempfile.TemporaryDirectory(prefix=f"size_sweep_{shape}_") as tmp:  # removed even on failure
            ckpt = Path(tmp)
            model = GPTNeo.random(config, seed=0, device=device, dtype=torch.float16)
            model.save_pretrained(ckpt)
            del model
            free(device)
            line(f"== {shape}: random fp16 checkpoint saved ==")
            plain: dict[torch.dtype, list[int]] = {}  # plain-decode tokens by dtype, the match reference
            variants = [(n, *v) for n in args.techniques.split(",") for v in runs_of(n, device, runtimes, AHEAD[args.queue_ahead])]
            for name, runtime, ahead in variants:
                row = {"shape": shape, "technique": name}
                try:
                    result, tokens = measure(name, ckpt, prompt, args, device, bandwidth, runtime, ahead)
                    row.update(result)
                except Exception as exc:  # noqa: BLE001 - recorded; the sweep goes on
                    row["runtime"], row["queue_ahead"] = runtime, ahead
                    row["error"] = f"{type(exc).__name__}: {exc}"
                free(device)  # outside `except`: its traceback would keep an OOM'd model alive
                label = name if runtime in (None, "static") or len(runtimes) == 1 else f"{name}[{runtime}]"
                label += " ahead" if ahead else ""
                if "error" not in row:
                    dtype = getattr(torch, row["dtype"])
                    if name in ("naive", "half"):
                        plain[dtype] = tokens
                    row.update(match_plain(tokens, plain, dtype, ckpt, prompt, args, device))
                    line(f"{shape:6s} {label:30s} {row['tokens_per_s']:8.1f} tok/s  "
                         f"{row['decode_ms_per_token']:7.2f} ms/tok  floor {fmt(row['floor_fraction'])}  "
                         f"peak {(row['peak_memory_bytes'] or 0) / GIB:.2f} GiB  match {row['match']}")
                else:
                    line(f"{shape:6s} {label:30s} FAILED {row['error'][:200]}")
                report["rows"].append(row)
                write(args.out, report)
            count_kernels([r for r in report["rows"] if r["shape"] == shape], ckpt, prompt, args, device)
            write(args.out, report)
    line(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return report


if __name__ == "__main__":
    main()
