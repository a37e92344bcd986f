"""The real SmolLM2-135M-Instruct GGUF: tokenizer, logits and a greedy answer against transformers."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from rlhf_jax.checkpoints import load_pretrained, load_tokenizer, smollm2_path
from rlhf_jax.models import CausalLM
from rlhf_jax.sampling import SamplingConfig, generate

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2():
    path = smollm2_path()
    config, params = load_pretrained(path)
    return path, config, params, load_tokenizer(path)


@pytest.fixture(scope="module")
def reference_model():
    path = smollm2_path()
    return transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()


def chat_ids(tokenizer, messages):
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])


def test_config_from_gguf_metadata(smollm2):
    _, config, params, tokenizer = smollm2
    assert (config.n_layers, config.d_model, config.n_heads, config.n_kv_heads) == (30, 576, 9, 3)
    assert (config.rope_base, config.vocab_size, config.tie_embeddings) == (1e5, 49152, True)
    assert "lm_head" not in params
    assert len(tokenizer) == config.vocab_size


def test_tokenizer_matches_transformers_gguf_tokenizer(smollm2):
    path, _, _, tokenizer = smollm2
    ref = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path),
                                                     gguf_file=os.path.basename(path))
    text = "Hello, world! Some words<|im_end|>\n  indented\tand tabs."
    assert tokenizer(text)["input_ids"] == ref(text)["input_ids"]
    assert chat_ids(tokenizer, QUESTION) == chat_ids(ref, QUESTION)
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    # SmolLM2's own pre-tokenizer splits digits one by one.
    assert len(tokenizer("12345")["input_ids"]) == 5


def test_logits_match_transformers_gguf_loader(smollm2, reference_model):
    _, config, params, tokenizer = smollm2
    ids = chat_ids(tokenizer, QUESTION)
    with torch.no_grad():
        ref = reference_model(input_ids=torch.tensor([ids])).logits.numpy()
    ours = np.asarray(jax.jit(CausalLM(config).apply)({"params": params}, jnp.asarray([ids])))
    assert np.abs(ours - ref).max() <= 2e-4


def test_greedy_answer_matches_transformers_generate_and_names_paris(smollm2, reference_model):
    _, config, params, tokenizer = smollm2
    ids = np.asarray([chat_ids(tokenizer, QUESTION)])
    sampling = SamplingConfig.for_tokenizer(tokenizer, max_new_tokens=16, temperature=0.0)
    samples = generate(config, params, ids, np.ones_like(ids), jax.random.key(0), sampling)
    answer = np.asarray(samples.response[0])[np.asarray(samples.response_mask[0]) == 1]
    with torch.no_grad():
        ref = reference_model.generate(torch.tensor(ids), do_sample=False, max_new_tokens=16,
                                       eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id)
    np.testing.assert_array_equal(answer, ref[0, ids.shape[1]:].numpy())
    text = tokenizer.decode(answer, skip_special_tokens=True)
    assert "Paris" in text, text
