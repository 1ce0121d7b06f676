# next session (25 min at most after the start): #14's peers on Spider at 125m (train, 14 cells, share_head
# run), then queue_ahead's A/B on Spider's checkpoint (half+graphs, best, medusa+half+graphs; off/on x 2)
cd "$1"
mkdir -p /tmp/job
nvidia-smi > /tmp/job/gpu_smi.txt 2>&1
export JOB=/tmp/job VALIDATION_CUDA_TESTS=0 VALIDATION_NEW="--kernel-count off --min-time 6 --max-time 10"
echo "start $(date -u +%T)"
VALIDATION_PEERS_DATASETS=spider VALIDATION_PEERS_SHARED_TECHNIQUES=naive,medusa+half+graphs bash scripts/validation_job.sh peers
echo "spider done $(date -u +%T)"
VALIDATION_AHEAD_DATASET=spider bash scripts/validation_job.sh ahead
echo "done $(date -u +%T)"
