#!/usr/bin/env bash
# The GPU runner's validation of the harness (one process per step, results in $JOB, packed into
# $JOB.tgz after every phase so a cut-off run still returns what it finished):
#   train   the 125m SS checkpoints of the three datasets (E2E's fingerprint in fingerprints.txt,
#           to hold against an earlier run's), while the CUDA-only tests run
#   cublas  E2E, the gate's techniques with CUBLAS_WORKSPACE_CONFIG=:4096:8 (README, "Measurement noise"),
#           against the gate's first identical run (unset): what the fixed cuBLAS workspace costs
#   oldnew  E2E, the code before the refactor and now, alternately (old new old new, $VALIDATION_PASSES (2) pairs), 10 one-pass rounds
#           per cell one cell after another: the refactor's speed, the same protocol for both
#   hashes  E2E, every technique, on one checkpoint: the code before the refactor (./.old, a copy of
#           the commit named in .old/COMMIT) and now; output hashes must be equal cell by cell
#   bench   the README's main command, `llmopt bench`, with the local data
#   order   `llmopt bench` naive,ss over the datasets in the opposite order (E2E first): session 7's
#           launches grew slower dataset by dataset; the host drifting, or something in the process?
#   gate    scripts/gate_validation.py: identical runs, an injected slowdown and output change
#   pinned  identical runs, unpinned and pinned to CPUs $VALIDATION_PIN (2-3) alternately,
#           $VALIDATION_PIN_RUNS (3) of each: does landing on other cores make the between-process spread?
#   seq     the gate's runs with --interleave off, added to its analysis
#   sizes   scripts/size_sweep.py over $VALIDATION_SIZES (125m,1.3b,2.7b): half, and the captured fp16 step
#           under the graphs runtimes $VALIDATION_SIZES_RUNTIMES (cuda_graph,torch.compile; also
#           torch.compile:max-autotune), against the bandwidth floor
#   compiled E2E's captured cells, plain and Speculative Streaming, under each graphs runtime
#   peers   $VALIDATION_PEERS_DATASETS (e2e_nlg; each trained here unless the train phase did, one dataset at a
#           time: its results are packed before the next one trains), Speculative Streaming's peers
#           against their twins: each eager, each with half+graphs, the stock references (transformers' prompt
#           lookup and assisted generation), $VALIDATION_PEERS overrides; then Medusa with heads sharing the base's
#           LM head (VALIDATION_PEERS_SHARED=0: not; VALIDATION_PEERS_SHARED_TECHNIQUES: its cells); sps's
#           draft model and Medusa's heads are trained for the checkpoint first (cached)
#   large   E2E at $VALIDATION_LARGE (1.3b): its SS checkpoint trained (bf16 autocast, slices of 16 rows;
#           VALIDATION_LARGE_TRAIN adds `llmopt train` options, e.g. --steps; VALIDATION_LARGE_SS_TRAIN options
#           of the SS run only, e.g. --stream-lr-scale 10), Medusa's heads on it with VALIDATION_LARGE_TRAIN
#           (the same step budget), then the captured fp16 cells of plain decoding, SS and its
#           peers ($VALIDATION_LARGE_TECHNIQUES overrides; sps's draft model is trained by the bench, cached)
#   simulated scripts/ss_simulate.py with random weights at each of $VALIDATION_SIM_SHAPES (1.3b 2.7b): the
#           real captured step of $VALIDATION_SIM_TECHNIQUE (ss+half+graphs) against its plain twin, drafts
#           right at a controlled rate (VALIDATION_SIM adds options): from which acceptance SS pays at each size
#   streamlr E2E at 125m, SS trained for $VALIDATION_STREAMLR_STEPS (600) steps at each stream learning-rate
#           scale of $VALIDATION_STREAMLR_SCALES (1 10), then `ss` on each checkpoint (briefly timed: its accepted
#           tokens per step are what count): does --stream-lr-scale make a short run's streams learn?
#   idle    scripts/profile_step.py at $SHAPE on $VALIDATION_IDLE_TECHNIQUES (half+graphs,best,medusa+half+graphs):
#           per step its wall, kernel and idle time (by the kernel that waited) and a Chrome trace: where
#           a captured step's time goes (session 14: in the kernels, not waiting). VALIDATION_IDLE adds
#           options, e.g. --runtime torch.compile or --pad-rows 16; a CPU dry run: --runtime static
#   treekernel  best's captured tree step on each of $VALIDATION_TREE_KERNELS (sdpa_efficient eager sdpa_cudnn) at $SHAPE,
#           scripts/profile_step.py as idle runs it, one process each, kernels alternately, $VALIDATION_TREE_RUNS
#           (3) rounds: which kernel's tree step is cheapest (session 16: flex's kernels 1.46 ms a step against
#           sdpa_efficient's 1.03; add flex to the list to see it again); first the CUDA tests of the tree kernels
#           and scripts/attention_bench.py (one attention call of each kernel at the tree step's shapes)
#   ahead   $VALIDATION_AHEAD_DATASET (e2e_nlg; its checkpoint from an earlier phase of this job if one trained it), the
#           captured cells $VALIDATION_AHEAD_TECHNIQUES (half+graphs,best,medusa+half+graphs) without and
#           with queue_ahead (each step queued before the previous token or verdict is read), one process each,
#           alternately, $VALIDATION_AHEAD_RUNS (2) rounds: does it pay cell by cell, beyond the spread over processes?
#           (session 17, size sweep and profile_step at 125m: 2-8% a step)
#   ab      $VALIDATION_AB_DATASET (e2e_nlg; its checkpoint as ahead finds it), the cells $VALIDATION_AB_TECHNIQUES (best)
#           under the strategy options $VALIDATION_AB_OFF ({}) and $VALIDATION_AB_ON (required), as ahead runs
#           its arms: e.g. VALIDATION_AB_TECHNIQUES=flash2+graphs,best VALIDATION_AB_ON='{"flash2": {"decode_kernel":
#           "sdpa_cudnn"}}' (session 19: +19% and +10% in pytest bench, so it became the default), or
#           VALIDATION_AB_ON='{"graphs": {"runtime": "torch.compile"}}' for the graphs runtime
#   residue scripts/profiler_residue.py, arms profiled and control alternately in new processes
#           ($VALIDATION_RESIDUE_RUNS (3) of each): does a finished profiler session slow its process?
# usage: setsid nohup scripts/validation_job.sh [PHASE...] > /tmp/job.log 2>&1 &   (default: all)
# Data in ./.data, checkpoints in ./.cache. VALIDATION_RUNS / VALIDATION_SEQUENTIAL: gate runs;
# a CPU dry run: VALIDATION_SHAPE=tiny VALIDATION_SMALL="--num-prompts 2 --max-new-tokens 8"
# VALIDATION_NEW="--min-time 1 --max-time 2 --round-time 0.2 --model tiny" VALIDATION_GATE_TECHNIQUES=naive,ss,half
# VALIDATION_SLOW=half. VALIDATION_TRAIN: datasets to train (default all three); VALIDATION_BENCH: bench's
# datasets (default all); VALIDATION_CUDA_TESTS: the test files run during training (default the CUDA-only
# ones), 0 runs none
set -uo pipefail
export PYTHONUNBUFFERED=1 LLMOPT_DATA_DIR=$PWD/.data LLMOPT_CACHE_DIR=${LLMOPT_CACHE_DIR:-$PWD/.cache} PYTHONPATH=$PWD
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # not CUBLAS_WORKSPACE_CONFIG: training sets it in its own process
JOB=${JOB:-/tmp/job}; mkdir -p "$JOB"
ALL=hf,naive,half,bf16,flash2,graphs,half+graphs,flash2+graphs,best,ss,ss+half,ss+flash2,ss+graphs,ss+half+graphs,ss+flash2+graphs
SHAPE=${VALIDATION_SHAPE:-125m}

checkpoint_of() { grep -m1 '^checkpoint: ' "$1" | cut -d' ' -f2; }
train() { python3 -m llmopt train --dataset "$1" --shape "$SHAPE" --objective ss --samples "${VALIDATION_SAMPLES:-32}" > "$JOB/train_$1.log" 2>&1; }
cli_bench() {  # `llmopt bench` with the local data into $JOB/$1.{json,out,err}, its exit status last in .out
  local name=$1; shift
  python3 -m llmopt bench --data-dir .data "$@" --progress ${VALIDATION_SMALL:-} ${VALIDATION_NEW:-} --json "$JOB/$name.json" \
    > "$JOB/$name.out" 2> "$JOB/$name.err"
  echo "exit $?" >> "$JOB/$name.out"
}
pack() { tar czf "$JOB.tgz.tmp" -C "$JOB" . && mv "$JOB.tgz.tmp" "$JOB.tgz"; }
ab() {  # NAME DATASET TECHNIQUES OFF_OPTIONS ON_OPTIONS RUNS: `pytest bench` of the cells under each arm's
  # --strategy-options, one process each, off and on alternately, into $JOB/NAME_{off,on}_I.{json,log};
  # the dataset's checkpoint from an earlier phase of this job if one trained it
  local name=$1 d=$2 techniques=$3 off=$4 on=$5 runs=$6 ckpt i arm options
  ckpt=$(checkpoint_of "$JOB/train_$d.log" 2>/dev/null)
  [ -n "$ckpt" ] || { train "$d"; ckpt=$(checkpoint_of "$JOB/train_$d.log"); }
  [ -n "$ckpt" ] || { echo "$name: no checkpoint in $JOB/train_$d.log" >&2; return; }
  for i in $(seq "$runs"); do
    for arm in off on; do
      options=$off; [ $arm = on ] && options=$on
      python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets "$d" ${VALIDATION_SMALL:-} ${VALIDATION_NEW:-} \
        --techniques "$techniques" --strategy-options "$options" \
        --benchmark-json="$JOB/${name}_${arm}_$i.json" > "$JOB/${name}_${arm}_$i.log" 2>&1
      pack
    done
  done
}

phase() {
  echo "=== $1 $(date -u +%H:%M:%S)"
  case "$1" in
    train)
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$JOB/gpu.txt" 2>&1
      local tests=${VALIDATION_CUDA_TESTS:-tests/test_fastpaths.py tests/test_spec_stream.py tests/test_hardware.py tests/test_kernel_count.py}
      [ "$tests" = 0 ] || python3 -m pytest $tests -q -rs > "$JOB/cuda_tests.log" 2>&1 &
      # two at a time: Spider's and DialogSum's trainings each hold about 74 GiB of an H200
      local todo=${VALIDATION_TRAIN:-e2e_nlg dialogsum spider}
      for d in $todo; do [ "$d" = spider ] || train "$d" & done; wait
      case " $todo " in *" spider "*) train spider ;; esac
      python3 -c "from llmopt.checkpoints import fingerprint; import sys; print(*(f'{p} {fingerprint(p)}' for p in sys.argv[1:]), sep='\n')" \
        "$(checkpoint_of "$JOB/train_e2e_nlg.log")" > "$JOB/fingerprints.txt" ;;
    cublas)
      local ckpt; ckpt=$(checkpoint_of "$JOB/train_e2e_nlg.log")
      env CUBLAS_WORKSPACE_CONFIG=:4096:8 python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets e2e_nlg \
        --techniques "${VALIDATION_GATE_TECHNIQUES:-naive,graphs,ss,best}" ${VALIDATION_SMALL:-} ${VALIDATION_NEW:-} \
        --benchmark-json="$JOB/cublas_set.json" > "$JOB/cublas_set.log" 2>&1
      python3 scripts/compare_hashes.py "$JOB/gate/runs/identical_1.json" "$JOB/cublas_set.json" "$JOB/cublas.md" \
        "CUBLAS_WORKSPACE_CONFIG unset (before) and :4096:8 (after)" ;;
    oldnew)
      local ckpt; ckpt=$(checkpoint_of "$JOB/train_e2e_nlg.log") techniques=naive,half,graphs,ss,best
      for pass in $(seq "${VALIDATION_PASSES:-2}"); do
        (cd .old && PYTHONPATH=$PWD python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets e2e_nlg \
          --techniques $techniques --rounds 10 ${VALIDATION_SMALL:-} --benchmark-json="$JOB/old_$pass.json") > "$JOB/old_$pass.log" 2>&1
        python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets e2e_nlg --techniques $techniques --rounds 10 \
          --min-time 0 --max-time 0 --round-time 0 --interleave off ${VALIDATION_SMALL:-} --benchmark-json="$JOB/new_$pass.json" > "$JOB/new_$pass.log" 2>&1
        python3 scripts/compare_hashes.py "$JOB/old_$pass.json" "$JOB/new_$pass.json" "$JOB/oldnew_$pass.md" \
          "Before (e8cc932) and after the refactor, pass $pass" > /dev/null
      done ;;
    hashes)
      local ckpt; ckpt=$(checkpoint_of "$JOB/train_e2e_nlg.log")
      (cd .old && PYTHONPATH=$PWD python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets e2e_nlg \
        --techniques "$ALL" --rounds 3 ${VALIDATION_SMALL:-} --benchmark-json="$JOB/before.json") > "$JOB/before.log" 2>&1
      python3 -m pytest bench -q --model "$ckpt" --datasets e2e_nlg --techniques "$ALL" --rounds 3 --min-time 0 \
        --max-time 0 --round-time 0 --interleave off ${VALIDATION_SMALL:-} --benchmark-json="$JOB/after.json" > "$JOB/after.log" 2>&1 ;;
    bench) cli_bench bench ${VALIDATION_BENCH:+--datasets $VALIDATION_BENCH} ;;
    order) cli_bench order --datasets e2e_nlg,dialogsum,spider --techniques naive,ss ;;
    pinned)
      # an A/B on one host: unpinned and pinned processes alternate, so drift hits both alike
      for i in $(seq "${VALIDATION_PIN_RUNS:-3}"); do
        for arm in unpinned pinned; do
          local pin=(); [ $arm = pinned ] && pin=(--cpus "${VALIDATION_PIN:-2-3}")
          python3 scripts/gate_validation.py --resume --runs "$i" --no-injections "${pin[@]}" --model "$SHAPE" \
            --techniques "${VALIDATION_GATE_TECHNIQUES:-naive,graphs,ss,best}" --out "$JOB/$arm" \
            -- ${VALIDATION_SMALL:-} ${VALIDATION_NEW:-} >> "$JOB/$arm.log" 2>&1
        done
      done ;;
    sizes)
      python3 scripts/size_sweep.py --out "$JOB/sizes.json" --shapes "${VALIDATION_SIZES:-125m,1.3b,2.7b}" ${VALIDATION_SIZES_OPTIONS:-} \
        --techniques half,half+graphs,flash2+graphs --runtime "${VALIDATION_SIZES_RUNTIMES:-cuda_graph,torch.compile}" > "$JOB/sizes.log" 2>&1 ;;
    compiled)
      local ckpt runtime; ckpt=$(checkpoint_of "$JOB/train_e2e_nlg.log")
      for runtime in cuda_graph torch.compile; do
        python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets e2e_nlg \
          --techniques "${VALIDATION_COMPILED:-half+graphs,ss+half+graphs,flash2+graphs,best}" --rounds 10 --min-time 0 --max-time 0 \
          --round-time 0 --strategy-options "{\"graphs\": {\"runtime\": \"$runtime\"}}" ${VALIDATION_SMALL:-} \
          --benchmark-json="$JOB/compiled_$runtime.json" > "$JOB/compiled_$runtime.log" 2>&1
      done ;;
    peers)
      local d ckpt
      for d in ${VALIDATION_PEERS_DATASETS:-e2e_nlg}; do
        ckpt=$(checkpoint_of "$JOB/train_$d.log" 2>/dev/null)
        [ -n "$ckpt" ] || { train "$d"; ckpt=$(checkpoint_of "$JOB/train_$d.log"); }
        [ -n "$ckpt" ] || { echo "peers: no checkpoint in $JOB/train_$d.log" >&2; continue; }
        python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets "$d" ${VALIDATION_SMALL:-} ${VALIDATION_NEW:-} \
          --techniques "${VALIDATION_PEERS:-naive,graphs,half+graphs,ss,best,pld,pld+half+graphs,sps,sps+half+graphs,medusa,medusa+half+graphs,hf,hf+pld,hf+sps}" \
          --benchmark-json="$JOB/peers_$d.json" > "$JOB/peers_$d.log" 2>&1
        pack
        # Medusa with heads that end in the base's LM head (`share_head`), beside Medusa-1's own heads
        [ "${VALIDATION_PEERS_SHARED:-1}" = 0 ] || python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets "$d" \
          ${VALIDATION_SMALL:-} ${VALIDATION_NEW:-} --techniques "${VALIDATION_PEERS_SHARED_TECHNIQUES:-naive,medusa,medusa+half+graphs}" \
          --strategy-options '{"medusa": {"share_head": true}}' --benchmark-json="$JOB/peers_shared_$d.json" > "$JOB/peers_shared_$d.log" 2>&1
        pack
      done ;;
    large)
      # Speculative Streaming and its peers where decoding is bound by the weights: E2E at $VALIDATION_LARGE
      local shape=${VALIDATION_LARGE:-1.3b} ckpt
      # no resume states: the machine is gone when the job is, and at 1.3b each costs about 25 s
      python3 -m llmopt train --dataset e2e_nlg --shape "$shape" --objective ss --samples "${VALIDATION_SAMPLES:-32}" \
        --save-every 0 ${VALIDATION_LARGE_TRAIN:-} ${VALIDATION_LARGE_SS_TRAIN:-} > "$JOB/train_e2e_nlg_$shape.log" 2>&1
      pack
      ckpt=$(checkpoint_of "$JOB/train_e2e_nlg_$shape.log")
      [ -n "$ckpt" ] || { echo "large: no checkpoint in $JOB/train_e2e_nlg_$shape.log" >&2; return; }
      local techniques=${VALIDATION_LARGE_TECHNIQUES:-naive,half+graphs,ss+half+graphs,best,medusa+half+graphs,sps+half+graphs,pld+half+graphs}
      heads=
      case ",$techniques" in *,medusa*)  # Medusa's heads only where a cell needs them
        python3 -m llmopt train --dataset e2e_nlg --shape "$shape" --objective medusa --base "$ckpt" --samples 0 \
          --save-every 0 ${VALIDATION_LARGE_TRAIN:-} > "$JOB/train_medusa_e2e_nlg_$shape.log" 2>&1
        heads=$(checkpoint_of "$JOB/train_medusa_e2e_nlg_$shape.log") ;;
      esac
      pack
      python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets e2e_nlg ${VALIDATION_SMALL:-} ${VALIDATION_NEW:-} \
        --techniques "$techniques" \
        ${heads:+--strategy-options "{\"medusa\": {\"heads\": \"$heads\"}}"} \
        --benchmark-json="$JOB/large_$shape.json" > "$JOB/large_$shape.log" 2>&1 ;;
    simulated)
      for shape in ${VALIDATION_SIM_SHAPES:-1.3b 2.7b}; do
        python3 scripts/ss_simulate.py --random-weights --model "$shape" --datasets e2e_nlg --data-dir .data \
          --technique "${VALIDATION_SIM_TECHNIQUE:-ss+half+graphs}" --topk 2,2,1,1 --num-prompts 8 \
          --accuracies 0 0.4 0.6 0.8 0.9 1 ${VALIDATION_SIM:-} --out "$JOB/simulated_$shape.json" >> "$JOB/simulated.log" 2>&1
        pack
      done ;;
    streamlr)
      for scale in ${VALIDATION_STREAMLR_SCALES:-1 10}; do
        python3 -m llmopt train --dataset e2e_nlg --shape "$SHAPE" --objective ss --samples 0 \
          --steps "${VALIDATION_STREAMLR_STEPS:-600}" --stream-lr-scale "$scale" > "$JOB/train_streamlr_$scale.log" 2>&1
        ckpt=$(checkpoint_of "$JOB/train_streamlr_$scale.log")
        [ -n "$ckpt" ] || { echo "streamlr: no checkpoint in $JOB/train_streamlr_$scale.log" >&2; continue; }
        python3 -m pytest bench -q -p no:cacheprovider --model "$ckpt" --datasets e2e_nlg --techniques naive,ss \
          --min-time 1 --max-time 5 --kernel-count off ${VALIDATION_SMALL:-} \
          --benchmark-json="$JOB/streamlr_$scale.json" > "$JOB/streamlr_$scale.log" 2>&1
        pack
      done ;;
    idle)
      # one technique per process: a profiler session can slow what runs after it in its process
      for t in $(echo "${VALIDATION_IDLE_TECHNIQUES:-half+graphs,best,medusa+half+graphs}" | tr , ' '); do
        python3 scripts/profile_step.py --shape "$SHAPE" --techniques "$t" --prompt-len 64 --new-tokens 128 \
          --trace "$JOB/trace" --json "$JOB/idle_${t//+/-}.json" ${VALIDATION_IDLE:-} >> "$JOB/idle.log" 2>&1
      done ;;
    treekernel)
      python3 -m pytest tests/test_fastpaths.py -q -rs -k "flex or decode_kernel" > "$JOB/treekernel_tests.log" 2>&1
      python3 scripts/attention_bench.py --json "$JOB/attention_bench.json" > "$JOB/attention_bench.log" 2>&1
      local i kernel
      for i in $(seq "${VALIDATION_TREE_RUNS:-3}"); do
        for kernel in ${VALIDATION_TREE_KERNELS:-sdpa_efficient eager sdpa_cudnn}; do
          python3 scripts/profile_step.py --shape "$SHAPE" --techniques best --decode-kernel "$kernel" --prompt-len 64 \
            --new-tokens 128 --json "$JOB/tree_${kernel}_$i.json" ${VALIDATION_IDLE:-} >> "$JOB/treekernel.log" 2>&1
        done
      done ;;
    ahead)
      ab ahead "${VALIDATION_AHEAD_DATASET:-e2e_nlg}" "${VALIDATION_AHEAD_TECHNIQUES:-half+graphs,best,medusa+half+graphs}" \
        '{"graphs": {"queue_ahead": false}}' '{"graphs": {"queue_ahead": true}}' "${VALIDATION_AHEAD_RUNS:-2}" ;;
    ab)
      [ -n "${VALIDATION_AB_ON:-}" ] || { echo "ab: set VALIDATION_AB_ON to the strategy options of the on arm" >&2; return; }
      ab ab "${VALIDATION_AB_DATASET:-e2e_nlg}" "${VALIDATION_AB_TECHNIQUES:-best}" "${VALIDATION_AB_OFF:-{\}}" \
        "$VALIDATION_AB_ON" "${VALIDATION_AB_RUNS:-2}" ;;
    residue)
      mkdir -p "$JOB/residue"
      for i in $(seq "${VALIDATION_RESIDUE_RUNS:-3}"); do
        for arm in profiled control; do
          python3 scripts/profiler_residue.py --arm $arm --shape "$SHAPE" --techniques naive,half,graphs \
            ${VALIDATION_RESIDUE:-} --out "$JOB/residue/${arm}_$i.json" >> "$JOB/residue.log" 2>&1
        done
      done ;;
    gate|seq)
      local sequential=0; [ "$1" = seq ] && sequential=${VALIDATION_SEQUENTIAL:-2}
      python3 scripts/gate_validation.py --resume --runs "${VALIDATION_RUNS:-5}" --sequential-runs "$sequential" \
        --model "$SHAPE" --techniques "${VALIDATION_GATE_TECHNIQUES:-naive,graphs,ss,best}" --slow "${VALIDATION_SLOW:-graphs}" \
        --out "$JOB/gate" -- ${VALIDATION_SMALL:-} ${VALIDATION_NEW:-} >> "$JOB/gate.log" 2>&1 ;;
  esac
  pack
}

for p in "${@:-train gate pinned cublas oldnew bench seq}"; do
  for one in $p; do phase "$one"; done
done
echo "=== done $(date -u +%H:%M:%S)"
