"""Tokenization with a response-only mask, truncation, and packing that leaves the loss unchanged."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.models import get_config
from rlhf_jax.checkpoints import load_tokenizer, smollm2_path
from rlhf_jax.checkpoints.tokenizer import byte_tokenizer
from rlhf_jax.data.tokenize import Example, encode, end_of_turn, pack, stop_tokens, truncate
from rlhf_jax.models import CausalLM, ModelConfig
from rlhf_jax.rl.supervised import next_token_loss


@functools.lru_cache(maxsize=None)
def tokenizer():
    return load_tokenizer(smollm2_path())


def test_chat_encoding_splits_the_template_at_the_generation_prompt():
    tok = tokenizer()
    head, tail = encode(tok, "Name a color.", "Blue.", chat=True)
    assert tok.decode(head).endswith("<|im_start|>assistant\n")
    assert tok.decode(tail).startswith("Blue.") and tok.decode(tail).endswith("<|im_end|>")
    assert tok.convert_ids_to_tokens(end_of_turn(tok)) == "<|im_end|>"
    assert stop_tokens(tok, chat=True) == (tok.eos_token_id,)  # SmolLM2's EOS is <|im_end|>
    byte = byte_tokenizer()  # EOS <|endoftext|>, turns end with <|im_end|>
    assert stop_tokens(byte, chat=True) == (256, 258) and stop_tokens(byte, chat=False) == (256,)
    head, tail = encode(tok, "Name a color.", "Blue.", chat=False)
    assert tok.decode(head) == "Name a color." and tail[-1] == tok.eos_token_id


def test_truncation_keeps_the_prompt_end_and_cuts_the_response():
    ex = truncate(list(range(10)), [100, 101, 102], max_len=8)
    assert ex.tokens == (5, 6, 7, 8, 9, 100, 101, 102) and ex.loss_mask == (0,) * 5 + (1,) * 3
    ex = truncate(list(range(10)), list(range(100, 120)), max_len=8)
    assert ex.tokens == (6, 7, 8, 9, 100, 101, 102, 103)  # the prompt keeps half
    assert truncate([1, 2], [3], max_len=8) == Example((1, 2, 3), (0, 0, 1))


def test_pack_rows_segments_and_masks():
    examples = [Example((1, 2, 3), (0, 1, 1)), Example((4, 5), (0, 1)), Example((6, 7, 8, 9), (0, 0, 1, 1))]
    rows = pack(examples, row_len=6, pad_token=0)
    np.testing.assert_array_equal(rows["tokens"], [[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 0, 0]])
    np.testing.assert_array_equal(rows["segment_ids"], [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(rows["loss_mask"], [[0, 1, 1, 0, 1, 0], [0, 0, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="does not fit rows of 3"):
        pack(examples, row_len=3)


def test_packed_batch_gives_the_same_loss_as_the_unpacked_one():
    config = ModelConfig.from_dict(get_config("tiny"))
    model = CausalLM(config)
    params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
    rng = np.random.RandomState(0)
    examples = []
    for n_prompt, n_response in ((3, 4), (5, 2), (2, 6), (4, 4)):
        tokens = tuple(rng.randint(1, config.vocab_size, n_prompt + n_response))
        examples.append(Example(tokens, (0,) * n_prompt + (1,) * n_response))
    rows = pack(examples, row_len=16)
    assert rows["tokens"].shape[0] < len(examples)
    logits = model.apply({"params": params}, jnp.asarray(rows["tokens"]),
                         segment_ids=jnp.asarray(rows["segment_ids"]))
    packed = next_token_loss(logits, jnp.asarray(rows["tokens"]), jnp.asarray(rows["loss_mask"]))
    total, count = 0.0, 0.0
    for ex in examples:
        tokens = jnp.asarray([ex.tokens])
        loss, n = next_token_loss(model.apply({"params": params}, tokens), tokens,
                                  jnp.asarray([ex.loss_mask]))
        total, count = total + float(loss), count + float(n)
    assert float(packed[1]) == count
    np.testing.assert_allclose(float(packed[0]), total, rtol=1e-5)
