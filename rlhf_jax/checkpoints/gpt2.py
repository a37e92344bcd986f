"""GPT-2 in Hugging Face naming (``Conv1D`` weights stored (in, out); fused q/k/v)."""

from __future__ import annotations

import re

import jax.numpy as jnp

from rlhf_jax.checkpoints.hf_config import require
from rlhf_jax.checkpoints.weights import conv1d, fused, linear, table, vector
from rlhf_jax.models.config import ModelConfig

MODEL_TYPES = ("gpt2",)
L = "transformer.h.{i}."
MASK_BUFFER = re.compile(r"transformer\.h\.\d+\.attn\.(masked_)?bias")
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
               "gelu": "gelu"}


def config_from_hf(hf: dict, where: str) -> dict:
    act = hf.get("activation_function", "gelu_new")
    require(act in ACTIVATIONS, where, "activation_function",
            f"{act!r} is not one of {sorted(ACTIVATIONS)}")
    require(hf.get("scale_attn_weights", True), where, "scale_attn_weights", "must be true")
    require(not hf.get("scale_attn_by_inverse_layer_idx", False), where,
            "scale_attn_by_inverse_layer_idx", "is not supported")
    d, heads = hf["n_embd"], hf["n_head"]
    return dict(
        family="gpt2", vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["n_layer"],
        n_heads=heads, n_kv_heads=heads, head_dim=d // heads, mlp_dim=hf.get("n_inner") or 4 * d,
        max_seq_len=hf["n_positions"], norm="layernorm", norm_bias=True,
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), activation=ACTIVATIONS[act],
        gated_mlp=False, position="learned", tie_embeddings=hf.get("tie_word_embeddings", True),
        qkv_bias=True, attn_out_bias=True, mlp_bias=True)


def config_to_hf(cfg: ModelConfig) -> dict:
    return dict(
        architectures=["GPT2LMHeadModel"], model_type="gpt2", vocab_size=cfg.vocab_size,
        n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.mlp_dim,
        n_positions=cfg.max_seq_len, layer_norm_epsilon=cfg.norm_eps,
        activation_function="gelu" if cfg.activation == "gelu" else "gelu_new",
        tie_word_embeddings=cfg.tie_embeddings, bos_token_id=None, eos_token_id=None)


def _split_qkv_weight(w, shapes):  # (D, 3·N·H) columns ordered (3, N, H) -> 3 × (D, N, H)
    d, n, h = shapes[0]
    w = w.reshape(d, 3, n, h)
    return tuple(w[:, j] for j in range(3))


def _join_qkv_weight(q, k, v):
    return jnp.stack([q, k, v], axis=1).reshape(q.shape[0], -1)


def _split_qkv_bias(b, shapes):
    n, h = shapes[0]
    b = b.reshape(3, n, h)
    return tuple(b[j] for j in range(3))


def _join_qkv_bias(q, k, v):
    return jnp.stack([q, k, v]).reshape(-1)


def weight_rules(cfg: ModelConfig) -> list:
    a, m = "trunk/layers/attn/", "trunk/layers/mlp/"
    rules = [
        table("trunk/embed/embedding", "transformer.wte.weight"),
        table("trunk/positions/embedding", "transformer.wpe.weight"),
        vector("trunk/layers/attn_norm/scale", L + "ln_1.weight"),
        vector("trunk/layers/attn_norm/bias", L + "ln_1.bias"),
        vector("trunk/layers/mlp_norm/scale", L + "ln_2.weight"),
        vector("trunk/layers/mlp_norm/bias", L + "ln_2.bias"),
        fused(tuple(a + f"{p}/kernel" for p in "qkv"), L + "attn.c_attn.weight",
              _split_qkv_weight, _join_qkv_weight),
        fused(tuple(a + f"{p}/bias" for p in "qkv"), L + "attn.c_attn.bias",
              _split_qkv_bias, _join_qkv_bias),
        conv1d(a + "o/kernel", L + "attn.c_proj.weight", n_contract=2),
        vector(a + "o/bias", L + "attn.c_proj.bias"),
        conv1d(m + "up/kernel", L + "mlp.c_fc.weight"),
        vector(m + "up/bias", L + "mlp.c_fc.bias"),
        conv1d(m + "down/kernel", L + "mlp.c_proj.weight"),
        vector(m + "down/bias", L + "mlp.c_proj.bias"),
        vector("trunk/final_norm/scale", "transformer.ln_f.weight"),
        vector("trunk/final_norm/bias", "transformer.ln_f.bias"),
    ]
    if not cfg.tie_embeddings:
        rules.append(linear("lm_head/kernel", "lm_head.weight"))
    return rules


def canonical_name(name: str) -> str:
    """Checkpoints of the bare ``GPT2Model`` (the original ``gpt2``) lack the prefix."""
    return name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name


def ignored(name: str, cfg: ModelConfig) -> bool:
    """Causal-mask buffers older checkpoints saved, and a duplicate head of tied models."""
    return bool(MASK_BUFFER.fullmatch(name)) or (cfg.tie_embeddings and name == "lm_head.weight")
