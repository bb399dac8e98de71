"""How many tokens a transformers cache holds, read from its attention layers only.

transformers 5.25's ``LinearAttentionLayer`` reports 0 tokens for a model that updates its
state in place (RecurrentGemma), and ``Cache.get_seq_length()`` reads layer 0, which in a hybrid
stack is often such a layer: steering read "nothing cached" on every decode step and re-steered
the prompt positions. These tests pin the rule on caches built from real configs.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from steerlab.model.arch import cache_length, cache_offset
from steerlab.testing.zoo import tiny_config


def _hybrid_cache(model_type: str) -> DynamicCache:
    return DynamicCache(config=tiny_config(model_type))


def _fill_attention(cache: DynamicCache, tokens: int) -> list[int]:
    filled = []
    for index, layer in enumerate(cache.layers):
        if "LinearAttention" in type(layer).__name__ or "Dummy" in type(layer).__name__:
            continue
        cache.update(torch.zeros(1, 2, tokens, 4), torch.zeros(1, 2, tokens, 4), index)
        filled.append(index)
    return filled


def test_a_hybrid_cache_is_read_from_its_attention_layers() -> None:
    cache = _hybrid_cache("recurrent_gemma")
    kinds = [type(layer).__name__ for layer in cache.layers]
    assert any("LinearAttention" in kind for kind in kinds), kinds  # layer 0 holds a state
    assert cache_length(cache) == 0
    assert _fill_attention(cache, 7), kinds
    assert cache_length(cache) == 7
    assert cache_offset({"cache": cache}, 1) == 7


def test_placeholder_layers_that_cannot_count_are_skipped() -> None:
    cache = _hybrid_cache("nemotron_h")  # mamba, MoE, attention, MLP blocks
    assert _fill_attention(cache, 5)
    assert cache_length(cache) == 5


def test_a_cache_with_no_counting_layer_is_unreadable() -> None:
    cache = _hybrid_cache("mamba")
    assert cache_length(cache) is None
    assert cache_length(object()) is None
