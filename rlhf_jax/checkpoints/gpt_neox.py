"""GPT-NeoX / Pythia in Hugging Face naming (fused q/k/v laid out head by head)."""

from __future__ import annotations

import jax.numpy as jnp

from rlhf_jax.checkpoints.hf_config import require, rope_from_hf, rope_to_hf
from rlhf_jax.checkpoints.weights import fused, linear, table, vector
from rlhf_jax.models.config import ModelConfig

MODEL_TYPES = ("gpt_neox",)
L = "gpt_neox.layers.{i}."
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh"}


def config_from_hf(hf: dict, where: str) -> dict:
    act = hf.get("hidden_act", "gelu")
    require(act in ACTIVATIONS, where, "hidden_act", f"{act!r} is not one of {sorted(ACTIVATIONS)}")
    heads, d = hf["num_attention_heads"], hf["hidden_size"]
    bias = hf.get("attention_bias", True)
    return dict(
        family="gpt_neox", vocab_size=hf["vocab_size"], d_model=d,
        n_layers=hf["num_hidden_layers"], n_heads=heads, n_kv_heads=heads, head_dim=d // heads,
        mlp_dim=hf["intermediate_size"], max_seq_len=hf["max_position_embeddings"],
        norm="layernorm", norm_bias=True, norm_eps=hf.get("layer_norm_eps", 1e-5),
        activation=ACTIVATIONS[act], gated_mlp=False, position="rope", **rope_from_hf(hf, where),
        parallel_residual=hf.get("use_parallel_residual", True),
        tie_embeddings=hf.get("tie_word_embeddings", False), qkv_bias=bias, attn_out_bias=bias,
        mlp_bias=True)


def config_to_hf(cfg: ModelConfig) -> dict:
    return dict(
        architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, intermediate_size=cfg.mlp_dim,
        max_position_embeddings=cfg.max_seq_len, layer_norm_eps=cfg.norm_eps,
        hidden_act="gelu" if cfg.activation == "gelu" else "gelu_new",
        rope_parameters=rope_to_hf(cfg), use_parallel_residual=cfg.parallel_residual,
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=cfg.qkv_bias)


def _split_qkv_weight(w, shapes):  # (N·3·H, D) rows ordered (N, 3, H) -> 3 × (D, N, H)
    d, n, h = shapes[0]
    w = w.reshape(n, 3, h, d)
    return tuple(w[:, j].transpose(2, 0, 1) for j in range(3))


def _join_qkv_weight(q, k, v):
    d, n, h = q.shape
    return jnp.stack([q, k, v], axis=2).transpose(1, 2, 3, 0).reshape(n * 3 * h, d)


def _split_qkv_bias(b, shapes):  # (N·3·H,) -> 3 × (N, H)
    n, h = shapes[0]
    b = b.reshape(n, 3, h)
    return tuple(b[:, j] for j in range(3))


def _join_qkv_bias(q, k, v):
    return jnp.stack([q, k, v], axis=1).reshape(-1)


def weight_rules(cfg: ModelConfig) -> list:
    a, m = "trunk/layers/attn/", "trunk/layers/mlp/"
    qkv = tuple(a + f"{p}/kernel" for p in "qkv")
    rules = [
        table("trunk/embed/embedding", "gpt_neox.embed_in.weight"),
        vector("trunk/layers/attn_norm/scale", L + "input_layernorm.weight"),
        vector("trunk/layers/attn_norm/bias", L + "input_layernorm.bias"),
        vector("trunk/layers/mlp_norm/scale", L + "post_attention_layernorm.weight"),
        vector("trunk/layers/mlp_norm/bias", L + "post_attention_layernorm.bias"),
        fused(qkv, L + "attention.query_key_value.weight", _split_qkv_weight, _join_qkv_weight),
        linear(a + "o/kernel", L + "attention.dense.weight", n_contract=2),
        linear(m + "up/kernel", L + "mlp.dense_h_to_4h.weight"),
        vector(m + "up/bias", L + "mlp.dense_h_to_4h.bias"),
        linear(m + "down/kernel", L + "mlp.dense_4h_to_h.weight"),
        vector(m + "down/bias", L + "mlp.dense_4h_to_h.bias"),
        vector("trunk/final_norm/scale", "gpt_neox.final_layer_norm.weight"),
        vector("trunk/final_norm/bias", "gpt_neox.final_layer_norm.bias"),
    ]
    if cfg.qkv_bias:
        rules.append(fused(tuple(a + f"{p}/bias" for p in "qkv"),
                           L + "attention.query_key_value.bias", _split_qkv_bias, _join_qkv_bias))
    if cfg.attn_out_bias:
        rules.append(vector(a + "o/bias", L + "attention.dense.bias"))
    if not cfg.tie_embeddings:
        rules.append(linear("lm_head/kernel", "embed_out.weight"))
    return rules


def module_name(name: str) -> str:
    """transformers (5.x) loads the checkpoints' ``embed_out`` into its module ``lm_head``."""
    return "lm_head." + name.removeprefix("embed_out.") if name.startswith("embed_out.") else name


def ignored(name: str, cfg: ModelConfig) -> bool:
    """Rotary and causal-mask buffers that older checkpoints saved."""
    return name.endswith(("rotary_emb.inv_freq", "attention.bias", "attention.masked_bias"))
