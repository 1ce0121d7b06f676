#!/usr/bin/env bash
# Runs on the GPU runner (device tool): train the 125m models per dataset, then the benchmark,
# writing logs, saved pytest-benchmark JSON and training summaries to $OUT.
#   usage: scripts/gpu_session.sh smoke|train|ss|bench   (data in ./.data, cache in ./.cache)
set -euo pipefail
export PYTHONUNBUFFERED=1 LLMOPT_DATA_DIR=$PWD/.data LLMOPT_CACHE_DIR=$PWD/.cache PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
case "${1:-}" in
  smoke)
    python3 -m llmopt train --dataset e2e_nlg --shape tiny --samples 4
    python3 -m pytest bench -q -p no:cacheprovider --model tiny --num-prompts 4 --max-new-tokens 32 --rounds 1 --datasets e2e_nlg --benchmark-json "$OUT/smoke.json"
    python3 -m llmopt train --dataset e2e_nlg --steps 100 --output /tmp/e2e100 --samples 8 ;;
  train)
    for d in e2e_nlg spider dialogsum; do
      python3 -m llmopt train --dataset "$d" --shape 125m --samples 32 2>&1 | tee "$OUT/train_$d.log"
      cp "$(ls -td .cache/checkpoints/$d-125m-lm-*/ | head -1)llmopt.json" "$OUT/train_$d.json"
    done ;;
  ss)  # train the SS checkpoints, sweep the tree per dataset, then the saved benchmark run
    for d in e2e_nlg spider dialogsum; do
      python3 -m llmopt train --dataset "$d" --shape 125m --objective ss --samples 32 2>&1 | tee "$OUT/train_ss_$d.log"
      cp "$(ls -td .cache/checkpoints/$d-125m-ss-*/ | head -1)llmopt.json" "$OUT/train_ss_$d.json"
      python3 scripts/ss_sweep.py --datasets "$d" --out "$OUT/sweep_$d.json" --topk 1,1,1,1 1,1,1 2,1,1,1 2,2,1,1 3,2,1 2>&1 | tee "$OUT/sweep_$d.log"
    done
    python3 -m pytest bench -p no:cacheprovider --techniques hf,naive,half,ss --benchmark-save=ss --benchmark-columns=median,rounds 2>&1 | tee "$OUT/bench_ss.log"
    cp .benchmarks/*/*/*_ss.json "$OUT/" ;;
  bench)
    python3 -m pytest bench -p no:cacheprovider --benchmark-save=foundation --benchmark-columns=median,rounds "${@:2}" 2>&1 | tee "$OUT/bench.log"
    cp -r .benchmarks "$OUT/" ;;
  *) echo "usage: $0 smoke|train|ss|bench" >&2; exit 2 ;;
esac
