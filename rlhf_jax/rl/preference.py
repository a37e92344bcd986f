"""Direct preference optimization over the K ranked responses of each prompt.

One batch element is one prompt x with its K responses, laid out as for the
reward model's loss (``ranking.py``: rows padded to the largest K with ``valid``
false, ``rank`` 0 = best). The policy enters only through::

    Δ_i = log π(y_i|x) − log π_ref(y_i|x)    (summed over the response's tokens)

and the implicit reward is r_i = β·Δ_i. Over the C(K,2) pairs (w, l) with w
ranked above l, with h = Δ_w − Δ_l::

    dpo   −log σ(β·h)                               (Rafailov et al. 2023)
    cdpo  −(1−ε)·log σ(β·h) − ε·log σ(−β·h)         (conservative DPO, label smoothing ε)
    ipo   (h − 1/(2β))²                             (Azar et al. 2023; β plays τ's role)

and loss(x) is the mean over the prompt's pairs, as in the reward model's loss.
The Plackett–Luce loss (Rafailov et al. 2023, appendix A.3) instead scores the
whole ranking σ (σ(1) best) as a sequence of choices among the responses left::

    loss(x) = −1/(K−1) · Σ_{j=1}^{K−1} [ r_σ(j) − log Σ_{m=j}^{K} exp r_σ(m) ]

(the term j = K is identically zero); for K = 2 it is dpo. Losses and metrics
are sums and counts over prompts, so gradient accumulation is exact; prompts
with fewer than two responses count for nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.rl.ranking import ranked_pairs

PAIRWISE = ("dpo", "ipo", "cdpo")
LOSSES = PAIRWISE + ("plackett_luce",)


def _pair_margins(logratios: jax.Array, rank: jax.Array, valid: jax.Array, beta) -> tuple:
    """``(Δ with padding zeroed, pairs (B, K, K), h = Δ_w − Δ_l, metric sums)``."""
    logratios = jnp.where(valid, logratios.astype(jnp.float32), 0.0)  # padding may be garbage
    pairs = ranked_pairs(rank, valid)
    h = logratios[:, :, None] - logratios[:, None, :]  # Δ_w − Δ_l for row w, column l
    margin = jnp.where(pairs, beta * h, 0.0)  # r_w − r_l
    metrics = dict(pairs=jnp.sum(pairs).astype(jnp.float32),
                   correct_pairs=jnp.sum(pairs & (margin > 0)).astype(jnp.float32),
                   margin_sum=jnp.sum(margin))
    return logratios, pairs, h, metrics


def pairwise_loss(logratios: jax.Array, rank: jax.Array, valid: jax.Array, beta,
                  loss: str = "dpo",
                  label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array, dict]:
    """``(Σ_x loss(x), number of prompts, metric sums)`` of dpo, cdpo or ipo over (B, K).

    loss(x) is the mean over its pairs of the per-pair loss above; ``label_smoothing``
    (ε) is cdpo's only. Metric sums: ``pairs``, ``correct_pairs`` (r_w > r_l) and
    ``margin_sum`` (Σ β·(Δ_w − Δ_l)).
    """
    if loss not in PAIRWISE:
        raise ValueError(f"unknown pairwise loss {loss!r}; choose one of {PAIRWISE}")
    _, pairs, h, metrics = _pair_margins(logratios, rank, valid, beta)
    if loss == "ipo":
        per_pair = jnp.square(h - 1.0 / (2.0 * beta))
    else:
        eps = label_smoothing if loss == "cdpo" else 0.0
        per_pair = (-(1.0 - eps) * jax.nn.log_sigmoid(beta * h)
                    - eps * jax.nn.log_sigmoid(-beta * h))
    n_pairs = jnp.sum(pairs, axis=(1, 2)).astype(jnp.float32)
    total = jnp.sum(jnp.where(pairs, per_pair, 0.0), axis=(1, 2))
    return (jnp.sum(total / jnp.maximum(n_pairs, 1.0)),
            jnp.sum(n_pairs > 0).astype(jnp.float32), metrics)


def plackett_luce_loss(logratios: jax.Array, rank: jax.Array, valid: jax.Array,
                       beta) -> tuple[jax.Array, jax.Array, dict]:
    """``(Σ_x loss(x), number of prompts, metric sums)`` of the Plackett–Luce loss above.

    Row j of ``below`` (B, K, K) holds the real responses m ranked at or below j; a
    padding j's row holds only j itself, so no logsumexp is empty (an empty one has
    NaN in its backward pass) and padding enters no real row. Choice j counts if
    another response is left below it, i.e. j is real and not ranked last.
    """
    logratios, _, _, metrics = _pair_margins(logratios, rank, valid, beta)
    rewards = beta * logratios
    below = valid[:, :, None] & valid[:, None, :] & (rank[:, None, :] >= rank[:, :, None])
    below = below | jnp.eye(rank.shape[1], dtype=bool)[None]
    log_norm = jax.nn.logsumexp(jnp.where(below, rewards[:, None, :], -jnp.inf), axis=-1)
    chooses = jnp.sum(below, axis=-1) > 1
    n_choices = jnp.sum(chooses, axis=-1).astype(jnp.float32)  # K − 1
    total = jnp.sum(jnp.where(chooses, rewards - log_norm, 0.0), axis=-1)
    return (jnp.sum(-total / jnp.maximum(n_choices, 1.0)),
            jnp.sum(n_choices > 0).astype(jnp.float32), metrics)


def preference_loss(logratios: jax.Array, rank: jax.Array, valid: jax.Array, beta,
                    loss: str = "dpo",
                    label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array, dict]:
    """The loss named ``loss`` (one of ``LOSSES``): ``(Σ_x loss(x), prompts, metric sums)``."""
    if loss not in LOSSES:
        raise ValueError(f"unknown preference loss {loss!r}; choose one of {LOSSES}")
    if loss == "plackett_luce":
        return plackett_luce_loss(logratios, rank, valid, beta)
    return pairwise_loss(logratios, rank, valid, beta, loss, label_smoothing)
