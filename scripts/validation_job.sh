#!/usr/bin/env bash
# The GPU runner's validation of the harness (one process per step, results in $JOB, packed into
# $JOB.tgz after every phase so a cut-off run still returns what it finished):
#   train   the 125m SS checkpoints of the three datasets, and E2E's a second time into another
#           directory (its fingerprint must repeat), while the CUDA-only tests run
#   hashes  E2E, every technique, on one checkpoint: the code before the refactor (./.old, a copy of
#           the commit named in .old/COMMIT) and now; output hashes must be equal cell by cell
#   bench   the README's main command, `llmopt bench`, with the local data
#   gate    scripts/gate_validation.py: identical runs, an injected slowdown and output change,
#           runs with --interleave off
# usage: setsid nohup scripts/validation_job.sh [PHASE...] > /tmp/job.log 2>&1 &   (default: all)
# Data in ./.data, checkpoints in ./.cache. VALIDATION_RUNS / VALIDATION_SEQUENTIAL: gate runs;
# a CPU dry run: VALIDATION_SHAPE=tiny VALIDATION_SMALL="--num-prompts 2 --max-new-tokens 8"
# VALIDATION_NEW="--min-time 1 --max-time 2 --round-time 0.2 --model tiny" VALIDATION_GATE_TECHNIQUES=naive,ss,half
# VALIDATION_SLOW=half
set -uo pipefail
export PYTHONUNBUFFERED=1 LLMOPT_DATA_DIR=$PWD/.data LLMOPT_CACHE_DIR=${LLMOPT_CACHE_DIR:-$PWD/.cache} PYTHONPATH=$PWD
export CUBLAS_WORKSPACE_CONFIG=:4096:8 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
JOB=${JOB:-/tmp/job}; mkdir -p "$JOB"
ALL=hf,naive,half,bf16,flash2,graphs,half+graphs,flash2+graphs,best,ss,ss+half,ss+flash2,ss+graphs,ss+half+graphs,ss+flash2+graphs
SHAPE=${VALIDATION_SHAPE:-125m}

checkpoint_of() { grep -m1 '^checkpoint: ' "$1" | cut -d' ' -f2; }
pack() { tar czf "$JOB.tgz.tmp" -C "$JOB" . && mv "$JOB.tgz.tmp" "$JOB.tgz"; }

phase() {
  echo "=== $1 $(date -u +%H:%M:%S)"
  case "$1" in
    train)
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$JOB/gpu.txt" 2>&1
      python3 -m pytest tests/test_fastpaths.py tests/test_spec_stream.py -q -rs > "$JOB/cuda_tests.log" 2>&1 &
      for d in e2e_nlg spider dialogsum; do
        python3 -m llmopt train --dataset "$d" --shape "$SHAPE" --objective ss --samples "${VALIDATION_SAMPLES:-32}" > "$JOB/train_$d.log" 2>&1 &
      done
      python3 -m llmopt train --dataset e2e_nlg --shape "$SHAPE" --objective ss --samples 0 \
        --output "$JOB/e2e_again" > "$JOB/train_e2e_again.log" 2>&1 &
      wait
      python3 -c "from llmopt.checkpoints import fingerprint; import sys; print(*(f'{p} {fingerprint(p)}' for p in sys.argv[1:]), sep='\n')" \
        "$(checkpoint_of "$JOB/train_e2e_nlg.log")" "$JOB/e2e_again" > "$JOB/fingerprints.txt"
      rm -rf "$JOB/e2e_again" ;;
    hashes)
      local ckpt; ckpt=$(checkpoint_of "$JOB/train_e2e_nlg.log")
      (cd .old && PYTHONPATH=$PWD python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets e2e_nlg \
        --techniques "$ALL" --rounds 3 ${VALIDATION_SMALL:-} --benchmark-json="$JOB/before.json") > "$JOB/before.log" 2>&1
      python3 -m pytest bench -q --model "$ckpt" --datasets e2e_nlg --techniques "$ALL" --rounds 3 --min-time 0 \
        --max-time 0 --round-time 0 --interleave off ${VALIDATION_SMALL:-} --benchmark-json="$JOB/after.json" > "$JOB/after.log" 2>&1 ;;
    bench)
      python3 -m llmopt bench --data-dir .data ${VALIDATION_SMALL:-} ${VALIDATION_NEW:-} --json "$JOB/bench.json" \
        > "$JOB/bench.out" 2> "$JOB/bench.err"; echo "exit $?" >> "$JOB/bench.out" ;;
    gate)
      python3 scripts/gate_validation.py --runs "${VALIDATION_RUNS:-5}" --sequential-runs "${VALIDATION_SEQUENTIAL:-2}" \
        --model "$SHAPE" --techniques "${VALIDATION_GATE_TECHNIQUES:-naive,graphs,ss,best}" --slow "${VALIDATION_SLOW:-graphs}" \
        --out "$JOB/gate" -- ${VALIDATION_SMALL:-} ${VALIDATION_NEW:-} > "$JOB/gate.log" 2>&1 ;;
  esac
  pack
}

for p in "${@:-train hashes bench gate}"; do
  for one in $p; do phase "$one"; done
done
echo "=== done $(date -u +%H:%M:%S)"
