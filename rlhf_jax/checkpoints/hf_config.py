"""Reading Hugging Face ``config.json`` fields, old and new spellings alike."""

from __future__ import annotations

from rlhf_jax.errors import CheckpointError
from rlhf_jax.models.config import Llama3RopeScaling, ModelConfig


def require(ok: bool, where: str, field: str, why: str) -> None:
    if not ok:
        raise CheckpointError(f"{where}: field {field!r}: {why}")


def rope_from_hf(hf: dict, where: str) -> dict:
    """``rope_base``, ``rope_fraction`` and ``rope_scaling`` from ``rope_parameters``
    (transformers ≥ 5) or the older ``rope_theta`` / ``rope_scaling`` / ``rotary_pct`` fields."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    base = params.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    fraction = params.get("partial_rotary_factor",
                          hf.get("partial_rotary_factor", hf.get("rotary_pct", 1.0)))
    require(kind in ("default", "llama3"), where, "rope_parameters.rope_type",
            f"{kind!r} is not supported (default, llama3)")
    llama3 = None
    if kind == "llama3":
        llama3 = Llama3RopeScaling(
            factor=scaling["factor"], low_freq_factor=scaling["low_freq_factor"],
            high_freq_factor=scaling["high_freq_factor"],
            original_max_len=scaling["original_max_position_embeddings"])
    return dict(rope_base=float(base), rope_fraction=float(fraction), rope_scaling=llama3)


def rope_to_hf(cfg: ModelConfig) -> dict:
    params = {"rope_theta": cfg.rope_base, "rope_type": "default"}
    if cfg.rope_fraction != 1.0:
        params["partial_rotary_factor"] = cfg.rope_fraction
    s = cfg.rope_scaling
    if s is not None:
        params.update(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                      high_freq_factor=s.high_freq_factor,
                      original_max_position_embeddings=s.original_max_len)
    return params
