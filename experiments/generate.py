"""Answer prompts with a pretrained model (HF directory or GGUF file).

    python -m experiments.generate --model=$(python -c "from rlhf_jax.checkpoints import \
        smollm2_path; print(smollm2_path())") --prompt="What is the capital of France?"

Prompts are wrapped in the tokenizer's chat template when it has one
(``--nochat`` to send them raw). ``--temperature=0`` is greedy.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import flags

from experiments import cli
from rlhf_jax.checkpoints import load_pretrained, load_tokenizer
from rlhf_jax.sampling import SamplingConfig, generate

flags.DEFINE_string("model", None, "HF model directory or .gguf file", required=True)
flags.DEFINE_multi_string("prompt", None, "prompt (repeat the flag for a batch)", required=True)
flags.DEFINE_integer("max_new_tokens", 64, "tokens to generate per prompt")
flags.DEFINE_float("temperature", 0.0, "0 is greedy")
flags.DEFINE_integer("top_k", 0, "0 disables top-k")
flags.DEFINE_float("top_p", 1.0, "1 disables top-p")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
flags.DEFINE_bool("chat", True, "apply the tokenizer's chat template")
flags.DEFINE_integer("seed", 0, "sampling seed")
FLAGS = flags.FLAGS


def run(model: str, prompts: list[str], sampling: dict, dtype: str = "float32", chat: bool = True,
        seed: int = 0) -> list[str]:
    """The decoded answers, one per prompt."""
    tokenizer = load_tokenizer(model)
    settings = SamplingConfig.for_tokenizer(tokenizer, **sampling)  # checked before the weights load
    config, params = load_pretrained(model, dtype=dtype)
    tokenizer.padding_side = "left"
    if chat and tokenizer.chat_template:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    batch = tokenizer(prompts, padding=True, return_tensors="np", add_special_tokens=not chat)
    samples = generate(config, params, batch["input_ids"], batch["attention_mask"],
                       jax.random.key(seed), settings)
    lengths = np.asarray(samples.response_mask).sum(axis=1)
    return [tokenizer.decode(tokens[:n], skip_special_tokens=True)
            for tokens, n in zip(np.asarray(samples.response), lengths)]


def main(_):
    sampling = dict(max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature,
                    top_k=FLAGS.top_k, top_p=FLAGS.top_p)
    for prompt, answer in zip(FLAGS.prompt, run(FLAGS.model, FLAGS.prompt, sampling, FLAGS.dtype,
                                                 FLAGS.chat, FLAGS.seed)):
        print(f">>> {prompt}\n{answer}\n")


if __name__ == "__main__":
    cli.run(main)
