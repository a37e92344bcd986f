"""LoRA adapters: a fresh adapter changes nothing, merging reproduces the adapter model, the split."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.models import get_config
from rlhf_jax import parallel
from rlhf_jax.models import CausalLM, LoraConfig, ModelConfig, ScalarHeadModel, lora

TINY = ModelConfig.from_dict(get_config("tiny"))
ALL = ("q", "k", "v", "o", "gate", "up", "down", "lm_head", "embed")
IDS = jax.random.randint(jax.random.key(1), (2, 12), 0, TINY.vocab_size)


def init(config, seed=0):
    return nn.meta.unbox(CausalLM(config).init(jax.random.key(seed), IDS)["params"])


def randomized(params, scale=0.05):
    """Adapters set to random fractional values (a fresh B is zero)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    keys = iter(jax.random.split(jax.random.key(7), len(flat)))
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x + scale * jax.random.normal(next(keys), x.shape, x.dtype)
        if path[-1].key in lora.ADAPTER_NAMES else x, params)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("scan_layers", [True, False])
@pytest.mark.parametrize("tied", [False, True])
def test_fresh_adapters_leave_the_logits_exactly_unchanged(dtype, scan_layers, tied):
    base_config = TINY.replace(dtype=dtype, scan_layers=scan_layers, tie_embeddings=tied)
    targets = tuple(t for t in ALL if not (tied and t == "lm_head"))
    config = base_config.replace(lora=LoraConfig(rank=4, targets=targets))
    base = init(base_config)
    fresh = lora.split(init(config), config.lora)[0]
    assert lora.adapter_count(fresh) > 0
    ours = CausalLM(config).apply({"params": lora.combine(fresh, base)}, IDS)
    reference = CausalLM(base_config).apply({"params": base}, IDS)
    assert np.array_equal(np.asarray(ours), np.asarray(reference))


@pytest.mark.parametrize("tied", [False, True])
def test_merged_weights_give_the_adapter_model_logits(tied):
    base_config = TINY.replace(tie_embeddings=tied)
    targets = tuple(t for t in ALL if not (tied and t == "lm_head"))
    config = base_config.replace(lora=LoraConfig(rank=4, alpha=8.0, targets=targets))
    params = randomized(init(config))
    adapted = CausalLM(config).apply({"params": params}, IDS)
    merged = CausalLM(base_config).apply({"params": lora.merge(params, config.lora)}, IDS)
    base = CausalLM(base_config).apply({"params": lora.base(params)}, IDS)
    assert float(jnp.max(jnp.abs(adapted - base))) > 0.1  # the adapters matter
    np.testing.assert_allclose(np.asarray(merged), np.asarray(adapted), atol=1e-5)


def test_adapter_formula_against_numpy():
    """One q projection by hand: x·W + (α/r)·(x·A)·B, with A (D, r) and B (r, N, H)."""
    config = TINY.replace(lora=LoraConfig(rank=3, alpha=6.0, targets=("q",)))
    params = randomized(init(config))
    q = jax.tree.map(lambda x: np.asarray(x[0], np.float64), params["trunk"]["layers"]["attn"]["q"])
    x = np.random.RandomState(0).randn(5, TINY.d_model)
    w = q["kernel"].reshape(TINY.d_model, -1)
    expected = x @ w + 2.0 * (x @ q["lora_a"]) @ q["lora_b"].reshape(3, -1)
    merged = lora.merge(params, config.lora)["trunk"]["layers"]["attn"]["q"]["kernel"][0]
    np.testing.assert_allclose(x @ np.asarray(merged, np.float64).reshape(TINY.d_model, -1),
                               expected, rtol=1e-5, atol=1e-6)


def test_split_freezes_the_base_and_trains_adapters_and_heads():
    config = TINY.replace(lora=LoraConfig(rank=2))
    params = nn.meta.unbox(ScalarHeadModel(config).init(jax.random.key(0), IDS)["params"])
    trainable, frozen = lora.split(params, config.lora)
    names = lambda tree: {"/".join(str(k.key) for k in p)  # noqa: E731
                          for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    assert names(trainable) == {n for n in names(params)
                                if n.startswith("head/") or n.rsplit("/", 1)[1] in
                                lora.ADAPTER_NAMES}
    assert names(frozen) == names(params) - names(trainable)
    assert all(a is b for a, b in zip(jax.tree.leaves(lora.combine(trainable, frozen)),
                                      jax.tree.leaves(params)))  # joined, not copied
    assert lora.split(params, LoraConfig()) == (params, None)


def test_adapters_carry_their_kernels_logical_axes():
    config = TINY.replace(lora=LoraConfig(rank=4))
    mesh, rules = parallel.make_mesh(2, 2, 2), parallel.get_rules("fsdp_tp")
    _, shardings = parallel.abstract_state(
        lambda r: CausalLM(config).init(r, IDS)["params"], mesh, rules, jax.random.key(0))
    q = shardings["trunk"]["layers"]["attn"]["q"]
    assert q["lora_a"].spec == jax.sharding.PartitionSpec(None, "fsdp", None)  # (L, D, r)
    assert q["lora_b"].spec == jax.sharding.PartitionSpec(None, None, "tensor", None)  # (L, r, N, H)
    down = shardings["trunk"]["layers"]["mlp"]["down"]
    assert down["lora_a"].spec == jax.sharding.PartitionSpec(None, "tensor", None)  # (L, F, r)


@pytest.mark.parametrize("field, value, message", [
    ("rank", -1, "rank"), ("alpha", 0.0, "alpha"), ("dropout", 1.0, "dropout"),
    ("targets", ("q", "wq"), "targets"), ("targets", (), "targets")])
def test_bad_lora_configs_are_named(field, value, message):
    with pytest.raises(ValueError, match=f"LoraConfig.{message}"):
        LoraConfig(**{field: value, **({} if field == "rank" else {"rank": 2})})


def test_lm_head_target_of_a_tied_model_is_refused():
    with pytest.raises(ValueError, match="tied embeddings have no lm_head"):
        TINY.replace(tie_embeddings=True, lora=LoraConfig(rank=2, targets=("lm_head",)))
