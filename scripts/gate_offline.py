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

from llmopt import compare, names

SLOWER = 0.9
RULES = ("without the probe", "the gate", "eager on x launch cost")


def as_judged(run: compare.Run, rule: str, technique: str | None = None, factor: float = 1.0) -> compare.Run:
    """`run` as `rule` judges it, with `technique`'s cell slowed by `factor`: "without the probe"
    drops the launch probe, as a run made before it; "eager on x launch cost" replaces the eager
    cells' rates by tokens/s x launch cost (the gate reads ratios, so any fixed unit does)."""
    records = copy.deepcopy(run.records)
    for r in records:
        t = r.get("technique", "")
        if rule == "without the probe":
            r.pop("round_launch_s", None)
        elif rule == "eager on x launch cost" and "graphs" not in names.parts(t) and (found := compare.host_normalized(r)):
            scale = 1e6  # tokens per microsecond of launches: one unit for every run, so ratios hold
            r["tokens_per_s"], r["tokens_per_s_rounds"] = found[0] * scale, [v * scale for v in found[1]]
            for key in ("speedup_over_naive", "speedup_over_naive_rounds", "round_launch_s"):
                r.pop(key, None)
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
    rows = []
    for rule in RULES:
        judged = [as_judged(r, rule) for r in runs]
        false = sum(bool(compare.gate(judged[b], judged[a])) for a, b in pairs)
        caught = [sum(any(f.cell and f.cell[1] == t and f.kind == "speed"
                          for f in compare.gate(as_judged(runs[b], rule, t, SLOWER), judged[a])) for a, b in pairs)
                  for t in techniques]
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
