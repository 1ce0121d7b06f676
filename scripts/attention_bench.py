"""What one tree-step attention call costs with each kernel, alone: the shapes of a captured tree step
(a few query rows over a bucket of cache slots, a mask of any pattern), each kernel's calls
captured in one CUDA graph as the step captures them, timed by CUDA events.

    python3 scripts/attention_bench.py [--rows 7,75] [--keys 256] [--heads 12] [--head-dim 64]
        [--dtype float16] [--calls 100] [--repeats 5] [--json out.json]

Why: `best`'s tree step spends 0.38 ms a step in SDPA's memory-efficient kernel and FlexAttention
spent twice that (docs/results/NVIDIA-H100-80GB-HBM3/session16), while the plain step's whole
attention is a small part of its 0.66 ms. This times the candidates for the step's kernel in a
minute, each given the boolean mask, and SDPA's memory-efficient and cuDNN kernels also given the
additive mask made beforehand (as the `sdpa_cudnn` tree step makes it, once a step): what the
conversion at every call costs. Rows 7 and 75 are the 125m tree 2,2,1,1's node rows (the layers without
streams) and its node and stream rows (the layers with them).

Each kernel's output is checked against eager attention in float64 (max absolute difference). On
the CPU there are no graphs: each call is timed by the host clock (a smoke test, not a measure).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmopt.models.attention import ATTENTION, additive_mask, eager_attention  # noqa: E402
from llmopt.spec_stream.static import MASKED_KERNELS  # noqa: E402


def tree_like_mask(rows: int, keys: int, device) -> torch.Tensor:
    """[rows, keys]: the committed slots (all but the last rows + 16 of the bucket) seen by every
    row, then the step's own columns, row i seeing columns 0..i of them (a chain: the most any
    tree row sees), and the free slots after them hidden."""
    committed = keys - rows - 16
    slots = torch.arange(keys, device=device)
    own = slots[None, :] - committed
    return (slots[None, :] < committed) | ((own >= 0) & (own <= torch.arange(rows, device=device)[:, None]))


def candidates() -> dict:
    """name -> (kernel, whether it is given the additive float mask instead of the boolean one)."""
    out = {name: (ATTENTION[name], False) for name in MASKED_KERNELS}
    for name in ("sdpa_efficient", "sdpa_cudnn"):
        out[f"{name}, float mask"] = (ATTENTION[name], True)
    return out


def time_calls(call, calls: int, repeats: int, cuda: bool) -> list[float]:
    """Seconds per call: `repeats` replays of a graph of `calls` calls (CUDA), else host-timed calls."""
    if not cuda:
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                call()
            out.append((time.perf_counter() - start) / calls)
        return out
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream (compiles, workspaces)
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            call()
    graph.replay()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        graph.replay()
        end.record()
        end.synchronize()
        out.append(begin.elapsed_time(end) / 1e3 / calls)
    return out


def bench(rows: int, keys: int, heads: int, head_dim: int, dtype: torch.dtype, device: str,
          calls: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, head_dim, device=device, dtype=dtype) for n in (rows, keys, keys))
    mask = tree_like_mask(rows, keys, device)
    bias = additive_mask(mask, dtype)
    reference = eager_attention(q.double(), k.double(), v.double(), mask)
    results = []
    for name, (kernel, takes_bias) in candidates().items():
        given = bias if takes_bias else mask
        row = {"kernel": name, "rows": rows, "keys": keys}
        try:
            err = (kernel(q, k, v, given).double() - reference).abs().max().item()
            seconds = time_calls(lambda: kernel(q, k, v, given), calls, repeats, device == "cuda")
            row.update(us_per_call=[s * 1e6 for s in seconds], max_abs_error=err)
        except Exception as e:  # a backend that refuses the shape or the device: say so, go on
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        results.append(row)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="7,75", help="query rows, comma-separated (default 7,75)")
    parser.add_argument("--keys", type=int, default=256, help="cache slots attended over (a bucket; default 256)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--calls", type=int, default=100, help="calls per captured graph (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed replays per kernel (default 5)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    try:
        rows = [int(r) for r in args.rows.split(",")]
    except ValueError:
        parser.error(f"--rows takes whole numbers separated by commas, got {args.rows!r}")
    if min(rows) < 1 or args.keys < max(rows) + 17:
        parser.error(f"--keys must exceed the most rows by at least 17 (the mask's free slots), got {args.keys}")
    dtype = getattr(torch, args.dtype)
    results = []
    for n in rows:
        for row in bench(n, args.keys, args.heads, args.head_dim, dtype, args.device, args.calls, args.repeats):
            results.append(row)
            timing = ("  ".join(f"{t:7.2f}" for t in row["us_per_call"]) + f"  µs/call, max |err| {row['max_abs_error']:.1e}"
                      if "error" not in row else row["error"])
            print(f"{n:4d} rows x {args.keys} keys  {row['kernel']:28s} {timing}", flush=True)
    if args.json:
        device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "device": device,
                                         "torch": torch.__version__, "rows": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
