"""The model and batch shared by the two-process test and its single-process reference."""

import numpy as np

from configs.models import get_config
from rlhf_jax.models import CausalLM, ModelConfig

MESH = (2, 2, 2)
RULES = "fsdp_tp"


def model() -> CausalLM:
    return CausalLM(ModelConfig.from_dict(get_config("tiny")))


def inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(1, 512, (8, 12)).astype(np.int32)
    mask = np.ones((8, 12), np.int32)
    mask[::3, :4] = 0
    return ids, mask
