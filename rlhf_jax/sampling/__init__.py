"""Jitted generation with a KV cache: greedy, temperature, top-k and top-p, exact log-probabilities."""

from rlhf_jax.sampling.config import SamplingConfig
from rlhf_jax.sampling.filters import draw, sampling_logits, top_k_filter, top_p_filter
from rlhf_jax.sampling.generate import Samples, generate

__all__ = ["SamplingConfig", "Samples", "draw", "generate", "sampling_logits", "top_k_filter",
           "top_p_filter"]
