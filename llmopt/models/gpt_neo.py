"""GPT-Neo in one readable file, with a KV cache for incremental decoding.

What makes GPT-Neo GPT-Neo: learned absolute positions; layers alternate between global and
local (sliding-window) causal attention; attention scores are *not* scaled by 1/sqrt(d) and are
computed in float32 even for half-precision weights (unscaled scores overflow fp16); GELU MLP;
the LM head is tied to the token embedding. The attention kernels (eager reference, SDPA,
FlashAttention) live in attention.py.

Parameter names follow Hugging Face's `GPTNeoForCausalLM` (except `attn.attention.` -> `attn.`),
so checkpoints (config.json + safetensors) go both ways: stock transformers loads what we save
and we load any GPT-Neo checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import GPTNeoConfig

from .attention import ATTENTION, Band

# The public GPT-Neo sizes, plus a tiny one for tests and CI, and sps's draft model.
SHAPES = {
    "tiny": dict(hidden_size=64, num_layers=4, num_heads=4, window_size=16, max_position_embeddings=512),
    # sps's draft for a 125m target: a batch-1 step costs about one kernel launch per layer, so a
    # third of the layers (4 of 12) makes a draft forward about 3x cheaper, and a third of the
    # width (head size 64, as in 125m) keeps it ~15x smaller; the target's context and tokenizer
    "draft": dict(hidden_size=256, num_layers=4, num_heads=4),
    "125m": dict(hidden_size=768, num_layers=12, num_heads=12),
    "1.3b": dict(hidden_size=2048, num_layers=24, num_heads=16),
    "2.7b": dict(hidden_size=2560, num_layers=32, num_heads=20),
}
GPT2_VOCAB = 50257


def make_config(shape: str, vocab_size: int = GPT2_VOCAB, **overrides) -> GPTNeoConfig:
    """A GPT-Neo config of a named shape (global/local layers alternating, as published)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; known shapes: {', '.join(SHAPES)}")
    fields = dict(
        window_size=256, max_position_embeddings=2048, vocab_size=vocab_size,
        bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1,
    )
    fields.update(SHAPES[shape])
    fields.update(overrides)
    layers = fields["num_layers"]
    fields["attention_types"] = [[["global", "local"], layers // 2]] + ([[["global"], 1]] if layers % 2 else [])
    return GPTNeoConfig(**fields)


class KVCache:
    """Keys and values of the committed tokens, one [batch, heads, length, head_dim] pair per layer.

    Grows by concatenation (a "dynamic" cache, like transformers' DynamicCache)."""

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def __len__(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def append_transient(self, layer: int, k: torch.Tensor, v: torch.Tensor, keep: int):
        """append() for attention over extra rows that must not stay: the returned keys/values hold
        them all, the cache afterwards only its first `keep` positions (a view, no copy)."""
        k, v = self.append(layer, k, v)
        self.keep_layer(layer, keep)
        return k, v

    def keep(self, length: int, extra: torch.Tensor | None = None) -> None:
        """Keep the first `length` positions, then the positions `extra` (in that order), in every
        layer: how a speculative step commits its accepted tokens and drops the rest."""
        index = None if extra is None else self.kept_index(length, extra)
        for layer in range(len(self.keys)):
            self.keep_layer(layer, length, extra, index)

    @staticmethod
    def kept_index(length: int, extra: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.arange(length, device=extra.device), extra])

    def keep_layer(self, layer: int, length: int, extra: torch.Tensor | None = None,
                   index: torch.Tensor | None = None) -> None:
        """`keep` for one layer (layers may hold different positions, e.g. after tree pruning);
        `index`: kept_index(length, extra), if the caller has it already."""
        k, v = self.keys[layer], self.values[layer]
        if extra is None:  # a slice: a view, no copy
            self.keys[layer], self.values[layer] = k[:, :, :length], v[:, :, :length]
        else:  # one gather per tensor (launches are what a batch-1 step pays for)
            index = self.kept_index(length, extra) if index is None else index
            self.keys[layer], self.values[layer] = k.index_select(2, index), v.index_select(2, index)


class Linear(nn.Linear):
    """nn.Linear whose bias is added apart while torch.compile traces it. Inductor then sees a plain
    matrix product, which under coordinate-descent tuning (the "torch.compile:max-autotune"
    runtime) it turns, for a batch-1 row, into a tuned reduction with the bias add fused in, as
    gpt-fast's bias-free Llama gets; a biased product (addmm) it leaves to cuBLAS. Eager and
    CUDA-graph steps keep the one addmm kernel."""

    def forward(self, x):
        if self.bias is not None and torch.compiler.is_compiling():
            return F.linear(x, self.weight) + self.bias
        return super().forward(x)


class SelfAttention(nn.Module):
    def __init__(self, config: GPTNeoConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.out_proj = Linear(d, d, bias=True)

        self.qkv: torch.Tensor | None = None  # set by fuse_qkv (inference)

    def split(self, x):
        b, t, d = x.shape
        return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)

    def fuse_qkv(self) -> None:
        """One projection for queries, keys and values (one kernel instead of three: batch-1 decode is
        launch-bound); the three weights become views of the fused one, so no memory is added."""
        with torch.no_grad():
            fused = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
            d = proj.weight.shape[0]
            proj.weight = nn.Parameter(fused[i * d: (i + 1) * d], requires_grad=False)
        self.qkv = fused

    def project(self, x):
        """Queries, keys and values of x, each [batch, heads, seq, head_dim]."""
        if self.qkv is None:
            return self.split(self.q_proj(x)), self.split(self.k_proj(x)), self.split(self.v_proj(x))
        return tuple(self.split(part) for part in F.linear(x, self.qkv).chunk(3, dim=-1))

    def forward(self, x, mask, attend, cache: KVCache | None = None, layer: int = 0):
        q, k, v = self.project(x)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        y = attend(q, k, v, mask)
        b, h, t, hd = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, t, h * hd))


class MLP(nn.Module):
    def __init__(self, config: GPTNeoConfig):
        super().__init__()
        inner = config.intermediate_size or 4 * config.hidden_size
        self.c_fc = Linear(config.hidden_size, inner)
        self.c_proj = Linear(inner, config.hidden_size)
        self.approximate = "tanh" if config.activation_function == "gelu_new" else "none"
        if config.activation_function not in ("gelu_new", "gelu"):
            raise ValueError(f"unsupported activation {config.activation_function!r}")

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, config: GPTNeoConfig, attention_type: str):
        super().__init__()
        self.attention_type = attention_type  # "global" or "local"
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, mask, attend, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), mask, attend, cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPTNeo(nn.Module):
    def __init__(self, config: GPTNeoConfig, attention: str = "eager"):
        super().__init__()
        self.config = config
        self.window = config.window_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.hidden_size),
            wpe=nn.Embedding(config.max_position_embeddings, config.hidden_size),
            h=nn.ModuleList(Block(config, kind) for kind in config.attention_layers),
            ln_f=nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-Neo
        self.set_attention(attention)
        # Causal masks by position, sliced (not rebuilt) at every decode step, as HF does.
        n = config.max_position_embeddings
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        self.register_buffer("causal_mask", causal, persistent=False)
        self.register_buffer("local_mask", causal & ~causal.tril(-self.window), persistent=False)

    def fuse_qkv(self) -> "GPTNeo":
        """SelfAttention.fuse_qkv in every block (inference only: the fused weight is no parameter)."""
        for block in self.transformer.h:
            block.attn.fuse_qkv()
        return self

    def set_attention(self, name: str) -> None:
        if name not in ATTENTION:
            raise ValueError(f"unknown attention implementation {name!r}; known: {', '.join(ATTENTION)}")
        self.attention, self.attend = name, ATTENTION[name]

    # -- the forward pass, in pieces that Speculative Streaming reuses --------------------------

    def masks(self, past: int, positions: torch.Tensor, tree: torch.Tensor | None = None):
        """Boolean attention masks [new, past + new] for global and local layers (None = see all).

        `positions` are the new tokens' positions; the cache holds positions 0..past-1. `tree`
        ([new, new], optional) says which new tokens see which, for tree-shaped drafts; without it
        the new tokens are consecutive and causal."""
        t = positions.shape[-1]
        if tree is None:
            rows = slice(past, past + t)
            glob = None if t == 1 else self.causal_mask[rows, : past + t]
            return {"global": glob, "local": self.local_mask[rows, : past + t]}
        seen = torch.ones(t, past, dtype=torch.bool, device=tree.device)
        glob = torch.cat([seen, tree], dim=1)
        key_pos = torch.cat([torch.arange(past, device=tree.device), positions])
        return {"global": glob, "local": glob & (positions[:, None] - key_pos[None, :] < self.window)}

    def band_masks(self, past: int, new: int) -> dict:
        """masks() for kernels that take no mask tensor: Band descriptors [new, past + new]."""
        return {"global": Band(causal=new > 1), "local": Band(causal=True, window=self.window)}

    def forward_banded(self, ids, cache: KVCache | None = None):
        """forward() through band_masks(): what flash attention implementations need."""
        past = 0 if cache is None else len(cache)
        positions = torch.arange(past, past + ids.shape[1], device=ids.device)
        x = self.embed(ids, positions)
        return self.head(self.run_blocks(x, self.band_masks(past, ids.shape[1]), cache))

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.transformer.wte(ids) + self.transformer.wpe(positions)

    def run_blocks(self, x, masks, cache=None, layers=None, attend=None):
        """`attend`: the attention kernel (default the model's; a captured step may run its own)."""
        for i in range(len(self.transformer.h)) if layers is None else layers:
            block = self.transformer.h[i]
            x = block(x, masks[block.attention_type], attend or self.attend, cache, i)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.transformer.ln_f(x))

    def forward(self, ids, cache: KVCache | None = None, positions=None, tree=None):
        """Logits for `ids` ([batch, new]) after the cached tokens; the cache gains their keys/values."""
        past = 0 if cache is None else len(cache)
        if positions is None:
            positions = torch.arange(past, past + ids.shape[1], device=ids.device)
        x = self.embed(ids, positions)
        return self.head(self.run_blocks(x, self.masks(past, positions, tree), cache))

    def new_cache(self) -> KVCache:
        return KVCache(len(self.transformer.h))

    # -- construction and checkpoints -----------------------------------------------------------

    @classmethod
    def random(cls, config: GPTNeoConfig, seed: int = 0, device="cpu", dtype=torch.float32, **kw) -> "GPTNeo":
        """Random weights, initialised as GPT-Neo is (normal(0, 0.02), zero biases), from `seed`."""
        with torch.device(device):
            model = cls(config, **kw)
        gen = torch.Generator(device=device).manual_seed(seed)
        std = config.initializer_range
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)) and module is not model.lm_head:
                    module.weight.normal_(0.0, std, generator=gen)
                    if getattr(module, "bias", None) is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
        return model.to(dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under Hugging Face names (the tied LM head is left out, as HF does)."""
        return {
            re.sub(r"\.attn\.", ".attn.attention.", name): t.contiguous()
            for name, t in self.state_dict().items() if name != "lm_head.weight"
        }

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config["architectures"] = ["GPTNeoForCausalLM"]
        config["dtype"] = str(self.lm_head.weight.dtype).removeprefix("torch.")
        (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(self.hf_state_dict(), directory / "model.safetensors", metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu", dtype=torch.float32, **kw) -> "GPTNeo":
        """Load a Hugging Face GPT-Neo checkpoint directory (safetensors, sharded or not, or .bin)."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory} is not a GPT-Neo checkpoint: no config.json")
        config = GPTNeoConfig.from_pretrained(directory)
        if config.model_type != "gpt_neo":
            raise ValueError(f"{directory}/config.json describes a {config.model_type!r} model, not gpt_neo")
        with torch.device("meta"):
            model = cls(config, **kw)
        state = {}
        for name, tensor in read_weights(directory).items():
            if name.endswith(("attn.attention.bias", "attn.attention.masked_bias")):
                continue  # old checkpoints stored the causal masks as buffers
            state[name.replace(".attn.attention.", ".attn.")] = tensor
        state.setdefault("lm_head.weight", state["transformer.wte.weight"])
        model.load_state_dict(state, strict=False, assign=True)
        missing = [n for n, p in model.named_parameters() if p.is_meta]
        if missing:
            raise ValueError(f"{directory}: checkpoint lacks weights {missing[:5]}")
        model.lm_head.weight = model.transformer.wte.weight
        model._rebuild_buffers()
        return model.to(device=device, dtype=dtype)

    def _rebuild_buffers(self) -> None:
        n = self.config.max_position_embeddings
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        self.causal_mask = causal
        self.local_mask = causal & ~causal.tril(-self.window)


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, whatever file layout it uses."""
    if (directory / "model.safetensors").is_file():
        return load_file(directory / "model.safetensors")
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(directory / shard).items()}
    if (directory / "pytorch_model.bin").is_file():
        return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory}: no model.safetensors, safetensors index or pytorch_model.bin")


def param_bytes(model: nn.Module) -> int:
    """Bytes of the weights a decode step reads (the tied head counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


