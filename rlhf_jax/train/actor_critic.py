"""The two trained models of PPO, policy π and value function V, as one parameter tree.

``params = {'policy': CausalLM params, 'value': …}`` where ``value`` is either a
whole ``ScalarHeadModel`` (the paper's default, initialised from the reward
model) or, with ``ActorCritic.value=None``, a scalar head ``{'kernel' (D,),
'bias' ()}`` on the policy's own final hidden states (a shared trunk, whose
value gradients then also reach the policy trunk). Both read the response of a
sequence laid out as ``generate`` writes it: P prompt slots, then N response
slots; the logits and value at slot P−1+t are those of the state before
response token t. A critic-free learner (``critic=False``: RLOO, GRPO,
REINFORCE++) has ``params = {'policy'}`` alone, and its values are 0.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from rlhf_jax.models import CausalLM, Decoder, ScalarHeadModel


@dataclasses.dataclass(frozen=True)
class ActorCritic:
    policy: CausalLM
    value: Optional[ScalarHeadModel] = None  # None: a value head on the policy trunk
    critic: bool = True  # False: no value function at all

    def response_outputs(self, params, sequences: jax.Array, mask: jax.Array,
                         prompt_length: int, logits: bool = True) -> tuple:
        """``(logits (B, N, V), values (B, N))`` predicting each of the N response tokens;
        ``logits=False``: ``(None, values)``, without the policy's forward pass (with a shared
        value head, without its LM head)."""
        span = (prompt_length - 1, sequences.shape[1] - 1)
        if not self.critic:
            if not logits:
                return None, jnp.zeros((sequences.shape[0], span[1] - span[0]), jnp.float32)
            out = self.policy.apply({"params": params["policy"]}, sequences,
                                    attention_mask=mask, logit_range=span)
            return out, jnp.zeros(out.shape[:2], jnp.float32)
        if self.value is None:
            if logits:
                out, hidden = self.policy.apply({"params": params["policy"]}, sequences,
                                                attention_mask=mask, logit_range=span,
                                                return_hidden=True)
            else:
                out, hidden = None, Decoder(self.policy.config).apply(
                    {"params": params["policy"]["trunk"]}, sequences, mask, outputs=span)[0]
            head = params["value"]
            return out, hidden @ head["kernel"].astype(jnp.float32) + head["bias"]
        out = None
        if logits:
            out = self.policy.apply({"params": params["policy"]}, sequences, attention_mask=mask,
                                    logit_range=span)
        values = self.value.apply({"params": params["value"]}, sequences, attention_mask=mask,
                                  per_token=True, score_range=span)
        return out, values


def shared_value_head(d_model: int) -> dict:
    """A fresh scalar head for the shared-trunk option: zero weights, so V starts at 0."""
    return dict(kernel=jnp.zeros((d_model,), jnp.float32), bias=jnp.zeros((), jnp.float32))


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """``log softmax(logits)[token]``: (B, N, V), (B, N) → (B, N), in float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
