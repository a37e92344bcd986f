"""Masks, packing, the KV-cache path, the scalar head and the config, on small random models."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.models import PRESETS, get_config
from rlhf_jax.models import (CausalLM, KVCache, ModelConfig, ScalarHeadModel, positions_from_segments,
                             unstack_layers)
from rlhf_jax.models.matmul import matmul, weights_left_matmul

TOL = 1e-5


def tiny(**changes) -> ModelConfig:
    return ModelConfig.from_dict(get_config("tiny")).replace(**changes)


FAMILY_VARIANTS = {
    "llama": {},
    "neox": dict(family="gpt_neox", norm="layernorm", norm_bias=True, activation="gelu",
                 gated_mlp=False, rope_fraction=0.25, parallel_residual=True, qkv_bias=True,
                 attn_out_bias=True, mlp_bias=True, n_kv_heads=4),
    "gpt2": dict(family="gpt2", norm="layernorm", norm_bias=True, activation="gelu_tanh",
                 gated_mlp=False, position="learned", tie_embeddings=True, qkv_bias=True,
                 attn_out_bias=True, mlp_bias=True, n_kv_heads=4),
}


@functools.lru_cache(maxsize=None)
def _init(config, model_cls):
    ids = jnp.zeros((1, 4), jnp.int32)
    return nn.meta.unbox(jax.jit(model_cls(config).init)(jax.random.key(0), ids)["params"])


def init(config, model_cls=CausalLM):
    """Parameters of a random model (cached: tests may modify the returned copy)."""
    return jax.tree.map(lambda x: x, _init(config, model_cls))


def jitted(model):
    return jax.jit(model.apply, static_argnames=("per_token",))


def random_ids(config, shape, seed=1):
    return jax.random.randint(jax.random.key(seed), shape, 1, config.vocab_size)


@pytest.mark.parametrize("variant", sorted(FAMILY_VARIANTS))
def test_left_padding_equals_no_padding_on_real_tokens(variant):
    config = tiny(**FAMILY_VARIANTS[variant])
    params, model = init(config), CausalLM(config)
    apply = jitted(model)
    ids = random_ids(config, (1, 7))
    alone = apply({"params": params}, ids)
    padded_ids = jnp.concatenate([jnp.full((1, 5), 3), ids], axis=1)
    mask = jnp.concatenate([jnp.zeros((1, 5)), jnp.ones((1, 7))], axis=1)
    padded = apply({"params": params}, padded_ids, attention_mask=mask)
    np.testing.assert_allclose(padded[:, 5:], alone, atol=TOL)


@pytest.mark.parametrize("variant", sorted(FAMILY_VARIANTS))
def test_packed_sequences_equal_unpacked(variant):
    config = tiny(**FAMILY_VARIANTS[variant])
    params, model = init(config), CausalLM(config)
    apply = jitted(model)
    a, b, c = (random_ids(config, (1, n), seed=n) for n in (5, 4, 3))
    packed = jnp.concatenate([a, b, c, jnp.zeros((1, 2), jnp.int32)], axis=1)
    segments = jnp.asarray([[1] * 5 + [2] * 4 + [3] * 3 + [0] * 2])
    assert positions_from_segments(segments)[0, :12].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2]
    out = apply({"params": params}, packed, segment_ids=segments)
    for seq, start in ((a, 0), (b, 5), (c, 9)):
        alone = apply({"params": params}, seq)
        np.testing.assert_allclose(out[:, start:start + seq.shape[1]], alone, atol=TOL)


@pytest.mark.parametrize("variant", sorted(FAMILY_VARIANTS))
def test_kv_cache_prefill_and_decode_equal_full_forward(variant):
    config = tiny(**FAMILY_VARIANTS[variant])
    params, model = init(config), CausalLM(config)
    apply = jitted(model)
    ids = random_ids(config, (3, 10))
    mask = jnp.asarray(np.array([[1] * 10, [0] * 3 + [1] * 7, [0] * 6 + [1] * 4]))
    full = apply({"params": params}, ids, attention_mask=mask)
    prompt = 6
    logits, cache = apply({"params": params}, ids[:, :prompt], attention_mask=mask[:, :prompt],
                                cache=KVCache.init(config, 3, 16))
    steps = [logits]
    for t in range(prompt, 10):
        logits, cache = apply({"params": params}, ids[:, t:t + 1],
                                    attention_mask=mask[:, t:t + 1], cache=cache)
        steps.append(logits)
    assert int(cache.index) == 10 and cache.mask[:, 10:].sum() == 0
    decoded = jnp.concatenate(steps, axis=1)
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(decoded)[real], np.asarray(full)[real], atol=TOL)


def test_weights_left_matmul_equals_a_numpy_product():
    rng = np.random.RandomState(0)
    x, w = rng.randn(16, 48).astype(np.float32), rng.randn(48, 80).astype(np.float32)
    y = weights_left_matmul(jnp.asarray(x), jnp.asarray(w.T))
    assert y.shape == (16, 80) and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), x @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_and_its_gradients_are_two_dimensional_products(dtype):
    """x (B, T, K) · w: the value and both gradients equal NumPy's, and every product in the
    forward and backward passes is 2-D, the rows (B·T) flattened (with (B, T) apart, XLA:CPU
    transposes the cotangent for the weight gradient)."""
    config, rng = tiny(dtype=dtype), np.random.RandomState(0)
    x, w, g = rng.randn(3, 5, 48), rng.randn(48, 80), rng.randn(3, 5, 80)
    f = lambda x, w: jnp.sum(matmul(x, w, config) * g)
    value, grads = jax.value_and_grad(f, argnums=(0, 1))(jnp.asarray(x, jnp.float32),
                                                       jnp.asarray(w, jnp.float32))
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == "float32" else dict(rtol=0.05, atol=0.5)
    np.testing.assert_allclose(value, np.sum((x @ w) * g), **tol)
    np.testing.assert_allclose(grads[0], g @ w.T, **tol)
    np.testing.assert_allclose(grads[1], np.einsum("btk,btn->kn", x, g), **tol)
    jaxpr = jax.make_jaxpr(jax.grad(f, argnums=(0, 1)))(x.astype(np.float32), w.astype(np.float32))
    dots = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "dot_general"]
    assert len(dots) == 3 and all(v.aval.ndim == 2 for e in dots for v in e.invars)


def _equations(jaxpr):
    """Every equation of a jaxpr, those of its sub-jaxprs (custom_vjp, pjit) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _equations(sub)


@pytest.mark.parametrize("variant", ["llama", "gpt2"])  # gpt2: the tied head (Embed.attend)
def test_decoding_with_the_weight_as_left_operand_equals_x_times_w(variant):
    """A prefill of 3 × 6 rows and decode steps of 3 rows, with and without
    ``weights_left``; the jaxpr shows the path was taken (its barriers). The MLP and the
    head are widened past ``LARGE_WEIGHT``: smaller weights keep x·W."""
    config = tiny(**FAMILY_VARIANTS[variant], d_model=256, mlp_dim=512)
    params, ids = init(config), random_ids(config, (3, 8))
    outputs = {}
    for left in (False, True):
        model = CausalLM(config.replace(weights_left=left))
        apply = jax.jit(model.apply)
        logits, cache = apply({"params": params}, ids[:, :6], cache=KVCache.init(config, 3, 8))
        steps = [logits]
        for t in (6, 7):
            logits, cache = apply({"params": params}, ids[:, t:t + 1], cache=cache)
            steps.append(logits)
        outputs[left] = np.asarray(jnp.concatenate(steps, axis=1))
        jaxpr = str(jax.make_jaxpr(model.apply)({"params": params}, ids[:, 6:7], cache=cache))
        assert ("optimization_barrier" in jaxpr) == left
    np.testing.assert_allclose(outputs[True], outputs[False], atol=TOL)


def test_scalar_head_reads_last_real_token_and_shares_the_trunk():
    config = tiny()
    apply = jitted(ScalarHeadModel(config))
    params = init(config, ScalarHeadModel)
    assert params["head"]["kernel"].shape == (config.d_model,) and params["head"]["bias"].shape == ()
    assert jax.tree.structure(params["trunk"]) == jax.tree.structure(init(config)["trunk"])
    ids = random_ids(config, (2, 6))
    right = jnp.asarray([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    per_token = apply({"params": params}, ids, attention_mask=right, per_token=True)
    last = apply({"params": params}, ids, attention_mask=right)
    assert per_token.shape == (2, 6) and last.shape == (2,)
    np.testing.assert_allclose(last, [per_token[0, 3], per_token[1, 5]], atol=TOL)
    # The score is w·h + b on the final hidden state.
    params["head"]["bias"] = jnp.asarray(2.5)
    np.testing.assert_allclose(apply({"params": params}, ids, attention_mask=right),
                               last + 2.5, atol=TOL)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_changes_neither_loss_nor_gradients(policy):
    config = tiny()
    params, ids = init(config), random_ids(config, (2, 8))

    def loss(p, cfg):
        logits = CausalLM(cfg).apply({"params": p}, ids)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    plain = jax.value_and_grad(loss)(params, config)
    remat = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params,
                                                                 config.replace(remat_policy=policy))
    np.testing.assert_allclose(plain[0], remat[0], atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), plain[1], remat[1])


def test_dropout_only_with_a_dropout_rng():
    config = tiny(dropout_rate=0.5)
    params, ids = init(config), random_ids(config, (2, 8))
    apply = CausalLM(config).apply
    a = apply({"params": params}, ids)
    np.testing.assert_array_equal(a, apply({"params": params}, ids))
    b = apply({"params": params}, ids, rngs={"dropout": jax.random.key(3)})
    assert np.abs(np.asarray(a - b)).max() > 1e-3


def test_bfloat16_compute_keeps_float32_params_and_logits():
    config = tiny(dtype="bfloat16")
    params = init(config)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    ids = random_ids(config, (2, 8))
    logits16 = CausalLM(config).apply({"params": params}, ids)
    logits32 = CausalLM(config.replace(dtype="float32")).apply({"params": params}, ids)
    assert logits16.dtype == jnp.float32
    assert 0 < np.abs(np.asarray(logits16 - logits32)).max() < 0.05


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_param_count_matches_initialised_tree(name):
    config = ModelConfig.from_dict(get_config(name))
    shapes = jax.eval_shape(lambda: CausalLM(config).init(jax.random.key(0),
                                                          jnp.zeros((1, 1), jnp.int32)))
    leaves = jax.tree.leaves(nn.meta.unbox(shapes["params"]))
    assert sum(int(np.prod(x.shape)) for x in leaves) == config.num_params()


@pytest.mark.parametrize("field,value,message", [
    ("n_kv_heads", 3, "must divide n_heads"),
    ("family", "bert", "must be one of"),
    ("rope_fraction", 0.3, "even integer"),
    ("d_model", 0, "positive integer"),
    ("dtype", "float64", "must be one of"),
    ("remat_policy", "some", "must be one of"),
])
def test_config_validation_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}=.*{message}"):
        tiny(**{field: value})


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown fields.*hidden"):
        ModelConfig.from_dict(dict(get_config("tiny"), hidden=3))


def test_python_loop_over_layers_equals_the_scan():
    config = tiny()
    params, ids = init(config), random_ids(config, (2, 8))
    scanned = jitted(CausalLM(config))({"params": params}, ids)
    looped_config = config.replace(scan_layers=False)
    looped = jitted(CausalLM(looped_config))({"params": unstack_layers(params)}, ids)
    np.testing.assert_allclose(np.asarray(looped), np.asarray(scanned), atol=TOL)
    assert set(unstack_layers(params)["trunk"]) >= {"layers_0", "layers_1"}


def test_logit_index_computes_one_position_per_row():
    config = tiny()
    params, ids = init(config), random_ids(config, (3, 8))
    apply = jitted(CausalLM(config))
    full = apply({"params": params}, ids)
    index = jnp.asarray([7, 2, 5])
    picked = apply({"params": params}, ids, logit_index=index)
    assert picked.shape == (3, 1, config.vocab_size)
    np.testing.assert_allclose(picked[:, 0], full[jnp.arange(3), index], atol=TOL)


OUTPUT_VARIANTS = {"scan": {}, "loop": dict(scan_layers=False), "remat": dict(remat_policy="full"),
                   "one_layer": dict(n_layers=1), "three_layers_rolled": dict(n_layers=3,
                                                                              scan_unroll=1),
                   "neox": FAMILY_VARIANTS["neox"]}


@pytest.mark.parametrize("variant", sorted(OUTPUT_VARIANTS))
def test_last_layer_at_the_read_positions_equals_the_full_trunk(variant):
    """The reward (last real token), a value range and LM logits computed with the last layer
    at those positions only equal the full trunk's, and so do their gradients."""
    config = tiny(**OUTPUT_VARIANTS[variant])
    params = init(config.replace(scan_layers=True), ScalarHeadModel)
    if not config.scan_layers:
        params = unstack_layers(params)
    model = ScalarHeadModel(config)
    ids = random_ids(config, (3, 10))
    mask = jnp.ones((3, 10), bool).at[1, 7:].set(False).at[2, :3].set(False)
    last = jnp.asarray([9, 6, 9])

    def rewards(p, restricted):
        if restricted:
            return model.apply({"params": p}, ids, mask)
        return model.apply({"params": p}, ids, mask, per_token=True)[jnp.arange(3), last]

    full = model.apply({"params": params}, ids, mask, per_token=True)
    np.testing.assert_allclose(rewards(params, True), full[jnp.arange(3), last], atol=TOL)
    np.testing.assert_allclose(model.apply({"params": params}, ids, mask, per_token=True,
                                           score_range=(2, 9)), full[:, 2:9], atol=TOL)
    grads = [jax.grad(lambda p, r=r: jnp.sum(jnp.sin(rewards(p, r))))(params) for r in (True, False)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=TOL), *grads)
    lm = CausalLM(config)
    lm_params = init(config.replace(scan_layers=True))
    if not config.scan_layers:
        lm_params = unstack_layers(lm_params)
    logits = lm.apply({"params": lm_params}, ids, mask)
    np.testing.assert_allclose(lm.apply({"params": lm_params}, ids, mask, logit_range=(2, 9)),
                               logits[:, 2:9], atol=TOL)


def test_reading_one_position_per_row_skips_most_of_the_last_layer():
    """The reward's forward pass costs about one layer less than the per-token scores (the
    last layer keeps only its key and value projections): XLA's FLOP count of both (all layers
    unrolled by ``scan_unroll=0``: XLA counts a loop's body once)."""
    config = tiny(n_layers=4, scan_unroll=0)
    model, params = ScalarHeadModel(config), init(config, ScalarHeadModel)
    ids = random_ids(config, (4, 128))

    def flops(**kwargs):
        fn = jax.jit(lambda p: model.apply({"params": p}, ids, **kwargs))
        return fn.lower(params).compile().cost_analysis()["flops"]

    full, reward = flops(per_token=True), flops()
    assert 0.7 < reward / full < 0.8, (reward, full)  # 4 layers → about 3 layers and K/V


AFTER_PROMPT_VARIANTS = sorted(OUTPUT_VARIANTS) + ["gpt2"]
PROMPT_LENS, RESPONSE_LENS = [5, 2], [[4, 1, 6], [6, 3, 2]]  # K = 3 responses per prompt


def after_prompt_setup(variant, model_cls):
    """A model of ``variant``, its params, and 2 prompts (left-padded to 6) with 3 responses
    each (right-padded to 6) in both layouts: ``(prompt, prompt_mask, responses,
    response_mask)`` and whole rows (6, 12) of prompt + response, right-padded, with masks."""
    config = tiny(**dict(OUTPUT_VARIANTS.get(variant, {}), **FAMILY_VARIANTS.get(variant, {})))
    params = init(config.replace(scan_layers=True), model_cls)
    if not config.scan_layers:
        params = unstack_layers(params)
    p = r = 6
    prompt, responses = random_ids(config, (2, p), seed=2), random_ids(config, (2, 3, r), seed=3)
    prompt_mask = jnp.arange(p)[None] >= p - jnp.asarray(PROMPT_LENS)[:, None]
    response_mask = jnp.arange(r) < jnp.asarray(RESPONSE_LENS)[..., None]
    rows = np.zeros((2, 3, p + r), np.int32)
    for b in range(2):
        for k in range(3):
            ids = np.concatenate([np.asarray(prompt[b])[p - PROMPT_LENS[b]:],
                                  np.asarray(responses[b, k])[:RESPONSE_LENS[b][k]]])
            rows[b, k, :len(ids)] = ids
    rows_mask = np.arange(p + r) < (np.asarray(PROMPT_LENS)[:, None]
                                    + np.asarray(RESPONSE_LENS))[..., None]
    return (model_cls(config), params, (prompt, prompt_mask, responses, response_mask),
            (rows.reshape(6, -1), rows_mask.reshape(6, -1)))


def assert_same_values_and_grads(params, shared, whole):
    """``shared(params)`` equals ``whole(params)`` within float32 rounding, and so do the
    gradients of ``Σ w·f`` for a fixed random cotangent w (a function of logits of ~30 such as
    sin(3·f) would turn their rounding into differences of its slope), each leaf's within
    ``TOL`` of its largest entry (sums over 36 logit rows reach gradients of ~60)."""
    values = whole(params)
    np.testing.assert_allclose(shared(params), values, atol=TOL, rtol=TOL)
    w = jax.random.normal(jax.random.key(4), values.shape)
    grads = [jax.grad(lambda q, f=f: jnp.sum(w * f(q)))(params) for f in (shared, whole)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, atol=TOL * max(1.0, float(jnp.max(jnp.abs(b))))), *grads)


@pytest.mark.parametrize("variant", AFTER_PROMPT_VARIANTS)
def test_responses_scored_after_a_prompt_computed_once_equal_whole_rows(variant):
    """``score_after_prompt`` (prompt once, K responses after its cache) equals scoring each
    prompt + response as one row, and so do the gradients."""
    model, params, after, (rows, rows_mask) = after_prompt_setup(variant, ScalarHeadModel)
    shared = lambda q: model.apply({"params": q}, *after,  # noqa: E731
                                   method=ScalarHeadModel.score_after_prompt)
    whole = lambda q: model.apply({"params": q}, rows, rows_mask).reshape(2, 3)  # noqa: E731
    assert float(jnp.std(whole(params))) > 100 * TOL  # the responses score differently
    assert_same_values_and_grads(params, shared, whole)


@pytest.mark.parametrize("variant", AFTER_PROMPT_VARIANTS)
def test_response_logits_after_a_prompt_computed_once_equal_whole_rows(variant):
    """``logits_after_prompt`` [b, k, r] equals the whole row's logits at position
    ``len(prompt b) − 1 + r`` (the distribution of response token r) on every real response
    token, and so do the gradients of a function of them."""
    model, params, after, (rows, rows_mask) = after_prompt_setup(variant, CausalLM)
    real = np.asarray(after[3])  # (2, 3, 6)
    position = np.asarray(PROMPT_LENS)[:, None, None] - 1 + np.arange(6)  # (2, 1, 6)
    position = np.broadcast_to(np.where(real, position, 0), real.shape).reshape(6, 6)

    def shared(q):
        logits = model.apply({"params": q}, *after, method=CausalLM.logits_after_prompt)
        return jnp.where(real[..., None], logits, 0.0).reshape(6, 6, -1)

    def whole(q):
        logits = jnp.take_along_axis(model.apply({"params": q}, rows, rows_mask),
                                     position[..., None], axis=1)
        return jnp.where(real.reshape(6, 6)[..., None], logits, 0.0)

    assert_same_values_and_grads(params, shared, whole)


def test_a_one_token_response_after_a_prompt_takes_the_prompts_last_logits():
    """R = 1: the response chunk's own last layer has no position to run at; the logits are
    the prompt's last position's, as on the whole row."""
    model, params, (prompt, prompt_mask, responses, _), (rows, rows_mask) = after_prompt_setup(
        "scan", CausalLM)
    logits = model.apply({"params": params}, prompt, prompt_mask, responses[:, :, :1],
                         jnp.ones((2, 3, 1), bool), method=CausalLM.logits_after_prompt)
    expected = model.apply({"params": params}, prompt, prompt_mask)[:, -1]  # (2, V)
    np.testing.assert_allclose(logits[:, :, 0], jnp.repeat(expected[:, None], 3, axis=1),
                               atol=TOL)
