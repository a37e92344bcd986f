"""The paper's optimizer: AdamW (β = 0.9, 0.95), cosine decay to 10% of peak, global-norm clipping."""

from __future__ import annotations

import dataclasses

import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float  # peak
    total_steps: int
    warmup_steps: int = 0  # linear warmup from 0
    final_fraction: float = 0.1  # cosine decays to this share of the peak
    b1: float = 0.9
    b2: float = 0.95
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # 0 disables clipping

    def __post_init__(self):
        if self.total_steps <= self.warmup_steps:
            raise ValueError(f"OptimizerConfig.total_steps={self.total_steps} must exceed "
                             f"warmup_steps={self.warmup_steps}")


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if config.warmup_steps else config.learning_rate,
        peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
        decay_steps=config.total_steps, end_value=config.final_fraction * config.learning_rate)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(learning_rate_schedule(config), b1=config.b1, b2=config.b2,
                        weight_decay=config.weight_decay)
    if not config.clip_norm:
        return adamw
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adamw)
