"""Generation: exact log-probabilities, stops, determinism, sharding and no recompilation."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.models import get_config
from rlhf_jax import parallel
from rlhf_jax.models import CausalLM, ModelConfig
from rlhf_jax.sampling import SamplingConfig, generate, sampling_logits
from rlhf_jax.sampling.generate import _generate

CONFIG = ModelConfig.from_dict(get_config("tiny")).replace(vocab_size=64)


@functools.lru_cache(maxsize=None)
def _params(config):
    params = CausalLM(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
    # Larger weights than the default init give peaked, far-from-uniform distributions.
    return jax.tree.map(lambda x: x * 4.0, nn.meta.unbox(params))


def prompts(batch=4, length=9, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, CONFIG.vocab_size, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    for row in range(batch):
        mask[row, :row * 2] = 0  # left padding of 0, 2, 4, ... tokens
    return jnp.asarray(np.where(mask, ids, 0)), jnp.asarray(mask)


def teacher_forced_logits(samples, config=CONFIG):
    return CausalLM(config).apply({"params": _params(config)}, samples.sequences,
                                  attention_mask=samples.sequence_mask)


def response_logits(samples):
    """Logits that predicted each response token: positions P-1 … P+N-2 of the full sequence."""
    p, n = samples.prompt_length, samples.response.shape[1]
    return teacher_forced_logits(samples)[:, p - 1:p + n - 1]


def frequent_token(ids, mask):
    """A token the model emits often, to use as a stop token so rows stop at different times."""
    s = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(1),
                 SamplingConfig(max_new_tokens=16))
    values, counts = np.unique(np.asarray(s.response), return_counts=True)
    return int(values[np.argmax(counts)])


def test_raw_logprobs_equal_a_teacher_forced_forward_pass():
    ids, mask = prompts()
    stop = frequent_token(ids, mask)
    config = SamplingConfig(max_new_tokens=16, stop_tokens=(stop,), pad_token=0)
    s = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(2), config)
    rm = np.asarray(s.response_mask)
    lengths = rm.sum(1)
    assert len(set(lengths.tolist())) > 1 and lengths.min() < 16  # early stops, ragged
    ref = jax.nn.log_softmax(response_logits(s), axis=-1)
    ref = np.take_along_axis(np.asarray(ref), np.asarray(s.response)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(s.raw_logprobs)[rm == 1], ref[rm == 1], atol=1e-4)
    assert np.all(np.asarray(s.raw_logprobs)[rm == 0] == 0)
    # Temperature 1 and no filters: the sampling distribution is the model's.
    np.testing.assert_allclose(np.asarray(s.logprobs), np.asarray(s.raw_logprobs), atol=1e-5)


def test_sampling_logprobs_are_those_of_the_filtered_distribution():
    ids, mask = prompts()
    config = SamplingConfig(max_new_tokens=10, temperature=0.7, top_k=20, top_p=0.9)
    s = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(3), config)
    filtered = jax.nn.log_softmax(sampling_logits(response_logits(s), config), axis=-1)
    ref = np.take_along_axis(np.asarray(filtered), np.asarray(s.response)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(s.logprobs), ref, atol=1e-4)
    assert np.all(np.isfinite(np.asarray(s.logprobs)))
    assert np.abs(np.asarray(s.logprobs) - np.asarray(s.raw_logprobs)).max() > 1e-2


def test_response_mask_and_padding_after_the_first_stop():
    ids, mask = prompts()
    stop = frequent_token(ids, mask)
    config = SamplingConfig(max_new_tokens=16, stop_tokens=(stop, 5), pad_token=63)
    s = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(2), config)
    for row, (tokens, m) in enumerate(zip(np.asarray(s.response), np.asarray(s.response_mask))):
        n = int(m.sum())
        assert np.all(m[:n] == 1) and np.all(m[n:] == 0)
        stops = [i for i, t in enumerate(tokens[:n]) if t in (stop, 5)]
        assert stops in ([], [n - 1]), row  # only the last kept token may be a stop
        assert n == 16 or stops == [n - 1]
        assert np.all(tokens[n:] == 63)
    p = s.prompt_length  # the prompt, left-padded further to its bucket
    np.testing.assert_array_equal(np.asarray(s.sequences[:, p - ids.shape[1]:p]), np.asarray(ids))
    assert np.all(np.asarray(s.sequence_mask[:, :p - ids.shape[1]]) == 0)
    np.testing.assert_array_equal(np.asarray(s.sequence_mask[:, s.prompt_length:]),
                                  np.asarray(s.response_mask))


def test_min_new_tokens_masks_stops_and_all_stopped_rows_end_the_loop():
    ids, mask = prompts()
    stop = frequent_token(ids, mask)
    config = SamplingConfig(max_new_tokens=12, stop_tokens=(stop,), min_new_tokens=6)
    s = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(2), config)
    tokens = np.asarray(s.response)
    assert not np.any(tokens[:, :6] == stop)
    assert np.all(np.asarray(s.response_mask)[:, :6] == 1)


def test_deterministic_given_the_key():
    ids, mask = prompts()
    config = SamplingConfig(max_new_tokens=8)
    a = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(7), config)
    b = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(7), config)
    c = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(8), config)
    np.testing.assert_array_equal(np.asarray(a.response), np.asarray(b.response))
    assert np.any(np.asarray(a.response) != np.asarray(c.response))


def test_greedy_equals_argmax_of_a_full_forward_pass():
    ids, mask = prompts()
    s = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(0),
                 SamplingConfig(max_new_tokens=8, temperature=0.0))
    np.testing.assert_array_equal(np.asarray(jnp.argmax(response_logits(s), -1)),
                                  np.asarray(s.response))
    assert np.all(np.asarray(s.logprobs) == 0)


def test_same_shapes_compile_once_and_prompt_lengths_share_a_bucket():
    config = SamplingConfig(max_new_tokens=4, prompt_buckets=(16, 32))
    before = _generate._cache_size()
    for length, seed in ((9, 0), (9, 1), (12, 2), (16, 3)):
        ids, mask = prompts(length=length, seed=seed)
        s = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(seed), config)
        assert s.prompt_length == 16
    assert _generate._cache_size() == before + 1
    ids, mask = prompts(length=20)
    assert generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(0), config).prompt_length == 32
    assert _generate._cache_size() == before + 2
    with pytest.raises(ValueError, match="exceeds the largest bucket 32"):
        generate(CONFIG, _params(CONFIG), *prompts(length=33), jax.random.key(0), config)


def test_decode_steps_on_cpu_multiply_with_the_weight_as_left_operand():
    """``ModelConfig.weights_left`` on CPU: the compiled program holds its barriers (the
    decode steps' logits equal x·W's: tests/models/test_transformer.py)."""
    ids, mask = prompts()
    model_config = CONFIG.replace(mlp_dim=1024)  # MLP weights past matmul.LARGE_WEIGHT
    text = _generate.lower(_params(model_config), ids, mask, jax.random.key(0),
                           model_config=model_config,
                           config=SamplingConfig(max_new_tokens=4)).as_text()
    assert ("optimization_barrier" in text) == (jax.default_backend() == "cpu")


def test_right_padded_prompts_give_the_same_greedy_tokens():
    ids, mask = prompts()
    right_ids = np.zeros_like(ids)
    right_mask = np.zeros_like(mask)
    for row in range(ids.shape[0]):
        real = np.asarray(ids[row])[np.asarray(mask[row]) == 1]
        right_ids[row, :len(real)], right_mask[row, :len(real)] = real, 1
    config = SamplingConfig(max_new_tokens=8, temperature=0.0)
    left = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(0), config)
    right = generate(CONFIG, _params(CONFIG), right_ids, right_mask, jax.random.key(0), config)
    np.testing.assert_array_equal(np.asarray(left.response), np.asarray(right.response))


def test_a_row_without_a_prompt_generates_nothing_and_changes_no_other_row():
    """Batch padding (zero rows) is inert: the padded row's response is empty, and the other
    rows sample what they sample with any other row in its place."""
    ids, mask = prompts()
    config = SamplingConfig(max_new_tokens=8, temperature=1.0)
    full = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(3), config)
    padded = generate(CONFIG, _params(CONFIG), ids.at[3].set(0), mask.at[3].set(0),
                      jax.random.key(3), config)
    assert not np.asarray(padded.response_mask)[3].any()
    np.testing.assert_array_equal(np.asarray(padded.response)[:3], np.asarray(full.response)[:3])
    np.testing.assert_array_equal(np.asarray(padded.response_mask)[:3],
                                  np.asarray(full.response_mask)[:3])


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2)])
def test_sharded_greedy_equals_one_device(mesh_shape):
    ids, mask = prompts(batch=8)
    config = SamplingConfig(max_new_tokens=10, temperature=0.0)
    ref = generate(CONFIG, _params(CONFIG), ids, mask, jax.random.key(0), config)
    mesh = parallel.make_mesh(*mesh_shape)
    rules = parallel.get_rules("fsdp_tp")
    abstract, shardings = parallel.abstract_state(
        lambda r: CausalLM(CONFIG).init(r, jnp.zeros((1, 4), jnp.int32))["params"], mesh, rules,
        jax.random.key(0))
    params = jax.device_put(_params(CONFIG), shardings)
    batch = parallel.shard_batch({"ids": np.asarray(ids), "mask": np.asarray(mask)}, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        out = generate(CONFIG, params, batch["ids"], batch["mask"], jax.random.key(0), config)
    assert len(out.response.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(out.response), np.asarray(ref.response))
    np.testing.assert_allclose(np.asarray(out.raw_logprobs), np.asarray(ref.raw_logprobs),
                               atol=1e-5)


def test_sampling_config_validation():
    with pytest.raises(ValueError, match=r"SamplingConfig\.top_p=0.0"):
        SamplingConfig(max_new_tokens=4, top_p=0.0)
    with pytest.raises(ValueError, match=r"SamplingConfig\.min_new_tokens=5"):
        SamplingConfig(max_new_tokens=4, min_new_tokens=5)
    with pytest.raises(ValueError, match=r"SamplingConfig\.temperature"):
        SamplingConfig(max_new_tokens=4, temperature=-1.0)


def test_first_token_frequencies_match_the_models_filtered_distribution():
    # The model's next-token distribution after the prompt is known from a forward pass.
    ids, mask = prompts(batch=1, length=16)
    draws = 4096
    config = SamplingConfig(max_new_tokens=1, temperature=0.8, top_k=12, top_p=0.8)
    s = generate(CONFIG, _params(CONFIG), jnp.repeat(ids, draws, 0), jnp.repeat(mask, draws, 0),
                 jax.random.key(5), config)
    logits = CausalLM(CONFIG).apply({"params": _params(CONFIG)}, ids, attention_mask=mask)[0, -1]
    expected = np.asarray(jax.nn.softmax(sampling_logits(logits, config)))
    kept = expected > 0
    assert 2 <= kept.sum() <= 12
    freq = np.bincount(np.asarray(s.response[:, 0]), minlength=CONFIG.vocab_size) / draws
    assert np.all(freq[~kept] == 0)
    sigma = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(freq - expected) <= 5 * sigma + 1e-9)
