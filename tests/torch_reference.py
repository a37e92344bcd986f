"""Random small Hugging Face models (torch, float32) to check our logits against."""

from __future__ import annotations

import numpy as np
import torch
import transformers

VOCAB = 96

HF_CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
        rope_theta=500.0),
    "llama_tied_llama3rope": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        tie_word_embeddings=True, rope_parameters=dict(
            rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
            high_freq_factor=4.0, original_max_position_embeddings=16)),
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=True),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, rotary_pct=0.25),
    "gpt_neox_sequential": lambda: transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, rotary_pct=0.5,
        use_parallel_residual=False),
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=0,
        eos_token_id=0),
}


def save_random_model(name: str, out_dir: str, seed: int = 0) -> str:
    """A randomly initialised HF model, with weights scaled up so errors are not hidden by tiny values."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(HF_CONFIGS[name]()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out_dir)
    return out_dir


def left_padded_batch(seed: int = 0, batch: int = 4, length: int = 12):
    """Token ids and a left-padding mask with a different amount of padding per row."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, VOCAB, (batch, length))
    mask = np.ones((batch, length), np.int32)
    for row, pad in enumerate(np.linspace(0, length // 2, batch).astype(int)):
        mask[row, :pad] = 0
    return ids, mask


def hf_logits(model_dir: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """transformers' float32 logits, positions counted from the first real token."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(positions))
    return out.logits.numpy()
