"""How to sample: the frozen, hashable settings of one ``generate`` program."""

from __future__ import annotations

import dataclasses
from typing import Optional

from rlhf_jax.errors import ConfigError

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Settings of ``generate``; a change of any field compiles a new program.

    ``temperature=0`` is greedy decoding. Filters apply in the order
    temperature → top-k → top-p, as in transformers. Prompts are left-padded to
    the smallest ``prompt_buckets`` length that holds them, so varying prompt
    lengths compile one program per bucket, not one per length.
    """

    max_new_tokens: int
    stop_tokens: tuple[int, ...] = ()  # a response ends at (and includes) the first of these
    pad_token: int = 0  # written after the stop token and in prompt padding
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    min_new_tokens: int = 0  # stop tokens are masked out before this many tokens
    prompt_buckets: tuple[int, ...] = DEFAULT_BUCKETS

    def __post_init__(self):
        def need(ok: bool, field: str, why: str):
            if not ok:
                raise ConfigError(f"SamplingConfig.{field}={getattr(self, field)!r}: {why}")

        need(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")
        need(self.temperature >= 0, "temperature", "must be >= 0 (0 is greedy)")
        need(self.top_k >= 0, "top_k", "must be >= 0 (0 disables it)")
        need(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        need(0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens",
             f"must be in [0, max_new_tokens={self.max_new_tokens}]")
        need(len(self.prompt_buckets) > 0 and list(self.prompt_buckets) == sorted(
            set(self.prompt_buckets)), "prompt_buckets", "must be increasing and non-empty")
        object.__setattr__(self, "stop_tokens", tuple(int(t) for t in self.stop_tokens))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def bucket(self, prompt_length: int) -> int:
        """The padded prompt length: the smallest bucket that holds ``prompt_length``."""
        for b in self.prompt_buckets:
            if b >= prompt_length:
                return b
        raise ValueError(f"prompt length {prompt_length} exceeds the largest bucket "
                         f"{self.prompt_buckets[-1]} of SamplingConfig.prompt_buckets")

    def replace(self, **changes) -> "SamplingConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def for_tokenizer(cls, tokenizer, max_new_tokens: int, stop_tokens: Optional[tuple] = None,
                      **kwargs) -> "SamplingConfig":
        """Stops at the tokenizer's EOS (unless ``stop_tokens`` are given), pads with its pad id."""
        if stop_tokens is None:
            stop_tokens = (tokenizer.eos_token_id,)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_tokens[0]
        return cls(max_new_tokens=max_new_tokens, stop_tokens=tuple(stop_tokens), pad_token=pad,
                   **kwargs)
