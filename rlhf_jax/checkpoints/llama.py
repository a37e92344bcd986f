"""Llama (and Qwen2, which adds q/k/v biases) in Hugging Face naming."""

from __future__ import annotations

from rlhf_jax.checkpoints.hf_config import require, rope_from_hf, rope_to_hf
from rlhf_jax.checkpoints.weights import linear, table, vector
from rlhf_jax.models.config import ModelConfig

MODEL_TYPES = ("llama", "qwen2")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
L = "model.layers.{i}."


def config_from_hf(hf: dict, where: str) -> dict:
    model_type = hf["model_type"]
    require(hf.get("hidden_act", "silu") == "silu", where, "hidden_act", "only silu is supported")
    heads = hf["num_attention_heads"]
    qkv_bias = True if model_type == "qwen2" else hf.get("attention_bias", False)
    return dict(
        family=model_type, vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"], n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        mlp_dim=hf["intermediate_size"], max_seq_len=hf["max_position_embeddings"],
        norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6), activation="silu", gated_mlp=True,
        position="rope", **rope_from_hf(hf, where),
        tie_embeddings=hf.get("tie_word_embeddings", False),
        qkv_bias=qkv_bias,
        attn_out_bias=False if model_type == "qwen2" else hf.get("attention_bias", False),
        mlp_bias=hf.get("mlp_bias", False))


def config_to_hf(cfg: ModelConfig) -> dict:
    hf = dict(
        architectures=[ARCHITECTURES[cfg.family]], model_type=cfg.family,
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, intermediate_size=cfg.mlp_dim,
        max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps, hidden_act="silu",
        rope_parameters=rope_to_hf(cfg), tie_word_embeddings=cfg.tie_embeddings)
    if cfg.family == "llama":
        hf.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    return hf


def weight_rules(cfg: ModelConfig) -> list:
    a, m = "trunk/layers/attn/", "trunk/layers/mlp/"
    rules = [
        table("trunk/embed/embedding", "model.embed_tokens.weight"),
        vector("trunk/layers/attn_norm/scale", L + "input_layernorm.weight"),
        vector("trunk/layers/mlp_norm/scale", L + "post_attention_layernorm.weight"),
        linear(a + "q/kernel", L + "self_attn.q_proj.weight"),
        linear(a + "k/kernel", L + "self_attn.k_proj.weight"),
        linear(a + "v/kernel", L + "self_attn.v_proj.weight"),
        linear(a + "o/kernel", L + "self_attn.o_proj.weight", n_contract=2),
        linear(m + "gate/kernel", L + "mlp.gate_proj.weight"),
        linear(m + "up/kernel", L + "mlp.up_proj.weight"),
        linear(m + "down/kernel", L + "mlp.down_proj.weight"),
        vector("trunk/final_norm/scale", "model.norm.weight"),
    ]
    if cfg.qkv_bias:
        rules += [vector(a + f"{p}/bias", L + f"self_attn.{p}_proj.bias") for p in "qkv"]
    if cfg.attn_out_bias:
        rules.append(vector(a + "o/bias", L + "self_attn.o_proj.bias"))
    if cfg.mlp_bias:
        rules += [vector(m + f"{p}/bias", L + f"mlp.{p}_proj.bias") for p in ("gate", "up", "down")]
    if not cfg.tie_embeddings:
        rules.append(linear("lm_head/kernel", "lm_head.weight"))
    return rules


def ignored(name: str, cfg: ModelConfig) -> bool:
    """Buffers some checkpoints carry, and a duplicate head of tied models."""
    return name.endswith("rotary_emb.inv_freq") or (cfg.tie_embeddings and name == "lm_head.weight")
