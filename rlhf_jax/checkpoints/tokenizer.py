"""Tokenizers: ``AutoTokenizer`` for HF directories, rebuilt from metadata for GGUF files, and a
byte-level one (no training, 259 ids) for randomly initialised models."""

from __future__ import annotations

import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from rlhf_jax.checkpoints.gguf_file import field, open_gguf
from rlhf_jax.errors import CheckpointError, MissingFileError

# llama.cpp's pre-tokenizer names → the splits the vocabulary was trained with.
_GPT2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {
    "default": _GPT2,
    "gpt-2": _GPT2,
    "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _GPT2]),
    "llama-bpe": pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
}
CONTROL = 3  # gguf token type of special tokens such as <|im_start|>
# ChatML, the template of SmolLM2 and Qwen2, for the byte tokenizer.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
BYTE_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def load_tokenizer(path: str):
    """A transformers tokenizer (with its chat template) for a HF directory or a ``.gguf`` file."""
    if not os.path.exists(path):
        raise MissingFileError(f"{path}: no such file or directory")
    if path.endswith(".gguf"):
        return gguf_tokenizer(path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:  # no tokenizer files, or files transformers cannot read
        raise CheckpointError(f"{path}: no tokenizer could be loaded from it "
                              f"({' '.join(str(e).split())[:300]})") from None


def gguf_tokenizer(path: str) -> PreTrainedTokenizerFast:
    """Byte-level BPE from ``tokenizer.ggml.*``: vocabulary, merges, special tokens, template."""
    reader = open_gguf(path)
    kind, pre = field(reader, "tokenizer.ggml.model"), field(reader, "tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise CheckpointError(f"{path}: tokenizer.ggml.model={kind!r}: only byte-level BPE ('gpt2') "
                              "tokenizers can be built")
    if pre not in PRE_TOKENIZERS:
        raise CheckpointError(f"{path}: tokenizer.ggml.pre={pre!r} is not one of {sorted(PRE_TOKENIZERS)}")
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    bpe.pre_tokenizer = PRE_TOKENIZERS[pre]
    bpe.decoder = decoders.ByteLevel()
    types = field(reader, "tokenizer.ggml.token_type")
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types) if kind == CONTROL])

    def token(key):
        i = field(reader, f"tokenizer.ggml.{key}_token_id")
        return None if i is None else tokens[int(i)]

    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=token("bos"), eos_token=token("eos"),
        unk_token=token("unknown"), pad_token=token("padding"),
        chat_template=field(reader, "tokenizer.chat_template"))


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One id per byte (0..255), then ``<|endoftext|>`` (EOS and padding), ``<|im_start|>`` and
    ``<|im_end|>``, with a ChatML chat template. Any text round-trips; nothing is learned."""
    vocab = {char: byte for byte, char in bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in BYTE_SPECIALS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=BYTE_SPECIALS[0],
                                   pad_token=BYTE_SPECIALS[0], chat_template=CHATML)
