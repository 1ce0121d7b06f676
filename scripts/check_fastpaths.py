"""GPU check of the fast paths (flash2, graphs) on a random-weight GPT-Neo 125m.

    python scripts/check_fastpaths.py [--new-tokens 128] [--prompt-len 400] [--runs 3] [--skip-compile]

1. flash vs eager on prompts longer than the window: ours (every provider that can run), and stock
   transformers' attn_implementation="sdpa"/"flash_attention_2" against its "eager" (reported, not
   asserted: we only report whether stock transformers differs);
2. graphs vs naive token identity (fp32 cuda_graph and torch.compile; half+graphs vs half);
3. tokens/s of naive, half, half+graphs (both runtimes), flash2, flash2+graphs, 128 new tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmopt.models.attention import flash_attn_available  # noqa: E402
from llmopt.models.gpt_neo import GPTNeo, make_config  # noqa: E402
from llmopt.strategies import get_strategy  # noqa: E402


def line(*parts):
    print(*parts, flush=True)


def ours_flash_vs_eager(ckpt, prompt, dtype):
    model = GPTNeo.from_pretrained(ckpt, device="cuda", dtype=dtype).eval()
    ids = torch.tensor([prompt], device="cuda")
    results = {}
    with torch.inference_mode():
        ref_cache = model.new_cache()
        ref = model(ids, ref_cache)
        ref_toks = [int(ref[0, -1].argmax())]
        nxt = ref[:, -1:].argmax(-1)
        for _ in range(31):
            out = model(nxt, ref_cache)
            nxt = out[:, -1:].argmax(-1)
            ref_toks.append(int(nxt))
        providers = ["sdpa_flash"] + (["flash_attn"] if flash_attn_available() else [])
        for provider in providers:
            model.set_attention(provider)
            cache = model.new_cache()
            got = model.forward_banded(ids, cache)
            diff = (got.float() - ref.float()).abs().max().item()
            toks = [int(got[0, -1].argmax())]
            nxt = got[:, -1:].argmax(-1)
            for _ in range(31):
                out = model.forward_banded(nxt, cache)
                nxt = out[:, -1:].argmax(-1)
                toks.append(int(nxt))
            results[provider] = {"prefill_max_logit_diff": diff, "same_32_tokens": toks == ref_toks,
                                 "first_mismatch": next((i for i, (a, b) in enumerate(zip(toks, ref_toks)) if a != b), None)}
            model.set_attention("eager")
    return results


def stock_transformers(ckpt, prompt, dtype):
    from transformers import GPTNeoForCausalLM

    ids = torch.tensor([prompt], device="cuda")
    out, ref = {}, None
    for impl in ("eager", "sdpa", "flash_attention_2"):
        try:
            model = GPTNeoForCausalLM.from_pretrained(ckpt, dtype=dtype, attn_implementation=impl).to("cuda").eval()
            with torch.inference_mode():
                logits = model(ids).logits.float()
        except Exception as exc:  # noqa: BLE001 - reported
            out[impl] = f"unavailable: {type(exc).__name__}: {str(exc)[:160]}"
            continue
        if ref is None:
            ref = logits
            out[impl] = "reference"
        else:
            diff = (logits - ref).abs().max().item()
            argmax_diff = (logits.argmax(-1) != ref.argmax(-1)).float().mean().item()
            out[impl] = {"max_logit_diff_vs_eager": diff, "argmax_mismatch_share": argmax_diff,
                         "differs": diff > 0.05 or argmax_diff > 0.0}
        del model
    return out


def generate_all(name, ckpt, prompts, new, **options):
    strategy = get_strategy(name, **options)
    start = time.perf_counter()
    strategy.prepare(ckpt, "cuda")
    prep = time.perf_counter() - start
    outs = [strategy.generate(p, new, None).tokens for p in prompts]
    return strategy, prep, outs


def timed(name, ckpt, prompts, new, runs, **options):
    strategy, prep, outs = generate_all(name, ckpt, prompts[:2], new, **options)  # + warm-up
    rates = []
    for _ in range(runs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        n = sum(len(strategy.generate(p, new, None).tokens) for p in prompts)
        torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - start))
    rates.sort()
    cfg = strategy.config()
    result = {"tokens_per_s": rates[len(rates) // 2], "min": rates[0], "max": rates[-1], "prepare_s": prep,
              "setup_s": cfg.get("setup_s", 0.0), "attention_provider": cfg["attention_provider"],
              "runtime": cfg["runtime"]}
    del strategy
    torch.cuda.empty_cache()
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=400)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--compile-bucket", type=int, default=512)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("check_fastpaths.py needs a CUDA GPU")
    line("device:", torch.cuda.get_device_name(), "torch", torch.__version__, "flash_attn importable:", flash_attn_available())
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "flash_attn": flash_attn_available()}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        GPTNeo.random(make_config("125m"), seed=0).save_pretrained(ckpt)
        gen = torch.Generator().manual_seed(0)
        prompts = [torch.randint(0, 50257, (args.prompt_len + 17 * i,), generator=gen).tolist() for i in range(args.prompts)]

        line("\n== 1. flash vs eager, prompt of", len(prompts[0]), "tokens (window 256) ==")
        for dtype in (torch.float16, torch.bfloat16):
            r = ours_flash_vs_eager(ckpt, prompts[0], dtype)
            report[f"ours_flash_{dtype}"] = r
            line("ours", dtype, json.dumps(r))
            s = stock_transformers(ckpt, prompts[0], dtype)
            report[f"stock_{dtype}"] = s
            line("stock transformers", dtype, json.dumps(s))

        line("\n== 2. graphs vs naive token identity ==")
        _, _, ref32 = generate_all("naive", ckpt, prompts, args.new_tokens)
        runtimes = ["cuda_graph"] + ([] if args.skip_compile else ["torch.compile"])
        for runtime in runtimes:
            opts = {"runtime": runtime, "bucket": args.compile_bucket if runtime == "torch.compile" else 256,
                    "max_len": 1024}  # prompts of ~400-450 tokens + new ones: few buckets to capture/compile
            s, prep, got = generate_all("graphs", ckpt, prompts, args.new_tokens, **opts)
            report[f"graphs_fp32_{runtime}_identical"] = got == ref32
            line(f"graphs fp32 {runtime}: identical to naive: {got == ref32} (setup {s.setup_s:.2f}s)")
        _, _, ref16 = generate_all("half", ckpt, prompts, args.new_tokens)
        for name in ("half+graphs", "flash2", "flash2+graphs"):
            s, prep, got = generate_all(name, ckpt, prompts, args.new_tokens)
            same = [a == b for a, b in zip(got, ref16)]
            report[f"{name}_identical_to_half"] = same
            line(f"{name} ({s.attention_provider}): identical to half per prompt: {same}")

        line(f"\n== 3. tokens/s, {args.prompts} prompts of ~{args.prompt_len} tokens, {args.new_tokens} new ==")
        runs = [("naive", {}), ("half", {}), ("half+graphs", {}), ("flash2", {}), ("flash2+graphs", {})]
        if not args.skip_compile:
            runs.insert(3, ("half+graphs", {"runtime": "torch.compile", "bucket": args.compile_bucket, "max_len": 1024}))
        timings = {}
        for name, opts in runs:
            label = name + (f" [{opts['runtime']}]" if opts else "")
            try:
                timings[label] = r = timed(name, ckpt, prompts, args.new_tokens, args.runs, **opts)
                line(f"{label:32s} {r['tokens_per_s']:8.1f} tok/s (min {r['min']:.1f}, max {r['max']:.1f})  "
                     f"setup {r['setup_s']:.2f}s  {r['attention_provider']} / {r['runtime']}")
            except Exception as exc:  # noqa: BLE001 - reported
                timings[label] = f"failed: {type(exc).__name__}: {exc}"
                line(f"{label:32s} FAILED {type(exc).__name__}: {exc}")
        report["timings"] = timings
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
