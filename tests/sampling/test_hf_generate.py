"""Greedy generation equals transformers' ``generate(do_sample=False)`` token for token."""

import jax
import numpy as np
import pytest
import torch
import transformers

from rlhf_jax.checkpoints import load_pretrained
from rlhf_jax.sampling import SamplingConfig, generate
from tests.torch_reference import VOCAB, save_random_model

NEW = 12


def left_padded_prompts(lengths, seed=0):
    rng = np.random.RandomState(seed)
    width = max(lengths)
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros((len(lengths), width), np.int64)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = rng.randint(1, VOCAB, n)
        mask[row, width - n:] = 1
    return ids, mask


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_greedy_matches_transformers_on_left_padded_prompts(family, tmp_path):
    model_dir = save_random_model(family, str(tmp_path / family))
    ids, mask = left_padded_prompts([7, 3, 10, 5])
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        ref = ref_model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW,
                                 eos_token_id=None, pad_token_id=0)
    ref = ref[:, ids.shape[1]:].numpy()
    config, params = load_pretrained(model_dir)
    samples = generate(config, params, ids, mask, jax.random.key(0),
                       SamplingConfig(max_new_tokens=NEW, temperature=0.0))
    np.testing.assert_array_equal(np.asarray(samples.response), ref)
    assert len({tuple(r) for r in ref.tolist()}) > 1
