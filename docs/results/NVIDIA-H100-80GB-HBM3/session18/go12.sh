# the last ~4 minutes of session 18: best's tree step on each attention kernel (#13), one process each, kernels alternately
cd "$1"; J=/tmp/tk; mkdir -p $J; nvidia-smi > $J/gpu.txt 2>&1
pack() { (cd $J && tar czf "$OUT/tk.tgz" .); }
for i in 1 2; do
  for kernel in sdpa_cudnn eager sdpa_efficient; do
    echo "$kernel $i $(date -u +%T)" >> $J/treekernel.log
    python3 scripts/profile_step.py --shape 125m --techniques best --tree-kernel $kernel --prompt-len 64 \
      --new-tokens 128 --json $J/tree_${kernel}_$i.json >> $J/treekernel.log 2>&1
    pack
  done
done
python3 scripts/attention_bench.py --json $J/attention_bench.json > $J/attention_bench.log 2>&1; pack
echo done
