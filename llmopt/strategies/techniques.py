"""The technique grammar: a name like `half+graphs`, `flash2+graphs`, `ss+bf16` or `best` is parsed
once, here, into a `Technique` (a precision, an attention provider, a decode runtime, drafting or
not); unknown names and impossible combinations fail here, before any work.

Techniques and what each adds:
  naive   fp32 (any dtype by option), eager attention, dynamic cache, one forward per token
  half    float16 (bfloat16 by option); bf16: bfloat16
  flash2  FlashAttention-2 kernels (fp16/bf16, CUDA): the `flash_attn` package if importable
          (flash_attn_func, window_size for GPT-Neo's local layers, softmax_scale=1.0), else SDPA
          with the FLASH_ATTENTION backend forced (option provider="flash_attn"|"sdpa_flash"); the
          provider that ran is recorded as `attention_provider`
  graphs  static KV cache, decode step captured once (llmopt/capture.py; option
          runtime="cuda_graph"|"torch.compile"|"torch.compile:max-autotune"), one fused query/key/value projection
  ss      Speculative Streaming (strategies/ss.py): composes with a precision, flash2 and graphs;
          its tree masks are arbitrary, so with flash2 its attention is SDPA's memory-efficient
          kernel (the fused kernel that takes a mask), and with graphs the whole verify-and-draft
          step is captured (spec_stream/static.py)
  pld     prompt lookup decoding (strategies/pld.py): n-gram drafts copied from the prompt and
          the output so far, verified as a chain by the plain model; composes with a precision
          and graphs (the chain's verify step captured: spec_stream/static_chain.py)
  sps     two-model speculative decoding (strategies/sps.py): a small draft GPT-Neo drafts a
          chain; composes with a precision (the draft runs in it too) and graphs
  medusa  Medusa-1 (strategies/medusa.py): heads on the last hidden state draft a tree, verified
          with the tree mask; composes with a precision and graphs
  best    a preset: the fastest composition measured, ss+flash2+graphs (fp16; see BEST)
  hf      stock transformers generate(); hf+pld and hf+sps are transformers' own prompt lookup
          (prompt_lookup_num_tokens) and assisted generation (assistant_model, the sps draft):
          the stock references for our pld and sps

Drafting methods (ss and its peers, DRAFTING) exclude one another: a step verifies one draft. The
peers' steps run eagerly over the dynamic cache, or with graphs as captured static steps
(pld+graphs, sps+graphs, medusa+graphs); with flash2 they are refused as not built yet
(PEERS_NOT_BUILT).

Groups (GROUPS, expand_techniques): a name standing for several techniques in a list, e.g.
`peers`, the methods Speculative Streaming is compared against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..capture import capture_options
from ..models.attention import flash_attn_available

TECHNIQUES = ("hf", "naive", "half", "bf16", "flash2", "graphs", "ss", "pld", "sps", "medusa", "best")
PRECISION = {"naive": torch.float32, "half": torch.float16, "bf16": torch.bfloat16}
# the fastest composition in the saved runs (NVIDIA H100, 2026-11-26: 1366 / 1410 tokens/s on E2E /
# Spider, ss+half+graphs 1374 / 1298, flash2+graphs 883 / 896)
BEST = ("ss", "flash2", "graphs")
# hf is stock transformers generate(): none of our fast paths can change it, but transformers has
# its own prompt lookup and assisted generation, the stock references for pld and sps
HF_WITH = {"pld": "prompt_lookup_num_tokens", "sps": "assistant_model"}
DRAFTING = ("ss", "pld", "sps", "medusa")  # each drafts and verifies its own way: at most one per technique
PEERS = ("pld", "sps", "medusa")  # Speculative Streaming's peers (the paper's related work), as built here
# parts a peer's step does not compose with yet (with graphs, each has a static step: spec_stream's
# static_chain.py for pld, draft_model.py for sps, medusa.py for medusa)
PEERS_NOT_BUILT = ("flash2",)
GROUPS = {"peers": PEERS}
PROVIDERS = ("auto", "flash_attn", "sdpa_flash")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    return DTYPES[dtype]


@dataclass(frozen=True)
class Technique:
    """A valid technique name and what it combines (`parts`, with the `best` preset expanded)."""

    name: str  # as written, e.g. "best" or "ss + graphs"
    parts: tuple[str, ...]

    def __contains__(self, part: str) -> bool:
        return part in self.parts

    @property
    def label(self) -> str:
        """The combination that runs, for messages: "ss+flash2+graphs" for best."""
        return "+".join(self.parts)

    @property
    def precision(self) -> str | None:
        """naive, half or bf16 where the name picks one."""
        return next((p for p in self.parts if p in PRECISION), None)

    @property
    def flash(self) -> bool:
        return "flash2" in self.parts

    @property
    def graphs(self) -> bool:
        return "graphs" in self.parts

    @property
    def ss(self) -> bool:
        return "ss" in self.parts

    @property
    def stock(self) -> bool:
        """Stock transformers generate() runs it: hf, hf+pld, hf+sps."""
        return "hf" in self.parts

    @property
    def drafting(self) -> str | None:
        """The drafting method (one of DRAFTING), or None for plain decoding."""
        return next((p for p in self.parts if p in DRAFTING), None)

    @property
    def objective(self) -> str:
        """The training objective its checkpoint needs: "ss" (multi-stream loss) or "lm"."""
        return "ss" if self.ss else "lm"


def technique_parts(name: str) -> tuple[str, ...]:
    """The '+'-separated parts of a name as written, stripped: "ss + graphs" -> ("ss", "graphs")."""
    return tuple(part.strip() for part in name.split("+"))


def parse_technique(name: str) -> Technique:
    """The technique a name combines, or ValueError saying why it cannot run."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"empty technique name {name!r}")
    parts = technique_parts(name)
    for part in parts:
        if part not in TECHNIQUES:
            where = "" if len(parts) == 1 else f" in {name!r}"
            raise ValueError(f"unknown technique {part!r}{where}; known: {', '.join(TECHNIQUES)} "
                             "(combine with '+', e.g. half+graphs)")
    dupes = sorted({p for p in parts if parts.count(p) > 1})
    if dupes:
        raise ValueError(f"{name!r}: {', '.join(dupes)} named more than once")
    if len(parts) > 1:
        if "hf" in parts and (len(parts) != 2 or not set(parts) & set(HF_WITH)):
            raise ValueError(f"{name!r}: hf is stock transformers generate(), which none of our fast paths can "
                             f"change; it combines only with pld or sps (transformers' own "
                             f"{' and '.join(HF_WITH.values())}): hf+pld, hf+sps")
        if "best" in parts:
            raise ValueError(f"{name!r}: best is a preset ({'+'.join(BEST)}) and combines with nothing")
    if parts == ("best",):
        parts = BEST
    precisions = [p for p in parts if p in PRECISION]
    if len(precisions) > 1:
        raise ValueError(f"{name!r}: conflicting precisions {' and '.join(precisions)} "
                         "(naive is fp32, half fp16, bf16 bfloat16)")
    drafting = [p for p in parts if p in DRAFTING]
    if len(drafting) > 1:
        raise ValueError(f"{name!r}: {' and '.join(drafting)} are both drafting methods; a step verifies "
                         "one draft, so they do not combine")
    peer = drafting[0] if drafting and drafting[0] in PEERS else None
    for part in PEERS_NOT_BUILT if peer else ():
        if part in parts:
            raise ValueError(f"{name!r}: {peer}+{part} is not built yet; compose {peer} with: "
                             f"{peer}+half, {peer}+bf16, {peer}+half+graphs")
    if "flash2" in parts and precisions == ["naive"]:
        raise ValueError(f"{name!r}: naive runs in float32 and FlashAttention-2 has no float32 kernels: "
                         "use flash2 (fp16), half+flash2 or bf16+flash2")
    return Technique(name, parts)


def validate_technique(name: str) -> None:
    """Raise ValueError saying why, unless get_strategy(name) can build `name` (for CLI/bench checks)."""
    parse_technique(name)


def known_technique(name: str) -> bool:
    """Whether `name` is a technique or a valid combination such as 'flash2+graphs'."""
    try:
        parse_technique(name)
    except ValueError:
        return False
    return True


def expand_techniques(names) -> list[str]:
    """Technique names with each group (GROUPS, e.g. `peers`) replaced by its members, in order,
    each once; names are not validated here (parse_technique does that)."""
    out = []
    for name in names:
        out += GROUPS.get(name.strip(), (name,))
    return list(dict.fromkeys(out))


def parts_of(name: str) -> set[str]:
    """A technique's parts, a preset expanded (best -> ss, flash2, graphs)."""
    return set(parse_technique(name).parts)


def plain_twin(technique: str, candidates, parts=parts_of) -> str | None:
    """Among `candidates` (technique names), the one a drafting `technique` should beat: its parts
    without the drafting method, captured (ss+half -> half+graphs, pld -> graphs, best ->
    flash2+graphs); a stock reference's is stock generate (hf+pld -> hf), which has no captured
    step. None for plain decoding, or when no candidate is it. `parts`: how a name is read."""
    own = parts(technique)
    if not own & set(DRAFTING):
        return None
    plain = own - set(DRAFTING)
    want = plain if "hf" in plain else plain | {"graphs"}
    return next((t for t in candidates if t != technique and parts(t) == want), None)


def technique_objective(name: str) -> str:
    """The training objective a technique's checkpoint needs: "ss" if it includes ss, else "lm"."""
    return parse_technique(name).objective


# -- the options each part brings ------------------------------------------------------------------

def resolve_dtype(technique: Technique, dtype=None) -> torch.dtype:
    """The precision of a combination: its precision technique, else fp16 with flash2, else fp32;
    a `dtype` option may refine it (half: fp16 or bf16) but not contradict it."""
    precision = technique.precision
    default = PRECISION[precision] if precision else (torch.float16 if technique.flash else torch.float32)
    chosen = default if dtype is None else parse_dtype(dtype)
    half = (torch.float16, torch.bfloat16)
    if precision == "half" and chosen not in half:
        raise ValueError(f"half precision means float16 or bfloat16, not {dtype!r}")
    if precision == "bf16" and chosen != torch.bfloat16:
        raise ValueError(f"bf16 means bfloat16, not {dtype!r}")
    if technique.flash and chosen not in half:
        raise ValueError(f"{technique.label}: FlashAttention-2 runs float16 or bfloat16 only, not "
                         f"{str(chosen).removeprefix('torch.')}")
    return chosen


def graph_options(technique: Technique, runtime: str | None, bucket: int | None,
                  max_len: int | None = None) -> tuple[str, int, int | None]:
    """The graphs runtime, bucket and max_len (validated); options given without graphs are an error.
    max_len: static cache slots (default: the model's context); fewer slots, fewer buckets to capture."""
    if (runtime is not None or bucket is not None or max_len is not None) and not technique.graphs:
        raise ValueError(f"runtime, bucket and max_len are options of graphs, which {technique.label} lacks")
    return capture_options(runtime, bucket, max_len)


def ahead_option(technique: Technique, queue_ahead: bool) -> bool:
    """The queue_ahead option (generation.decode_ahead, DraftLoop.generate_ahead), validated: a
    step can be queued before the previous one's token is read only when it needs nothing from the
    host, i.e. a captured step."""
    if not isinstance(queue_ahead, bool):
        raise ValueError(f"queue_ahead is true or false, not {queue_ahead!r}")
    if queue_ahead and not technique.graphs:  # an eager step needs its token on the host to go on
        raise ValueError(f"queue_ahead is an option of graphs, which {technique.label} lacks")
    return queue_ahead


# The attention kernels a captured flash2 step may run (option `decode_kernel`): its masks are tensors
# (a tree's are arbitrary, a static cache's unwritten slots are masked), which no flash kernel takes.
# The default is cuDNN's (or flash_attn's where it is installed): on an H100 it took E2E's
# flash2+graphs from 1,117 to 1,327 tokens/s and best from 1,891 to 2,079, the same tokens, two
# processes each (session 19). flash2's masked forwards outside a captured step (the prompt's of a
# tree decoder, an eager tree step) run the memory-efficient kernel (MASKED_FLASH_KERNEL).
DEFAULT_DECODE_KERNEL = "sdpa_cudnn"
MASKED_FLASH_KERNEL = "sdpa_efficient"
DECODE_KERNELS = (DEFAULT_DECODE_KERNEL, MASKED_FLASH_KERNEL, "eager", "flex")


def decode_kernel_option(technique: Technique, kernel: str | None) -> str | None:
    """The decode_kernel option, validated (None: the default)."""
    if kernel is not None and not (technique.flash and technique.graphs):
        raise ValueError(f"decode_kernel picks the attention kernel of a captured flash2 step, which "
                         f"{technique.label} lacks (it needs flash2 and graphs)")
    if kernel is not None and kernel not in DECODE_KERNELS:
        raise ValueError(f"unknown decode_kernel {kernel!r}; known: {', '.join(DECODE_KERNELS)}")
    return kernel


def flash_option(technique: Technique, provider: str | None) -> str:
    """The flash2 provider asked for (validated; "auto" by default)."""
    if provider is not None and not technique.flash:
        raise ValueError(f"provider is an option of flash2, which {technique.label} lacks")
    provider = provider or "auto"
    if provider not in PROVIDERS:
        raise ValueError(f"unknown flash2 provider {provider!r}; known: {', '.join(PROVIDERS)}")
    return provider


# -- what the device allows, checked in prepare() before loading anything ---------------------------

def check_device(technique: Technique, runtime: str, device: torch.device) -> None:
    """flash2 and captured graphs need a CUDA GPU: say so before loading anything."""
    if device.type != "cuda":
        if technique.flash:
            raise ValueError(f"{technique.label}: flash2 needs a CUDA GPU (FlashAttention-2 kernels), not {device}")
        if technique.graphs and runtime != "static":
            raise ValueError(f"{technique.label}: graphs captures the decode step with CUDA graphs and needs a "
                             f"CUDA GPU, not {device}")


def pick_flash_provider(technique: Technique, provider: str, device: torch.device) -> str:
    """The FlashAttention-2 provider that will run: flash_attn if importable (unless sdpa_flash is
    asked for), else SDPA's flash kernel where this GPU and build have it; else a clear error."""
    if provider in ("auto", "flash_attn") and flash_attn_available():
        return "flash_attn"
    if provider == "flash_attn":
        raise ValueError(f"{technique.label}: provider='flash_attn' but the flash_attn package cannot be imported")
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8 or not torch.backends.cuda.is_flash_attention_available():
        raise ValueError(f"{technique.label}: PyTorch's SDPA flash kernel is unavailable on this GPU/build "
                         f"(compute capability {major}.x; needs 8.0+) and flash_attn is not installed")
    return "sdpa_flash"
