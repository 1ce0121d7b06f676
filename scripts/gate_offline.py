"""What-if analyses of the gate over saved identical runs, with no GPU: how often it fails identical
code, and how often it catches a synthetic 10% slowdown of each cell, under three rules.

    python scripts/gate_offline.py OUT.md RUN.json RUN.json [RUN.json ...]

Rules, each over every ordered pair (baseline, current) of the runs:
- "without the probe": the gate as it was before `round_launch_s` (naive has no reference);
- "the gate": llmopt.compare at its defaults (a slower naive whose tokens/s x launch cost held is a
  machine effect);
- "eager on x launch cost": cells without a captured step (no `graphs` part, not `best`) judged on
  their per-round tokens/s x the host's launch cost instead of tokens/s (a rule not built into the gate).
A synthetic slowdown scales one cell's rounds (and its speed-up over naive) of the current run by 0.9,
leaving the probe alone, as a code change would. Scaled rates are no re-measured process: the catch
rates say what the gate's statistics can see in these runs' noise, not what an injected run gives
(scripts/gate_validation.py does that on a GPU)."""
import copy
import itertools
import sys
from pathlib import Path

from llmopt import compare

SLOWER = 0.9


def scaled(run: compare.Run, technique: str | None, factor: float = SLOWER, normalize: bool = False) -> compare.Run:
    """`run` with one cell slowed by `factor` and, with `normalize`, its eager cells' rates replaced
    by tokens/s x launch cost (the gate reads ratios, so any fixed unit does)."""
    records = copy.deepcopy(run.records)
    for r in records:
        t = r.get("technique", "")
        if normalize and "graphs" not in t and t != "best" and (found := compare.host_normalized(r)):
            scale = 1e6  # tokens per microsecond of launches: one unit for every run, so ratios hold
            r["tokens_per_s"], r["tokens_per_s_rounds"] = found[0] * scale, [v * scale for v in found[1]]
            r.pop("speedup_over_naive", None), r.pop("speedup_over_naive_rounds", None), r.pop("round_launch_s")
        if t == technique:
            r["tokens_per_s"] *= factor
            r["tokens_per_s_rounds"] = [x * factor for x in r["tokens_per_s_rounds"]]
            if "speedup_over_naive" in r:
                r["speedup_over_naive"] *= factor
                r["speedup_over_naive_rounds"] = [x * factor for x in r["speedup_over_naive_rounds"]]
    return compare.Run(run.name, run.machine_info, run.datetime, records)


def main(out: str, *paths: str) -> None:
    runs = [compare.load_run(p) for p in paths]
    pairs = list(itertools.permutations(range(len(runs)), 2))
    techniques = [cell[1] for cell in runs[0].cells]
    original = compare.host_normalized
    rows = []
    for rule in ("without the probe", "the gate", "eager on x launch cost"):
        normalize = rule == "eager on x launch cost"
        if rule == "without the probe":
            compare.host_normalized = lambda record: None
        # the baseline normalised the same way as the current run (identity scaling: factor 1)
        base = [scaled(r, None, 1.0, normalize) for r in runs]
        false = sum(bool(compare.gate(scaled(runs[b], None, 1.0, normalize), base[a])) for a, b in pairs)
        caught = [sum(any(f.cell and f.cell[1] == t and f.kind == "speed"
                          for f in compare.gate(scaled(runs[b], t, SLOWER, normalize), base[a])) for a, b in pairs)
                  for t in techniques]
        compare.host_normalized = original
        rows.append(f"| {rule} | {false} of {len(pairs)} | " + " | ".join(f"{c} of {len(pairs)}" for c in caught) + " |")
    lines = [f"# The gate over {len(runs)} identical runs, offline: {runs[0].gpu}", "",
             f"Runs: {', '.join(Path(p).name for p in paths)}. Ordered pairs: {len(pairs)}. "
             "A slowdown is a synthetic 10% one of the current run's cell (see scripts/gate_offline.py).", "",
             "| rule | false failures | " + " | ".join(f"10% slower {t} caught" for t in techniques) + " |",
             "|---|---:|" + "---:|" * len(techniques), *rows, ""]
    Path(out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
