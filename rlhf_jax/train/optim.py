"""The paper's optimizer: AdamW (β = 0.9, 0.95), cosine decay to 10% of peak, global-norm clipping.

Weight decay applies to the matrices of the linear maps only (``decay='kernels'``,
parameters named ``kernel``): not to biases, norm scales or embedding tables,
whose shrinking toward 0 is no regularisation (GPT-2, PaLM and nanoGPT do the
same). ``decay='all'`` decays every parameter.
"""

from __future__ import annotations

import dataclasses

import jax
import optax

DECAY = ("kernels", "all")


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
    decay: str = "kernels"  # which parameters weight decay shrinks: "kernels" or "all"

    def __post_init__(self):
        if self.total_steps <= self.warmup_steps:
            raise ValueError(f"OptimizerConfig.total_steps={self.total_steps} must exceed "
                             f"warmup_steps={self.warmup_steps}")
        if self.decay not in DECAY:
            raise ValueError(f"OptimizerConfig.decay={self.decay!r} must be one of {DECAY}")


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if config.warmup_steps else config.learning_rate,
        peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
        decay_steps=config.total_steps, end_value=config.final_fraction * config.learning_rate)


def decayed(params) -> dict:
    """True for the parameters weight decay shrinks under ``decay='kernels'``: those whose last
    name is ``kernel`` (a logically partitioned leaf's own attributes are not names)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: [k.key for k in path if hasattr(k, "key")][-1:] == ["kernel"], params)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(learning_rate_schedule(config), b1=config.b1, b2=config.b2,
                        weight_decay=config.weight_decay,
                        mask=decayed if config.decay == "kernels" else None)
    if not config.clip_norm:
        return adamw
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adamw)
