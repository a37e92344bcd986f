"""Pure linen modules: the decoder trunk, the LM head (policy) and the scalar head (reward, value)."""

from rlhf_jax.models import lora
from rlhf_jax.models.config import Llama3RopeScaling, ModelConfig
from rlhf_jax.models.lora import LoraConfig
from rlhf_jax.models.kv_cache import KVCache
from rlhf_jax.models.transformer import (CausalLM, Decoder, ScalarHeadModel, last_token_index,
                                         positions_from_segments, unstack_layers)

__all__ = ["CausalLM", "Decoder", "KVCache", "Llama3RopeScaling", "LoraConfig", "ModelConfig",
           "ScalarHeadModel", "last_token_index", "lora", "positions_from_segments",
           "unstack_layers"]
