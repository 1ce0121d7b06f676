#!/usr/bin/env bash
# The benchmark campaign on the GPUs of the runner, in stages (each a fresh process, so a fix can
# land between stages): logs, JSON and saved runs go to $JOB (default /tmp/job), packed into
# $OUT/job.tgz by the `pack` stage. Data in ./.data, checkpoints in ./.cache.
#   usage: scripts/campaign.sh STAGE...   stages: tests train sweep fast sizes simulate bench pack
#   e.g.   setsid nohup scripts/campaign.sh tests train sweep bench > /tmp/job/all.log 2>&1 &
# Several GPUs (CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists): trainings take the next free
# GPU, and the benchmark runs `pytest bench -n N`, one worker per GPU, into one saved run.
# env: CAMPAIGN_DATASETS="e2e_nlg spider", CAMPAIGN_TECHNIQUES=a,b, CAMPAIGN_SAVE=name (saved run),
#      CAMPAIGN_TRAIN="ss e2e_nlg,lm spider,ss spider --augment-copies 2" (objective dataset [options]),
#      CAMPAIGN_TRAIN_PARALLEL=N (trainings at a time per GPU, default 1), SS_TOPK=2,2,1,1,
#      CAMPAIGN_COMPILE=1 (also torch.compile sizes)
set -uo pipefail
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True PYTHONUNBUFFERED=1 LLMOPT_DATA_DIR=$PWD/.data LLMOPT_CACHE_DIR=$PWD/.cache PYTHONPATH=$PWD
JOB=${JOB:-/tmp/job}; mkdir -p "$JOB"
read -ra DATASETS <<< "${CAMPAIGN_DATASETS:-e2e_nlg spider dialogsum}"  # env: a subset, space-separated
TREES=(1,1,1,1 2,1,1,1 2,2,1,1 3,2,1 3,2,2,1 3,2,2,1@0.02 3,2,2,1@0.1)
MATRIX=${CAMPAIGN_TECHNIQUES:-hf,naive,half,bf16,flash2,graphs,half+graphs,flash2+graphs,best,ss,ss+half,ss+flash2,ss+graphs,ss+half+graphs,ss+flash2+graphs}
read -ra GPUS <<< "$(echo "${CUDA_VISIBLE_DEVICES:-$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | paste -sd,)}" | tr , ' ')"
[ ${#GPUS[@]} -gt 0 ] || GPUS=(none)

on_gpus() {  # run each argument (a shell command) on the next free GPU, PER_GPU at a time per GPU
  local slots=() busy=() cmd pid done_pid i
  for ((i = 0; i < ${PER_GPU:-1}; i++)); do slots+=("${GPUS[@]}"); done
  declare -A gpu_of=()
  for cmd in "$@"; do
    while [ ${#slots[@]} -eq 0 ]; do wait -n -p done_pid; slots+=("${gpu_of[$done_pid]}"); unset "gpu_of[$done_pid]"; done
    CUDA_VISIBLE_DEVICES=${slots[0]} bash -c "$cmd" & pid=$!
    echo "  GPU ${slots[0]}: $cmd"
    gpu_of[$pid]=${slots[0]}; slots=("${slots[@]:1}")
  done
  wait
}

train_log() { echo "$JOB/train_$(echo "$1" | tr -c 'a-z0-9_\n-' _).log"; }  # of a job "objective dataset [options]"
checkpoint_of() { grep -m1 '^checkpoint: ' "$1" 2>/dev/null | cut -d' ' -f2; }  # from a training log

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
    train)  # the SS checkpoints the benchmark uses, plus lm twins (quality comparison)
      # A run that fails (out of memory, say) is run again alone, resuming from its last periodic save
      IFS=, read -ra jobs <<< "${CAMPAIGN_TRAIN:-ss dialogsum,ss spider,ss e2e_nlg,lm dialogsum,lm spider,lm e2e_nlg}"
      cmds=()
      for j in "${jobs[@]}"; do set -- $j; log=$(train_log "$j")
        cmds+=("python3 -m llmopt train --dataset $2 --objective $1 ${*:3} --samples 64 > $log 2>&1")
      done
      PER_GPU=${CAMPAIGN_TRAIN_PARALLEL:-1} on_gpus "${cmds[@]}"
      for i in "${!jobs[@]}"; do log=$(train_log "${jobs[$i]}")
        [ -n "$(checkpoint_of "$log")" ] && continue
        echo "again, alone: ${jobs[$i]}"; tail -3 "$log"
        CUDA_VISIBLE_DEVICES=${GPUS[0]} bash -c "${cmds[$i]/ > / >> }"
      done
      for j in "${jobs[@]}"; do log=$(train_log "$j")
        ckpt=$(checkpoint_of "$log"); echo "--- $j: $ckpt"
        [ -n "$ckpt" ] && cp "$ckpt/llmopt.json" "${log%.log}.json"
        grep -E "on [0-9]+ evaluation prompts|output|reference" "$log" | head -8
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
    bench)  # the matrix over the host's GPUs: one pytest-xdist worker per GPU (at most one per dataset),
            # a dataset's cells on one worker, ONE saved run (llmopt.pytest_xdist)
      workers=$(( ${#GPUS[@]} < ${#DATASETS[@]} ? ${#GPUS[@]} : ${#DATASETS[@]} ))
      parallel=(); [ "${GPUS[0]}" != none ] && [ "$workers" -gt 1 ] && parallel=(-n "$workers")
      python3 -m pytest bench -q -p no:cacheprovider "${parallel[@]}" --datasets "$(IFS=,; echo "${DATASETS[*]}")" \
        --techniques "$MATRIX" --strategy-options "$(ss_options)" --benchmark-save "${CAMPAIGN_SAVE:-matrix}" \
        --benchmark-json="$JOB/bench.json" --benchmark-columns=median,rounds > "$JOB/bench.log" 2>&1
      tail -40 "$JOB/bench.log" ;;
    pack)
      tar czf "${OUT:-/tmp}/job.tgz" -C "$(dirname "$JOB")" "$(basename "$JOB")"; ls -la "${OUT:-/tmp}" ;;
    *) echo "unknown stage $1" >&2; return 2 ;;
  esac
}

for s in "$@"; do stage "$s"; done
echo "=== done $(date -u +%H:%M:%S)"
