"""GGUF import on small synthetic files: llama.cpp's tensor names and q/k permutation, and errors."""

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from rlhf_jax.checkpoints import load_pretrained, read_hf_config
from rlhf_jax.models import CausalLM
from tests.torch_reference import left_padded_batch, save_random_model

TO_GGUF = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
           "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
           "mlp.down_proj": "ffn_down"}


def llama_cpp_permute(w, n_heads):
    """llama.cpp's conversion of q/k rows: (N, 2, H/2) halves interleaved to (N, H/2, 2)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def gguf_name(name):
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if name in fixed:
        return fixed[name]
    _, _, layer, rest = name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{TO_GGUF[module]}.{kind}"


def write_gguf(hf_dir, path, arch="llama"):
    hf, config = read_hf_config(hf_dir)
    tensors = safetensors.numpy.load_file(f"{hf_dir}/model.safetensors")
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(config.n_layers)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.d_model)
    writer.add_feed_forward_length(config.mlp_dim)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_rope_freq_base(config.rope_base)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_vocab_size(config.vocab_size)
    for name, w in tensors.items():
        if name.endswith("q_proj.weight"):
            w = llama_cpp_permute(w, config.n_heads)
        elif name.endswith("k_proj.weight"):
            w = llama_cpp_permute(w, config.n_kv_heads)
        writer.add_tensor(gguf_name(name), np.ascontiguousarray(w, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_random_model("llama", str(tmp_path_factory.mktemp("llama")))


def test_gguf_equals_the_checkpoint_it_was_converted_from(llama_dir, tmp_path):
    path = write_gguf(llama_dir, str(tmp_path / "m.gguf"))
    config, params = load_pretrained(path)
    hf_config, hf_params = load_pretrained(llama_dir)
    assert config.norm_eps == pytest.approx(hf_config.norm_eps, rel=1e-6)  # GGUF stores float32
    assert config == hf_config.replace(norm_eps=config.norm_eps)
    ids, mask = left_padded_batch()
    model = CausalLM(config)
    a = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    b = model.apply({"params": hf_params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_unknown_gguf_architecture(llama_dir, tmp_path):
    path = write_gguf(llama_dir, str(tmp_path / "m.gguf"), arch="bert")
    with pytest.raises(ValueError, match=r"m\.gguf: unknown architecture general\.architecture='bert'"):
        load_pretrained(path)


def test_a_rewritten_file_is_read_anew(llama_dir, tmp_path):
    """Readers are kept per process (open_gguf), keyed by the file's modification time."""
    path = write_gguf(llama_dir, str(tmp_path / "m.gguf"))
    load_pretrained(path)
    write_gguf(llama_dir, path, arch="bert")
    with pytest.raises(ValueError, match="unknown architecture general.architecture='bert'"):
        load_pretrained(path)
