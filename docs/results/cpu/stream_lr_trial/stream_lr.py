"""Does a larger learning rate for the stream embeddings make the streams learn sooner? (CPU, small shape)"""
import json, sys, torch
from llmopt import train as training

scale, steps, shape = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
real = torch.optim.AdamW

def adamw(groups, lr, **kw):
    if scale != 1.0:
        out = []
        for g in groups:
            params = g["params"]
            # the stream embeddings are the only no-decay tensor of shape [gamma, hidden]
            streams = [p for p in params if p.dim() == 2 and g["weight_decay"] == 0.0]
            rest = [p for p in params if not any(p is s for s in streams)]
            out.append({**g, "params": rest})
            if streams:
                out.append({**g, "params": streams, "lr": lr * scale})
        groups = out
    return real(groups, lr=lr, **kw)

training.torch.optim.AdamW = adamw
torch.set_num_threads(2)
recipe = training.default_recipe("e2e_nlg", shape, objective="ss", steps=steps, batch_size=32, warmup_steps=20,
                                 objective_options={"gamma": 4, "num_stream_layers": 2})
out = training.train("e2e_nlg", recipe, f"/tmp/exp/ck_{scale}_{shape}_{steps}", device="cpu", progress=False,
                     eval_every=max(steps // 4, 1))
for h in json.loads((out / "llmopt.json").read_text())["history"]:
    print(scale, h["step"], round(h["eval_loss"], 3), {k: round(v, 3) for k, v in h["eval_terms"].items()}, flush=True)
