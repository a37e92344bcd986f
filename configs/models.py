"""Model presets: ``ModelConfig`` fields by name.

``get_config('smollm2-135m')`` or ``get_config('tiny,dtype=bfloat16')`` returns a
ConfigDict; ``rlhf_jax.models.ModelConfig.from_dict`` turns it into the frozen,
validated config. Shapes of the public models are copied from their
``config.json``; random weights unless loaded with ``load_pretrained``.
"""

from __future__ import annotations

import ml_collections

from configs.common import parse_arg

_LLAMA = dict(family="llama", norm="rmsnorm", activation="silu", gated_mlp=True, position="rope")
_NEOX = dict(family="gpt_neox", norm="layernorm", norm_bias=True, norm_eps=1e-5, activation="gelu",
             gated_mlp=False, position="rope", rope_fraction=0.25, parallel_residual=True,
             qkv_bias=True, attn_out_bias=True, mlp_bias=True)

PRESETS = {
    # Random and small, for tests and the simulated world. Their few layers compile quickly
    # unrolled (scan_unroll = n_layers), which makes a CPU train step 6-8% faster.
    "tiny": dict(_LLAMA, vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                 head_dim=16, mlp_dim=128, max_seq_len=512, scan_unroll=2),
    # The benchmark model: Llama shape, ~31M parameters.
    "small": dict(_LLAMA, vocab_size=8192, d_model=512, n_layers=8, n_heads=8, n_kv_heads=2,
                  head_dim=64, mlp_dim=1408, max_seq_len=2048, scan_unroll=8),
    "smollm2-135m": dict(_LLAMA, vocab_size=49152, d_model=576, n_layers=30, n_heads=9,
                         n_kv_heads=3, head_dim=64, mlp_dim=1536, max_seq_len=8192,
                         rope_base=100000.0, tie_embeddings=True),
    "pythia-160m": dict(_NEOX, vocab_size=50304, d_model=768, n_layers=12, n_heads=12,
                        n_kv_heads=12, head_dim=64, mlp_dim=3072, max_seq_len=2048),
    "pythia-1b": dict(_NEOX, vocab_size=50304, d_model=2048, n_layers=16, n_heads=8,
                      n_kv_heads=8, head_dim=256, mlp_dim=8192, max_seq_len=2048),
    "gpt2": dict(family="gpt2", vocab_size=50257, d_model=768, n_layers=12, n_heads=12,
                 n_kv_heads=12, head_dim=64, mlp_dim=3072, max_seq_len=1024, norm="layernorm",
                 norm_bias=True, activation="gelu_tanh", gated_mlp=False, position="learned",
                 tie_embeddings=True, qkv_bias=True, attn_out_bias=True, mlp_bias=True),
    "llama3-1b": dict(_LLAMA, vocab_size=128256, d_model=2048, n_layers=16, n_heads=32,
                      n_kv_heads=8, head_dim=64, mlp_dim=8192, max_seq_len=131072,
                      rope_base=500000.0, tie_embeddings=True,
                      rope_scaling=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                        original_max_len=8192)),
    "llama-7b": dict(_LLAMA, vocab_size=32000, d_model=4096, n_layers=32, n_heads=32,
                     n_kv_heads=32, head_dim=128, mlp_dim=11008, max_seq_len=4096),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``'<preset>[,dtype=bfloat16][,param_dtype=...][,remat_policy=...]'``."""
    args = parse_arg(arg, name="tiny", dtype="float32", param_dtype="float32", remat_policy="none")
    if args.name not in PRESETS:
        raise ValueError(f"unknown model preset {args.name!r}; choose one of {sorted(PRESETS)}")
    fields = dict(PRESETS[args.name], dtype=args.dtype, param_dtype=args.param_dtype,
                  remat_policy=args.remat_policy)
    # rope_scaling may be None; ConfigDict needs its type fixed up front.
    config = ml_collections.ConfigDict(fields, type_safe=False)
    return config
