#!/usr/bin/env bash
# The benchmark campaign on one GPU of the runner, in stages (each a fresh process, so a fix can
# land between stages): logs, JSON and saved runs go to $JOB (default /tmp/job), packed into
# $OUT/job.tgz by the `pack` stage. Data in ./.data, checkpoints in ./.cache.
#   usage: scripts/campaign.sh STAGE...   stages: tests train sweep fast sizes simulate bench pack
#   e.g.   setsid nohup scripts/campaign.sh tests train sweep bench > /tmp/job/all.log 2>&1 &
# env: CAMPAIGN_DATASETS="e2e_nlg spider", CAMPAIGN_TRAIN="ss e2e_nlg,lm spider", CAMPAIGN_TECHNIQUES=a,b,
#      CAMPAIGN_SAVE=name (saved run), SS_TOPK=2,2,1,1, CAMPAIGN_COMPILE=1 (also torch.compile sizes),
#      CAMPAIGN_TRAIN_PARALLEL=N (trainings at a time, default 1)
set -uo pipefail
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True PYTHONUNBUFFERED=1 LLMOPT_DATA_DIR=$PWD/.data LLMOPT_CACHE_DIR=$PWD/.cache PYTHONPATH=$PWD
JOB=${JOB:-/tmp/job}; mkdir -p "$JOB"
read -ra DATASETS <<< "${CAMPAIGN_DATASETS:-e2e_nlg spider dialogsum}"  # env: a subset, space-separated
TREES=(1,1,1,1 2,1,1,1 2,2,1,1 3,2,1 3,2,2,1 3,2,2,1@0.02 3,2,2,1@0.1)
MATRIX=${CAMPAIGN_TECHNIQUES:-hf,naive,half,bf16,flash2,graphs,half+graphs,flash2+graphs,best,ss,ss+half,ss+flash2,ss+graphs,ss+half+graphs,ss+flash2+graphs}

ss_options() {  # the tree the sweep chose, if it ran (else the strategy's default)
  if [ -n "${SS_TOPK:-}" ]; then echo "{\"ss\": {\"topk\": \"$SS_TOPK\"}}"
  elif [ -f "$JOB/chosen_topk" ]; then echo "{\"ss\": {\"topk\": \"$(cat "$JOB/chosen_topk")\"}}"; else echo "{}"; fi
}

stage() {
  echo "=== $1 $(date -u +%H:%M:%S)"
  case "$1" in
    tests)
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
      python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
      python3 -m pytest tests/test_fastpaths.py tests/test_spec_stream.py -q -p no:cacheprovider -rs 2>&1 | tail -15 ;;
    train)  # the SS checkpoints the benchmark uses, plus Spider's lm twin (quality comparison)
      # CAMPAIGN_TRAIN_PARALLEL at a time (default 1: on an 80 GB H100 four together ran out of
      # memory); a run that fails is run again alone, resuming from its last periodic save
      IFS=, read -ra jobs <<< "${CAMPAIGN_TRAIN:-ss e2e_nlg,ss spider,ss dialogsum,lm spider}"
      for j in "${jobs[@]}"; do set -- $j
        while [ "$(jobs -rp | wc -l)" -ge "${CAMPAIGN_TRAIN_PARALLEL:-1}" ]; do wait -n; done
        python3 -m llmopt train --dataset "$2" --objective "$1" --samples 64 > "$JOB/train_$1_$2.log" 2>&1 &
      done
      wait
      for j in "${jobs[@]}"; do set -- $j
        ls -d .cache/checkpoints/$2-125m-$1-*/ > /dev/null 2>&1 && continue
        echo "again, alone: $j"; tail -3 "$JOB/train_$1_$2.log"
        python3 -m llmopt train --dataset "$2" --objective "$1" --samples 64 >> "$JOB/train_$1_$2.log" 2>&1
      done
      for j in "${jobs[@]}"; do set -- $j
        cp "$(ls -td .cache/checkpoints/$2-125m-$1-*/ | head -1)llmopt.json" "$JOB/train_$1_$2.json"
        grep -E "on [0-9]+ evaluation prompts|output|reference" "$JOB/train_$1_$2.log" | head -8
      done ;;
    sweep)  # tree shapes per dataset (eager ss against naive), pruning on and off on the widest tree
      for d in "${DATASETS[@]}"; do
        python3 scripts/ss_sweep.py --datasets "$d" --rounds 1 --out "$JOB/sweep_$d.json" --topk "${TREES[@]}" 2>&1 | grep -v Warning
      done
      python3 - "$JOB" <<'EOF'
import json, math, sys
from pathlib import Path
job = Path(sys.argv[1])
speed = {}
for f in job.glob("sweep_*.json"):
    for r in json.loads(f.read_text()):
        if r.get("technique") == "ss" and not r["config"]["prune"]:
            speed.setdefault(r["config"]["topk"], []).append(r["speedup_over_naive"])
n = max(len(v) for v in speed.values())
best = max((k for k in speed if len(speed[k]) == n), key=lambda k: math.prod(speed[k]))
print("geometric-mean speed-up per tree:", {k: round(math.prod(v) ** (1 / len(v)), 3) for k, v in speed.items()})
print("chosen topk:", best)
(job / "chosen_topk").write_text(best)
EOF
      ;;
    fast)
      python3 scripts/check_fastpaths.py --skip-compile --json "$JOB/fastpaths.json" 2>&1 | grep -v Warning ;;
    sizes)
      python3 scripts/size_sweep.py --out "$JOB/sizes.json" 2>&1 | grep -v Warning
      [ -n "${CAMPAIGN_COMPILE:-}" ] && python3 scripts/size_sweep.py --out "$JOB/sizes_compile.json" --shapes 1.3b,2.7b \
        --techniques half+graphs --runtime torch.compile 2>&1 | grep -v Warning ;;
    simulate)
      python3 scripts/ss_simulate.py --out "$JOB/simulated.json" --rounds 1 2>&1 | grep -v Warning ;;
    bench)
      python3 -m pytest bench -q -p no:cacheprovider --datasets "$(IFS=,; echo "${DATASETS[*]}")" --techniques "$MATRIX" --strategy-options "$(ss_options)" \
        --benchmark-save="${CAMPAIGN_SAVE:-matrix}" --benchmark-columns=median,rounds 2>&1 | tail -70
      cp .benchmarks/*/*/*_"${CAMPAIGN_SAVE:-matrix}".json "$JOB/" ;;
    pack)
      tar czf "${OUT:-/tmp}/job.tgz" -C "$(dirname "$JOB")" "$(basename "$JOB")"; ls -la "${OUT:-/tmp}" ;;
    *) echo "unknown stage $1" >&2; return 2 ;;
  esac
}

for s in "$@"; do stage "$s"; done
echo "=== done $(date -u +%H:%M:%S)"
