"""Mapping between Hugging Face tensors and our parameter tree, one parameter at a time.

A family (``llama.py``, ``gpt_neox.py``, ``gpt2.py``) lists ``WeightRule``s. A
rule ties one or more of our parameters (paths like
``trunk/layers/attn/q/kernel``) to one or more HF tensors (names with ``{i}``
for the layer index) and converts both ways per layer; stacked layer
parameters are assembled layer by layer. Loading keeps at most one of our
parameters on the host at a time, and places it straight into its sharding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterator, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.errors import CheckpointError
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.parallel.distributed import to_host

Convert = Callable[..., tuple]


@dataclasses.dataclass(frozen=True)
class WeightRule:
    ours: tuple[str, ...]  # our parameter paths, '/'-separated
    hf: tuple[str, ...]  # HF tensor names; '{i}' marks a per-layer tensor
    to_ours: Convert  # (*hf_tensors, shapes=our per-layer shapes) -> our tensors
    to_hf: Convert  # (*our_tensors) -> hf tensors

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf[0]


def _prod(shape: Sequence[int]) -> int:
    return math.prod(shape)


def linear(ours: str, hf: str, n_contract: int = 1) -> WeightRule:
    """A torch ``nn.Linear`` weight (out, in) ↔ our kernel (in dims..., out dims...)."""
    return WeightRule(
        (ours,), (hf,),
        to_ours=lambda w, shapes: (w.T.reshape(shapes[0]),),
        to_hf=lambda k: (k.reshape(_prod(k.shape[:n_contract]), -1).T,))


def conv1d(ours: str, hf: str, n_contract: int = 1) -> WeightRule:
    """A GPT-2 ``Conv1D`` weight (in, out) ↔ our kernel (in dims..., out dims...)."""
    return WeightRule(
        (ours,), (hf,),
        to_ours=lambda w, shapes: (w.reshape(shapes[0]),),
        to_hf=lambda k: (k.reshape(_prod(k.shape[:n_contract]), -1),))


def vector(ours: str, hf: str) -> WeightRule:
    """A flat HF vector ↔ ours of any shape (norm scales, biases: q bias is (N, H))."""
    return WeightRule((ours,), (hf,), to_ours=lambda w, shapes: (w.reshape(shapes[0]),),
                      to_hf=lambda x: (x.reshape(-1),))


def table(ours: str, hf: str) -> WeightRule:
    """A tensor stored identically (embedding tables)."""
    return WeightRule((ours,), (hf,), to_ours=lambda w, shapes: (w,), to_hf=lambda x: (x,))


def fused(ours: tuple[str, ...], hf: str, split: Callable, join: Callable) -> WeightRule:
    """One HF tensor holding several of ours (a fused q/k/v projection)."""
    return WeightRule(tuple(ours), (hf,), to_ours=lambda w, shapes: split(w, shapes),
                      to_hf=lambda *xs: (join(*xs),))


def get_path(tree: Mapping, path: str):
    """The leaf of a nested dict at a '/'-separated path (``trunk/layers/attn/q/kernel``)."""
    for key in path.split("/"):
        tree = tree[key]
    return tree


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _paths(tree: Mapping, prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _paths(value, path + "/")
        else:
            yield path


def expected_hf_shapes(rule: WeightRule, our_shapes: Sequence[tuple[int, ...]]) -> list[tuple]:
    """The HF shapes our per-layer shapes imply, by tracing ``to_hf`` abstractly."""
    outs = jax.eval_shape(rule.to_hf, *[jax.ShapeDtypeStruct(s, jnp.float32) for s in our_shapes])
    return [tuple(o.shape) for o in outs]


def load_params(rules: Sequence[WeightRule], read: Callable[[str], np.ndarray],
                shapes_of: Callable[[str], tuple[int, ...]], abstract: Mapping,
                config: ModelConfig, where: str, ignore: Callable[[str], bool],
                available: Sequence[str], shardings: Optional[Mapping] = None) -> dict:
    """Builds our parameter tree from HF tensors.

    ``read(name)`` returns one HF tensor, ``shapes_of(name)`` its shape without
    reading it, ``abstract`` is our abstract parameter tree (shapes), ``where``
    names the checkpoint in errors. Every parameter of ``abstract`` must be
    covered and every available tensor used (or ``ignore``d).
    """
    params: dict = {}
    used: set[str] = set()
    covered = {path for rule in rules for path in rule.ours}
    missing_rules = sorted(set(_paths(abstract)) - covered)
    if missing_rules:
        raise CheckpointError(f"{where}: no conversion rule for parameters {missing_rules}")
    available = set(available)
    for rule in rules:
        full_shapes = [tuple(get_path(abstract, p).shape) for p in rule.ours]
        layer_shapes = [s[1:] if rule.per_layer else s for s in full_shapes]
        want = expected_hf_shapes(rule, layer_shapes)
        layers = range(config.n_layers) if rule.per_layer else [None]
        stacked = [np.empty(s, np.float32) for s in full_shapes]
        for i in layers:
            names = [n.format(i=i) for n in rule.hf]
            for name, shape in zip(names, want):
                if name not in available:
                    raise CheckpointError(f"{where}: tensor {name!r} is missing")
                got = tuple(shapes_of(name))
                if got != shape:
                    raise CheckpointError(
                        f"{where}: tensor {name!r} has shape {got}, but the config implies "
                        f"{shape} (vocab_size={config.vocab_size}, d_model={config.d_model}, "
                        f"n_heads={config.n_heads}, n_kv_heads={config.n_kv_heads}, "
                        f"head_dim={config.head_dim}, mlp_dim={config.mlp_dim})")
            used.update(names)
            outs = rule.to_ours(*[np.asarray(read(n), np.float32) for n in names],
                                shapes=layer_shapes)
            for buf, out in zip(stacked, outs):
                if i is None:
                    buf[...] = out
                else:
                    buf[i] = out
        for path, buf in zip(rule.ours, stacked):
            dtype = get_path(abstract, path).dtype
            sharding = None if shardings is None else get_path(shardings, path)
            _set(params, path, _place(buf.astype(dtype), sharding))
    unused = sorted(n for n in available - used if not ignore(n))
    if unused:
        raise CheckpointError(f"{where}: tensors not used by a {config.family} model: "
                              f"{unused[:8]}{' ...' if len(unused) > 8 else ''}")
    return params


def _place(x: np.ndarray, sharding) -> jax.Array:
    if sharding is None:
        return jax.device_put(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def export_tensors(rules: Sequence[WeightRule], params: Mapping,
                   config: ModelConfig) -> Iterator[tuple[str, np.ndarray]]:
    """Yields ``(hf_name, tensor)`` pairs from our parameters, one rule at a time."""
    for rule in rules:
        ours = [np.asarray(to_host(get_path(params, p)), np.float32) for p in rule.ours]
        layers = range(config.n_layers) if rule.per_layer else [None]
        for i in layers:
            outs = rule.to_hf(*[x if i is None else x[i] for x in ours])
            for name, out in zip(rule.hf, outs):
                yield name.format(i=i), np.ascontiguousarray(out)
