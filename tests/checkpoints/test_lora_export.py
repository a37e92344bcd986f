"""A model with LoRA adapters leaves us as transformers and PEFT read it: the merged export's
logits, and PEFT's on the exported base with our exported adapters, equal our adapter model's.

The reference models are tests/torch_reference.py's random HF models (float32); the adapters
are random, nonzero and fractional (B starts at zero, which would hide any mistake), and the
scale α/r = 1.5 is not 1. Measured differences are below 7e-7 (float32 rounding), so TOL = 1e-5
holds with room; the adapters themselves move the logits by 0.1 or more.
"""

import os

import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers
from flax import traverse_util
from peft.tuners.lora import LoraLayer

from rlhf_jax.checkpoints import export_hf, load_pretrained
from rlhf_jax.checkpoints.abstract import abstract_lm_params
from rlhf_jax.checkpoints.peft import export_peft
from rlhf_jax.errors import ConfigError
from rlhf_jax.models import CausalLM
from rlhf_jax.models.lora import LoraConfig, base, merge, split
from rlhf_jax.pipeline.layout import ADAPTER_SUFFIX
from rlhf_jax.pipeline.stage import export_policy
from tests.torch_reference import hf_logits, left_padded_batch, save_random_model

TOL = 1e-5
LINEAR = ("q", "k", "v", "o", "gate", "up", "down")
LLAMA = [f"model.layers.{{i}}.{m}" for m in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
# case -> (model of tests/torch_reference.py, our targets, the transformers modules PEFT must wrap)
CASES = {
    "llama_untied_linear_and_lm_head": ("llama", LINEAR + ("lm_head",), LLAMA + ["lm_head"]),
    "llama_untied_embed": ("llama", ("q", "o", "up", "embed"), [
        "model.embed_tokens", "model.layers.{i}.self_attn.q_proj",
        "model.layers.{i}.self_attn.o_proj", "model.layers.{i}.mlp.up_proj"]),
    "qwen2_tied_linear": ("qwen2", LINEAR, LLAMA),
    # transformers loads the checkpoints' embed_out as the module lm_head
    "gpt_neox_unfused": ("gpt_neox", ("o", "up", "down", "lm_head", "embed"), [
        "gpt_neox.embed_in", "gpt_neox.layers.{i}.attention.dense",
        "gpt_neox.layers.{i}.mlp.dense_h_to_4h", "gpt_neox.layers.{i}.mlp.dense_4h_to_h",
        "lm_head"]),
    # Conv1D modules; attn.c_proj adapted, mlp.c_proj (the same last name) not
    "gpt2_conv1d": ("gpt2", ("o", "up"), ["transformer.h.{i}.attn.c_proj",
                                          "transformer.h.{i}.mlp.c_fc"]),
}


def lora(targets) -> LoraConfig:
    return LoraConfig(rank=4, alpha=6.0, targets=targets)


def with_random_adapters(config, params, seed=0):
    """``params`` plus every adapter of ``config``, normal · 0.05 (float32)."""
    rng = np.random.default_rng(seed)
    shapes = traverse_util.flatten_dict(abstract_lm_params(config)[0])
    adapters = {k: jnp.asarray(rng.standard_normal(v.shape, np.float32) * 0.05)
                for k, v in shapes.items() if k[-1] in ("lora_a", "lora_b")}
    assert adapters
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(params), **adapters})


def our_logits(config, params, ids, mask):
    return np.asarray(CausalLM(config).apply({"params": params}, jnp.asarray(ids),
                                             attention_mask=jnp.asarray(mask)))


def torch_logits(model, ids, mask):
    """A torch model's float32 logits, positions counted from the first real token."""
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions)).logits.numpy()


def max_diff(a, b, mask):
    return float(np.abs(a - b)[mask.astype(bool)].max())


def adapted_model(name, targets, root):
    """``(config, params, ids, mask, our logits)`` of a random HF model with random adapters."""
    hf_dir = save_random_model(name, str(root / "hf"))
    config, params = load_pretrained(hf_dir)
    config = config.replace(lora=lora(targets))
    params = with_random_adapters(config, params)
    ids, mask = left_padded_batch(seed=3)
    ours = our_logits(config, params, ids, mask)
    assert max_diff(ours, hf_logits(hf_dir, ids, mask), mask) > 1000 * TOL  # adapters matter
    return config, params, ids, mask, ours


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    name, targets, modules = CASES[request.param]
    return (*adapted_model(name, targets, tmp_path_factory.mktemp(request.param)), modules)


def test_merged_export_matches_our_adapter_model(case, tmp_path):
    config, params, ids, mask, ours, _ = case
    out = export_hf(config, merge(params, config.lora), str(tmp_path / "merged"))
    assert max_diff(ours, hf_logits(out, ids, mask), mask) <= TOL


def test_peft_adapters_on_the_exported_base_match_our_adapter_model(case, tmp_path):
    config, params, ids, mask, ours, modules = case
    base_dir = export_hf(config, base(params), str(tmp_path / "base"))
    trainable, _ = split(params, config.lora)
    adapter_dir = export_peft(config, trainable, str(tmp_path / "adapter"), base_path=base_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(model, adapter_dir).eval()
    wrapped = {n.removeprefix("base_model.model.") for n, m in model.named_modules()
               if isinstance(m, LoraLayer)}
    assert wrapped == {m.format(i=i) for m in modules for i in range(config.n_layers)}
    assert max_diff(ours, torch_logits(model, ids, mask), mask) <= TOL


@pytest.fixture(scope="module")
def tied_embed(tmp_path_factory):
    """A tied Llama whose only adapter is on the embedding (ours: lookup and LM head)."""
    return adapted_model("llama_tied_llama3rope", ("embed",), tmp_path_factory.mktemp("tied"))


def test_export_peft_refuses_an_embedding_adapter_of_a_tied_model(tied_embed, tmp_path):
    config, params, *_ = tied_embed
    out = tmp_path / "adapter"
    with pytest.raises(ConfigError, match=r"config\.lora\.targets=\('embed',\).*merged model"):
        export_peft(config, params, str(out))
    assert not os.path.exists(out)


def test_the_merged_export_holds_a_tied_embedding_adapter(tied_embed, tmp_path):
    config, params, ids, mask, ours = tied_embed
    out = export_hf(config, merge(params, config.lora), str(tmp_path / "merged"))
    assert max_diff(ours, hf_logits(out, ids, mask), mask) <= TOL


def test_peft_adapts_only_the_lookup_of_a_tied_embedding(tied_embed, tmp_path):
    """Why export_peft refuses the case above: PEFT (without ``ensure_weight_tying``, which
    export_peft does not write) gives the embedding's adapter to the lookup only, its LM head
    keeping the base table. Set here through PEFT's own API, not our export; should PEFT's
    default change, this test fails and the refusal can be reconsidered."""
    config, params, ids, mask, ours = tied_embed
    embed = params["trunk"]["embed"]
    model = transformers.AutoModelForCausalLM.from_pretrained(
        export_hf(config, base(params), str(tmp_path / "base")), dtype=torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(
        r=4, lora_alpha=6.0, target_modules=["embed_tokens"], init_lora_weights=False)).eval()
    table = model.base_model.model.model.embed_tokens
    with torch.no_grad():
        table.lora_embedding_A["default"].copy_(torch.tensor(np.asarray(embed["lora_a"]).T))
        table.lora_embedding_B["default"].copy_(torch.tensor(np.asarray(embed["lora_b"]).T))
    theirs = torch_logits(model, ids, mask)
    # Ours with the lookup adapted and an untied LM head holding the base table.
    untied = config.replace(tie_embeddings=False)
    lookup_only = dict(params, lm_head={"kernel": embed["embedding"].T})
    assert max_diff(theirs, our_logits(untied, lookup_only, ids, mask), mask) <= TOL
    assert max_diff(theirs, ours, mask) > 1000 * TOL


@pytest.mark.parametrize("targets", [("q", "k", "v"), ("k", "o")])
def test_export_peft_refuses_adapters_of_gpt_neox_fused_qkv(targets, tmp_path):
    config, params = load_pretrained(save_random_model("gpt_neox", str(tmp_path / "hf")))
    config = config.replace(lora=lora(targets))
    out = tmp_path / "adapter"
    with pytest.raises(ConfigError, match=r"config\.lora\.targets.*query_key_value.*merged"):
        export_peft(config, with_random_adapters(config, params), str(out))
    assert not os.path.exists(out)


@pytest.mark.parametrize("name, targets, in_peft_format", [
    ("llama", ("q", "down"), True),
    ("gpt_neox", LINEAR, False),  # the default targets: q, k, v fused
    ("llama_tied_llama3rope", ("q", "embed"), False),
])
def test_a_stage_exports_adapters_peft_cannot_hold_merged_only(name, targets, in_peft_format,
                                                                tmp_path, capsys):
    """A finished stage writes the merged policy, and the adapters in PEFT's format where PEFT
    can hold them; elsewhere a note says why there are none (no error after the training)."""
    hf_dir = save_random_model(name, str(tmp_path / "hf"))
    config, params = load_pretrained(hf_dir)
    config = config.replace(lora=lora(targets))
    trainable, frozen = split(with_random_adapters(config, params), config.lora)
    out = str(tmp_path / "policy")
    export_policy(config, trainable, frozen, hf_dir, out, tokenizer=None)
    assert os.path.isfile(os.path.join(out, "model.safetensors"))
    assert os.path.isdir(out + ADAPTER_SUFFIX) == in_peft_format
    assert ("config.lora.targets" in capsys.readouterr().out) != in_peft_format
