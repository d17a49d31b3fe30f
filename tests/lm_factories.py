"""A tiny Llama-like causal LM (the SmolLM2 architecture at toy size) for the LM demo's tests.

It stands in for the SmolLM2 GGUF conversion: ``build_lm_demo(..., base=build_tiny_llama(dir))``
fine-tunes it on the real tweets in a second.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tests.factories import VOCAB, make_tokenizer, save


def build_tiny_llama(root: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 32, grouped-query attention, tied embeddings) with the
    word-level test tokenizer, saved as an HF directory in ``root``."""
    torch.manual_seed(seed)
    eos = VOCAB.index("</s>")
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=eos, eos_token_id=eos)
    return save(LlamaForCausalLM(cfg).eval(), root, make_tokenizer("gpt2"))
