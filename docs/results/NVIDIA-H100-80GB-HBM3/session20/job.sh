# session 20 (#13, about 24 min): the max-autotune CUDA test; torch.compile against cuda_graph in pytest bench (E2E,
# 2 rounds, decides the default runtime); the whole fast path by size; queue_ahead in pytest bench; a 125m profile
cd "$1"
mkdir -p /tmp/job
nvidia-smi > /tmp/job/gpu_smi.txt 2>&1
export JOB=/tmp/job VALIDATION_CUDA_TESTS=0 VALIDATION_NEW="--kernel-count off --min-time 6 --max-time 10"
echo "start $(date -u +%T)"
python3 -m pytest tests/test_fastpaths.py -q -rs -k "max_autotune or decode_kernel" > /tmp/job/tests.log 2>&1
echo "tests done $(date -u +%T)"
VALIDATION_AB_TECHNIQUES=half+graphs,flash2+graphs,best VALIDATION_AB_ON='{"graphs": {"runtime": "torch.compile"}}' \
  bash scripts/validation_job.sh ab
echo "ab done $(date -u +%T)"
PYTHONPATH=$PWD timeout 700 python3 scripts/size_sweep.py --out /tmp/job/sizes_all.json --shapes 125m,1.3b,2.7b \
  --techniques flash2+graphs --runtime cuda_graph,torch.compile,torch.compile:max-autotune --queue-ahead on > /tmp/job/sizes_all.log 2>&1
echo "sizes done $(date -u +%T)"
VALIDATION_AHEAD_TECHNIQUES=half+graphs,flash2+graphs,best bash scripts/validation_job.sh ahead
echo "ahead done $(date -u +%T)"
timeout 300 python3 scripts/profile_step.py --shape 125m --vocab 50257 --techniques flash2+graphs --runtime torch.compile:max-autotune \
  --queue-ahead --prompt-len 64 --new-tokens 128 --shapes --json /tmp/job/profile_125m_max_autotune.json > /tmp/job/profile_125m_max_autotune.log 2>&1
echo "done $(date -u +%T)"
