"""PPO's settings; the defaults are the paper's (Ouyang et al. 2022, appendix C.4)."""

from __future__ import annotations

import dataclasses

from rlhf_jax.rl.advantages import ESTIMATORS, GROUPED
from rlhf_jax.rl.kl import KLController

AGGREGATIONS = ("token", "sequence")
OLD_LOGPROBS = ("forward", "sampler")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    clip_ratio: float = 0.2  # ε of the policy ratio
    value_clip: float = 0.2  # ε_V of the value change
    value_coef: float = 1.0  # weight of the value loss (its own optimizer sets its step size)
    entropy_coef: float = 0.0  # entropy bonus (the paper: none)
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE λ
    # gae (with a value function) or a critic-free estimator: rloo, grpo, reinforce_pp
    advantage: str = "gae"
    samples_per_prompt: int = 1  # k responses sampled per prompt (rloo and grpo need k >= 2)
    # the policy loss per valid token of the minibatch ("token") or per response, each the mean
    # over its own tokens ("sequence", GRPO's original form)
    loss_aggregation: str = "token"
    whiten_advantages: bool = True  # gae only: the critic-free estimators normalize their own
    whiten_scores: bool = False  # normalize the final scores over each batch
    missing_stop_penalty: float = 0.0  # subtracted from the score of a response with no stop token
    kl: KLController = KLController()
    ptx_coef: float = 0.0  # γ of PPO-ptx (the paper: 27.8); 0 is plain PPO
    epochs: int = 1  # passes over each batch of episodes
    minibatches: int = 1  # updates per pass (the paper: 8 of 64 episodes)
    microbatches: int = 1  # gradient accumulation inside one update
    ema_decay: float = 0.992  # EMA of the policy weights, for evaluation and export
    # log π_old at scoring: "forward", a policy forward pass over the episodes (exact: the
    # ratio is 1 at the first update), or "sampler", the sampler's own log-probs, which skips
    # that pass (equal to float32 rounding; in bf16 compute the two passes round differently)
    old_logprobs: str = "forward"
    # with one minibatch of one microbatch, score the episodes and take the first update in one
    # program whose backward pass reuses scoring's policy and value forward pass (the same
    # update, one forward pass fewer; log π_old from that pass); False: two programs
    fuse_scoring: bool = True

    @property
    def scores_in_update(self) -> bool:
        """Whether scoring and the update run as one program (``train.ppo.scored_ppo_update``)."""
        return self.fuse_scoring and self.minibatches == 1 and self.microbatches == 1

    @property
    def critic(self) -> bool:
        """Whether the advantages need a value function (GAE's do)."""
        return self.advantage == "gae"

    def __post_init__(self):
        for name in ("epochs", "minibatches", "microbatches", "samples_per_prompt"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOConfig.{name}={getattr(self, name)} must be >= 1")
        if self.advantage not in ESTIMATORS:
            raise ValueError(f"PPOConfig.advantage={self.advantage!r} must be one of {ESTIMATORS}")
        if self.advantage in GROUPED and self.samples_per_prompt < 2:
            raise ValueError(f"PPOConfig.advantage={self.advantage!r} compares the samples of a "
                             f"prompt: samples_per_prompt={self.samples_per_prompt} must be >= 2")
        if self.loss_aggregation not in AGGREGATIONS:
            raise ValueError(f"PPOConfig.loss_aggregation={self.loss_aggregation!r} must be one "
                             f"of {AGGREGATIONS}")
        if self.old_logprobs not in OLD_LOGPROBS:
            raise ValueError(f"PPOConfig.old_logprobs={self.old_logprobs!r} must be one of "
                             f"{OLD_LOGPROBS}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"PPOConfig.ema_decay={self.ema_decay} must be in [0, 1)")
