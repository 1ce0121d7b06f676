"""Does --stream-lr-scale make a short SS training's streams *accepted*, not just lower their loss?

CPU, E2E, the `draft` shape (256 wide, 4 layers; 2 stream layers, γ = 4), batch 32, 20 warm-up
steps, STEPS steps, for each seed and stream learning-rate scale; then `llmopt bench` runs `ss`
(fp32, eager) on 32 eval prompts, up to 64 new tokens, and its accepted tokens per step are read
from the record. Run from the repository with LLMOPT_DATA_DIR set:

    python docs/results/cpu/stream_lr_trial/acceptance.py STEPS "SEEDS" "SCALES" OUT.jsonl
"""
import json
import subprocess
import sys
from pathlib import Path

import torch

from llmopt import train as training

steps, seeds, scales, out = int(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split(), Path(sys.argv[4])
torch.set_num_threads(2)
for seed in map(int, seeds):
    for scale in map(float, scales):
        recipe = training.default_recipe("e2e_nlg", "draft", objective="ss", steps=steps, batch_size=32,
                                         warmup_steps=20, seed=seed, stream_lr_scale=scale,
                                         objective_options={"gamma": 4, "num_stream_layers": 2})
        ckpt = training.train("e2e_nlg", recipe, f"/tmp/exp/acc_{steps}_{seed}_{scale}", device="cpu",
                              progress=False, eval_every=max(steps // 4, 1), save_every=10**9)
        history = json.loads((ckpt / "llmopt.json").read_text())["history"]
        record = Path(f"/tmp/exp/acc_{steps}_{seed}_{scale}.json")
        subprocess.run([sys.executable, "-m", "llmopt", "bench", "--model", str(ckpt), "--datasets", "e2e_nlg",
                        "--techniques", "ss", "--num-prompts", "32", "--max-new-tokens", "64", "--device", "cpu",
                        "--kernel-count", "off", "--json", str(record)], check=True, capture_output=True)
        cell = json.loads(record.read_text())[0]
        row = {"seed": seed, "stream_lr_scale": scale, "steps": steps, "eval_terms": history[-1]["eval_terms"],
               "accepted_per_step": cell["mean_accepted_tokens"], "per_depth": cell["acceptance_per_depth"], "quality": cell["quality"]}
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
