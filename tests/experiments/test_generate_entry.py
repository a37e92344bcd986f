"""The generation entry point answers a left-padded batch of chat prompts."""

from experiments.generate import run
from rlhf_jax.checkpoints import smollm2_path


def test_batch_of_chat_prompts_with_different_lengths():
    prompts = ["What is the capital of France?", "Say hello."]
    answers = run(smollm2_path(), prompts, dict(max_new_tokens=12, temperature=0.0))
    assert len(answers) == 2 and "Paris" in answers[0]
    assert all(isinstance(a, str) and a and "<|im_end|>" not in a for a in answers)
