"""Adapters in PEFT's format: ``adapter_config.json`` and ``adapter_model.safetensors``.

``peft.PeftModel.from_pretrained(base, directory)`` loads them on top of the
base model in transformers (the base exported with ``export_hf``). Names follow
the family's weight rules: our ``trunk/layers/attn/q`` of layer i is HF's
``model.layers.{i}.self_attn.q_proj``, whose adapters PEFT calls
``base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`` (r, in) and
``….lora_B.weight`` (out, r): ours, ``A`` (in dims…, r) and ``B`` (r, out dims…),
flattened and transposed. Modules go by their names in transformers' model
(GPT-NeoX's checkpoint tensor ``embed_out`` is its module ``lm_head``). An
embedding adapter is PEFT's ``lora_embedding_A`` (r, V) and ``lora_embedding_B``
(D, r). PEFT scales by ``lora_alpha / r`` as we do. A projection fused in the HF
layout (GPT-NeoX's ``query_key_value``) has no PEFT counterpart for separate q,
k, v adapters and is refused. So is the ``embed`` target of a model with tied
embeddings: ours adapts the lookup and the tied LM head alike, PEFT's embedding
adapter the lookup only, its LM head keeping the base table (unless the adapter
config sets ``ensure_weight_tying``, an option only recent PEFT releases know).
The merged model (``merge``, ``export_hf``) holds such adapters exactly.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import safetensors.numpy

from rlhf_jax import parallel
from rlhf_jax.checkpoints.families import family, module_name
from rlhf_jax.checkpoints.weights import get_path
from rlhf_jax.errors import ConfigError
from rlhf_jax.files import write_json
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.lora import ADAPTER_NAMES
from rlhf_jax.parallel.distributed import to_host

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."


def _owners(config: ModelConfig) -> dict[str, tuple]:
    """Our adapted module path → (its weight rule, whether it is an embedding table)."""
    owners = {}
    for rule in family(config.family, "export_peft").weight_rules(config):
        for path in rule.ours:
            owner, _, leaf = path.rpartition("/")
            if leaf in ("kernel", "embedding") and config.lora.adapts(owner.split("/")[-1]):
                owners[owner] = (rule, leaf == "embedding")
    return owners


def refusal(config: ModelConfig) -> Optional[str]:
    """Why PEFT cannot hold ``config``'s adapters as we apply them (``export_peft`` refuses them;
    the merged model holds them), or None."""
    for owner, (rule, embedding) in _owners(config).items():
        if len(rule.ours) != 1 or len(rule.hf) != 1:
            return (f"config.lora.targets: {owner} is fused with other projections in the "
                    f"{config.family} layout ({rule.hf[0]}); PEFT cannot hold its adapter: "
                    "export the merged model instead")
        if embedding and config.tie_embeddings:
            return (f"config.lora.targets={config.lora.targets}: with tied embeddings the "
                    "'embed' adapter applies to the lookup and to the LM head, but PEFT's "
                    "embedding adapter applies to the lookup only (the LM head keeps the base "
                    "table): export the merged model instead")
    return None


def _modules(config: ModelConfig) -> dict[str, tuple]:
    """Our adapted module path → (transformers' module path, ``{i}`` for the layer; whether it
    is an embedding table; whether it is per layer)."""
    why = refusal(config)
    if why:
        raise ConfigError(why)
    fam = family(config.family, "export_peft")
    return {owner: (module_name(fam, rule.hf[0]).removesuffix(".weight"), embedding,
                    rule.per_layer)
            for owner, (rule, embedding) in _owners(config).items()}


def target_modules(config: ModelConfig) -> list[str]:
    """PEFT's ``target_modules``: each module's path below the layer index (``self_attn.q_proj``)
    or, outside the layers, its whole path. PEFT adapts every module whose path ends with an
    entry, so a bare ``c_proj`` would also adapt GPT-2's ``mlp.c_proj`` beside ``attn.c_proj``."""
    return sorted({hf.split("{i}.")[-1] for hf, _, _ in _modules(config).values()})


def adapter_tensors(config: ModelConfig, adapters) -> dict[str, np.ndarray]:
    """PEFT's tensor names and float32 values for the adapters in the tree ``adapters``."""
    tensors = {}
    for owner, (hf, embedding, per_layer) in _modules(config).items():
        a, b = (np.asarray(to_host(get_path(adapters, f"{owner}/{n}")), np.float32)
                for n in ADAPTER_NAMES)
        for i in range(config.n_layers) if per_layer else [None]:
            ai, bi = (a, b) if i is None else (a[i], b[i])
            r = ai.shape[-1]
            name = PREFIX + hf.format(i=i)
            a_hf = ai.reshape(-1, r).T  # (r, in)
            b_hf = bi.reshape(r, -1).T  # (out, r)
            if embedding:
                tensors[f"{name}.lora_embedding_A"] = np.ascontiguousarray(a_hf)
                tensors[f"{name}.lora_embedding_B"] = np.ascontiguousarray(b_hf)
            else:
                tensors[f"{name}.lora_A.weight"] = np.ascontiguousarray(a_hf)
                tensors[f"{name}.lora_B.weight"] = np.ascontiguousarray(b_hf)
    return tensors


def export_peft(config: ModelConfig, adapters, directory: str, base_path: str = "") -> str:
    """Writes the adapters of ``adapters`` (a tree holding them, e.g. the trainable params) in
    PEFT's format; ``base_path``: the base model they adapt (``base_model_name_or_path``)."""
    lora = config.lora
    tensors = adapter_tensors(config, adapters)
    modules = target_modules(config)

    def write():
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{WEIGHTS}.tmp")
        safetensors.numpy.save_file(tensors, tmp, {"format": "pt"})
        os.replace(tmp, os.path.join(directory, WEIGHTS))
        write_json(os.path.join(directory, CONFIG), dict(
            peft_type="LORA", task_type="CAUSAL_LM", r=lora.rank, lora_alpha=lora.alpha,
            lora_dropout=lora.dropout, target_modules=modules, bias="none",
            fan_in_fan_out=False, inference_mode=True, use_rslora=False,
            base_model_name_or_path=base_path))

    parallel.on_process_zero(f"exported adapters {directory}", write)
    return directory
