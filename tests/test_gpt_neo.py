"""Our GPT-Neo against transformers' GPTNeoForCausalLM: same logits, through the cache too."""

import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from llmopt.models.gpt_neo import GPTNeo, make_config, read_weights


def random_config(layers, heads, head_dim, window, vocab, pattern):
    kinds = [pattern[i % len(pattern)] for i in range(layers)]
    return GPTNeoConfig(
        vocab_size=vocab, hidden_size=heads * head_dim, num_layers=layers, num_heads=heads,
        attention_types=[[[k], 1] for k in kinds], window_size=window, max_position_embeddings=128,
        intermediate_size=None, bos_token_id=0, eos_token_id=0,
    )


def pair(config, seed, tmp_path):
    ours = GPTNeo.random(config, seed=seed).eval()
    with torch.no_grad():  # larger weights than GPT-Neo's init so that mistakes show in the logits
        for p in ours.parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed + p.numel()))
    ours.save_pretrained(tmp_path)
    theirs = GPTNeoForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    return ours, theirs


@settings(max_examples=25, deadline=None, derandomize=True)
@given(layers=st.integers(1, 4), heads=st.integers(1, 4), head_dim=st.sampled_from([4, 8, 16]),
       window=st.integers(1, 12), vocab=st.integers(8, 64), seq=st.integers(1, 40),
       pattern=st.sampled_from([("global", "local"), ("local",), ("global",), ("local", "global")]),
       seed=st.integers(0, 1000))
def test_logits_match_transformers(tmp_path_factory, layers, heads, head_dim, window, vocab, seq, pattern, seed):
    config = random_config(layers, heads, head_dim, window, vocab, pattern)
    ours, theirs = pair(config, seed, tmp_path_factory.mktemp("ck"))
    ids = torch.randint(0, vocab, (1, seq), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = theirs(ids).logits
        assert (ours(ids) - ref).abs().max() <= 1e-4
        # step by step through the cache: a chunked prefill, then one token at a time
        cache = ours.new_cache()
        split = seq // 2
        parts = [ours(ids[:, :split], cache)] if split else []
        parts += [ours(ids[:, i: i + 1], cache) for i in range(split, seq)]
        assert (torch.cat(parts, 1) - ref).abs().max() <= 1e-4
        assert len(cache) == seq


def test_prompt_longer_than_window_125m_layout(tmp_path):
    """The published layout (global/local alternating), a window far shorter than the prompt."""
    config = make_config("tiny", vocab_size=50, window_size=4)
    ours, theirs = pair(config, 3, tmp_path)
    ids = torch.randint(0, 50, (1, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max() <= 1e-4


def test_checkpoint_round_trip(tmp_path):
    model = GPTNeo.random(make_config("tiny", vocab_size=40), seed=5)
    model.save_pretrained(tmp_path)
    names = set(read_weights(tmp_path))
    assert "transformer.h.0.attn.attention.q_proj.weight" in names  # HF names on disk
    assert "lm_head.weight" not in names  # tied, as HF saves it
    again = GPTNeo.from_pretrained(tmp_path)
    ids = torch.randint(0, 40, (1, 20))
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))
    assert again.lm_head.weight is again.transformer.wte.weight


def test_random_init_is_seeded():
    config = make_config("tiny", vocab_size=40)
    a, b, c = GPTNeo.random(config, seed=1), GPTNeo.random(config, seed=1), GPTNeo.random(config, seed=2)
    assert torch.equal(a.transformer.wte.weight, b.transformer.wte.weight)
    assert not torch.equal(a.transformer.wte.weight, c.transformer.wte.weight)


def test_named_shapes_match_published_sizes():
    # GPT-Neo 125M with its 50257-token vocabulary has 125,198,592 parameters (tied head)
    with torch.device("meta"):
        model = GPTNeo(make_config("125m"))
    assert model.num_parameters() == 125_198_592


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown model shape"):
        make_config("7b")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        GPTNeo.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt_neo"}')
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        GPTNeo.from_pretrained(tmp_path)


def test_fused_qkv_projection_gives_the_same_logits():
    from llmopt.models.gpt_neo import GPTNeo, make_config

    model = GPTNeo.random(make_config("tiny", vocab_size=50), seed=3, dtype=torch.float64)
    ids = torch.randint(0, 50, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = model(ids)
        memory = sum(p.numel() for p in model.parameters())
        model.fuse_qkv()
        torch.testing.assert_close(model(ids), before, rtol=0, atol=1e-12)
    assert sum(p.numel() for p in model.parameters()) == memory
    attn = model.transformer.h[0].attn
    assert attn.q_proj.weight.data_ptr() == attn.qkv.data_ptr()  # views of the fused weight
