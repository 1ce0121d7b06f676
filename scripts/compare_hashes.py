"""Before/after table of a change that must not change behaviour: per cell, the output hashes of two
pytest-benchmark JSON runs on the same checkpoint, and their tokens/s.

    python scripts/compare_hashes.py BEFORE.json AFTER.json OUT.md [TITLE]

(`llmopt compare` compares outputs only between records that carry equal checkpoint fingerprints;
runs from before fingerprints existed need this.)"""
import json, sys
before, after, out = sys.argv[1:4]
def cells(p):
    d = json.load(open(p))
    return {b["extra_info"]["technique"]: b["extra_info"] for b in d["benchmarks"]}, d
b, bd = cells(before); a, ad = cells(after)
lines = ["| technique | output_sha256 before | after | equal | tokens/s before (min–max) | after (min–max) | change |", "|---|---|---|---|---:|---:|---:|"]
equal = 0
for t in b:
    if t not in a:
        lines.append(f"| {t} | {b[t]['output_sha256'][:12]} | missing | NO | | | |"); continue
    x, y = b[t], a[t]; eq = x["output_sha256"] == y["output_sha256"]; equal += eq
    lines.append(f"| {t} | {x['output_sha256'][:12]} | {y['output_sha256'][:12]} | {'yes' if eq else 'NO'} | "
                 f"{x['tokens_per_s']:.1f} ({x['tokens_per_s_min']:.0f}–{x['tokens_per_s_max']:.0f}) | "
                 f"{y['tokens_per_s']:.1f} ({y['tokens_per_s_min']:.0f}–{y['tokens_per_s_max']:.0f}) | {y['tokens_per_s']/x['tokens_per_s']-1:+.1%} |")
title = sys.argv[4] if len(sys.argv) > 4 else "Before and after the refactor"
first = next(iter(a.values()))
rounds = sorted({len(r.get("tokens_per_s_rounds") or []) for r in [*a.values(), *b.values()]})
head = [f"# {title}: {ad['machine_info'].get('gpu_name')}", "",
        f"{first['dataset']}, one checkpoint, {first.get('num_prompts')} prompts, up to {first.get('max_new_tokens')} new "
        f"tokens, {'–'.join(map(str, rounds[::max(1, len(rounds) - 1)]))} rounds per cell; "
        f"{equal} of {len(b)} cells emit identical tokens.", ""]
open(out, "w").write("\n".join(head + lines) + "\n"); print("\n".join(head + lines))
