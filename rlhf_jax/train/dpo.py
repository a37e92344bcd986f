"""The direct-preference step: the policy trained on ranked responses, with no reward model.

A batch holds prompts with their K ranked responses, as the reward model's
(``data.collate.comparison_batch``, whole rows or each prompt once), plus
``ref_logprobs`` (B, K): each response's log-probability under the reference
policy, computed once per dataset before training (``pipeline.dpo``), never at
a step. With ``Δ = log π(y|x) − log π_ref(y|x)`` summed over the response's
tokens, the loss is ``rl.preference``'s (DPO, IPO, conservative DPO or
Plackett–Luce) of the implicit rewards ``β·Δ``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from rlhf_jax.models import CausalLM
from rlhf_jax.rl.preference import LOSSES, preference_loss
from rlhf_jax.train.accumulate import accumulated_update
from rlhf_jax.train.actor_critic import token_logprobs


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1  # β: the implicit reward's scale (the strength of the KL constraint)
    loss: str = "dpo"  # one of rl.preference.LOSSES
    label_smoothing: float = 0.0  # ε of conservative DPO ("cdpo"): the labels' flip rate

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"DPOConfig.beta={self.beta} must be > 0")
        if self.loss not in LOSSES:
            raise ValueError(f"DPOConfig.loss={self.loss!r} must be one of {LOSSES}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"DPOConfig.label_smoothing={self.label_smoothing} must be in "
                             "[0, 0.5)")


def response_logprobs(model: CausalLM, params, batch: dict, rng=None) -> jax.Array:
    """``Σ_t log π(y_t | x, y_<t)`` over each response's tokens (``response_mask``), (B, K), in
    either layout of ``comparison_batch``: ``tokens``, ``mask`` (B, K, T) rows of prompt +
    response, whose targets are shifted left rather than logits sliced (as
    ``next_token_loss``: position t's logits score token t+1); or with ``prompt``,
    ``prompt_mask`` (B, P) the responses alone in ``tokens``, ``mask`` (B, K, R), their
    logits aligned with them and computed after the prompt once
    (``CausalLM.logits_after_prompt``: P + K·R token passes instead of K·(P + R))."""
    tokens, response_mask = batch["tokens"], batch["response_mask"]
    b, k, t = tokens.shape
    rngs = None if rng is None else {"dropout": rng}
    if "prompt" in batch:
        logits = model.apply({"params": params}, batch["prompt"], batch["prompt_mask"], tokens,
                             batch["mask"], rngs=rngs, method=CausalLM.logits_after_prompt)
        logp = token_logprobs(logits.reshape(b * k, t, -1), tokens.reshape(b * k, t))
        return jnp.sum(logp.reshape(b, k, t) * response_mask.astype(jnp.float32), axis=2)
    logits = model.apply({"params": params}, tokens.reshape(b * k, t),
                         attention_mask=batch["mask"].reshape(b * k, t), rngs=rngs)
    targets = jnp.roll(tokens.reshape(b * k, t), -1, axis=1)
    scored = jnp.roll(response_mask.reshape(b * k, t), -1, axis=1).at[:, -1].set(0)
    logp = token_logprobs(logits, targets) * scored.astype(jnp.float32)
    return jnp.sum(logp, axis=1).reshape(b, k)


def dpo_loss_terms(model: CausalLM, config: DPOConfig, params, batch: dict, rng):
    """``(Σ_x loss(x), prompts, metric sums)`` of one batch; the sums add the log-probs of each
    prompt's best (``chosen_logprob``) and worst (``rejected_logprob``) response."""
    logprobs = response_logprobs(model, params, batch, rng)
    valid = batch["valid"]
    loss_sum, prompts, sums = preference_loss(logprobs - batch["ref_logprobs"], batch["rank"],
                                              valid, config.beta, config.loss,
                                              config.label_smoothing)
    worst = jnp.sum(valid, axis=1, keepdims=True) - 1
    ranked = (jnp.sum(valid, axis=1) > 1).astype(jnp.float32)[:, None]
    chosen = ((batch["rank"] == 0) & valid) * ranked
    rejected = ((batch["rank"] == worst) & valid) * ranked
    return loss_sum, prompts, dict(sums, prompts=prompts,
                                   chosen_logprob=jnp.sum(logprobs * chosen),
                                   rejected_logprob=jnp.sum(logprobs * rejected))


def preference_metrics(sums: dict) -> dict:
    """Means from the sums: implicit-reward ``accuracy`` (pairs ranked as labeled) and
    ``margin`` (β·(Δ_w − Δ_l)) per pair, ``chosen_logprob``/``rejected_logprob`` per prompt."""
    pairs, prompts = jnp.maximum(sums["pairs"], 1.0), jnp.maximum(sums["prompts"], 1.0)
    return dict(accuracy=sums["correct_pairs"] / pairs, margin=sums["margin_sum"] / pairs,
                chosen_logprob=sums["chosen_logprob"] / prompts,
                rejected_logprob=sums["rejected_logprob"] / prompts)


def dpo_step(state: TrainState, batch: dict, rng: jax.Array, frozen=None, *, model: CausalLM,
             config: DPOConfig, microbatches: int = 1) -> tuple[TrainState, dict]:
    """One AdamW update of the policy's trainable params (``frozen``: its frozen base, see
    ``accumulated_update``) on ``batch`` (``comparison_batch``'s fields and ``ref_logprobs``);
    metrics: ``loss`` per prompt, ``preference_metrics`` and the update's norms."""
    state, m = accumulated_update(
        state, batch, rng, lambda p, b, r: dpo_loss_terms(model, config, p, b, r), microbatches,
        frozen)
    return state, dict(loss=m["loss"], grad_norm=m["grad_norm"], param_norm=m["param_norm"],
                       update_norm=m["update_norm"], **preference_metrics(m))
