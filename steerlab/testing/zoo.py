"""Tiny random models of any causal-LM architecture the installed transformers knows.

:func:`tiny_config` shrinks a model type's default config (width 32, 2 blocks, vocabulary 512,
4 experts, ... wherever the config has such a field, nested text configs included) and applies
that type's row of :data:`TINY` — the one table of per-type overrides. :func:`build_tiny`
builds the model on the meta device first and refuses anything that would still be large, so
a config that cannot be made tiny never allocates gigabytes.

Example:
    >>> cfg = tiny_config("llama")
    >>> cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    (32, 2, 512)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["MAX_TINY_ELEMENTS", "TINY", "Tiny", "TooBig", "build_tiny", "causal_lm_types",
           "tiny_config"]

#: Generic shrink: every field of these names that a config (or a nested sub-config) has.
SHRINK: dict[str, Any] = {
    "hidden_size": 32, "d_model": 32, "n_embd": 32, "embed_dim": 32, "dim": 32,
    "num_hidden_layers": 2, "n_layer": 2, "num_layers": 2, "n_layers": 2, "decoder_layers": 2,
    "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 64,
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "decoder_attention_heads": 4,
    "num_key_value_heads": 2, "multi_query_group_num": 2,
    "intermediate_size": 64, "ffn_dim": 64, "n_inner": 64, "decoder_ffn_dim": 64, "d_ff": 64,
    "ffn_hidden_size": 64,
    "vocab_size": 512, "max_position_embeddings": 128, "n_positions": 128, "n_ctx": 128,
    "head_dim": 8,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_k": 2, "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32, "n_shared_experts": 1,
    "num_experts_per_token": 2, "moe_topk": 2, "top_k_experts": 2,
    "n_group": 1, "topk_group": 1, "num_expert_group": 1,
    "first_k_dense_replace": 1, "num_dense_layers": 1,
    # BERT-style encoders behind a causal-LM head: causal attention, as their *ForCausalLM
    # asks ("add is_decoder=True"); bidirectional, a prefix's logits change with what follows
    "is_decoder": True,
}

#: Largest model (parameters + buffers, elements) the coverage run builds for real.
MAX_TINY_ELEMENTS = 4_000_000

_TOKEN_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
                 "sep_token_id", "cls_token_id", "mask_token_id", "unk_token_id")


@dataclass(frozen=True)
class Tiny:
    """One row of :data:`TINY`: config overrides for a model type (a nested dict for a
    sub-config such as ``text_config``), or the reason it cannot be built tiny at all."""

    overrides: dict[str, Any] = field(default_factory=dict)
    refuse: str | None = None


#: Multi-head latent attention (DeepSeek-V2/V3 style) at width 32.
_MLA: dict[str, Any] = {"kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 4,
                        "qk_nope_head_dim": 4, "v_head_dim": 8, "head_dim": 4,
                        "num_key_value_heads": 4}
#: Mamba-2 mixers at width 32 (expand 2 → 64 = 4 heads × 16).
_MAMBA2: dict[str, Any] = {"mamba_n_heads": 4, "mamba_d_head": 16, "mamba_d_state": 16,
                           "mamba_chunk_size": 8, "mamba_n_groups": 1}
#: DeepSeek sparse-attention indexers.
#: (top-k above the tiny prompts' length: every key is kept, so a near-tie in the indexer's
#: scores cannot flip a discrete choice between the cached and the no-cache forward)
_INDEXER: dict[str, Any] = {"index_head_dim": 8, "index_n_heads": 2, "index_topk": 64}

#: Qwen4-Exp's query-sparse-attention indexer (always built, no defaults).
_QSA: dict[str, Any] = {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 8,
                        "indexer_budget": 4, "indexer_compress_ratio": 2}
_DRAFTER = ("not a standalone decoder: a multi-token-prediction draft head that reads its "
            "backbone's KV states")

#: THE per-type table: what the generic shrink gets wrong for a type, or why it is refused.
TINY: dict[str, Tiny] = {
    "axk1": Tiny(_MLA),
    "axk2": Tiny(_MLA),
    "bailing_hybrid": Tiny({**_MLA, "linear_head_dim": 8, "linear_num_heads": 4,
                            "layer_group_size": 2, "first_k_dense_replace": 1}),
    "bamba": Tiny({**_MAMBA2, "attn_layer_indices": [1]}),
    "blt": Tiny({"encoder_hash_byte_group_vocab": 64,
                 "encoder_config": {"hidden_size_global": 32},
                 "decoder_config": {"hidden_size_global": 32},
                 "global_config": {"encoder_cross_output_size": 32}}),
    "codegen": Tiny({"rotary_dim": 4}),
    "deepseek_v2": Tiny(_MLA),
    "deepseek_v3": Tiny(_MLA),
    "deepseek_v32": Tiny({**_MLA, **_INDEXER}),
    "deepseek_v4": Tiny(_MLA),
    "dots3_note": Tiny({"text_config": {"num_key_value_heads": 4}}),
    "dots3_note_text": Tiny({"num_key_value_heads": 4}),
    "falcon_h1": Tiny({**_MAMBA2, "mamba_d_ssm": 64}),
    "gemma3n_text": Tiny({"num_kv_shared_layers": 0, "vocab_size_per_layer_input": 512,
                          "hidden_size_per_layer_input": 8, "laurel_rank": 4}),
    "gemma4": Tiny({"text_config": {"vocab_size_per_layer_input": 512,
                                    "hidden_size_per_layer_input": 8}}),
    "gemma4_assistant": Tiny(refuse=_DRAFTER),
    "gemma4_text": Tiny({"vocab_size_per_layer_input": 512, "hidden_size_per_layer_input": 8}),
    "gemma4_unified_assistant": Tiny(refuse=_DRAFTER),
    "glm4_moe_lite": Tiny(_MLA),
    "glm_moe_dsa": Tiny({**_MLA, **_INDEXER}),
    "gptj": Tiny({"rotary_dim": 4}),
    "granitemoehybrid": Tiny({**_MAMBA2, "layer_types": ["mamba", "attention"]}),
    "hy_v4": Tiny({**_MLA, **_INDEXER, "v_head_dim": 8}),
    "inkling2_loop_text": Tiny({"unpadded_vocab_size": 500, "swa_head_dim": 8, "d_rel": 4,
                                "n_layers_per_attn_res_block": 1}),
    "inkling2_text": Tiny({"unpadded_vocab_size": 500, "swa_head_dim": 8, "d_rel": 4,
                           "n_layers_per_attn_res_block": 1}),
    "jamba": Tiny({"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2,
                   "expert_layer_offset": 1, "mamba_dt_rank": 4, "use_mamba_kernels": False}),
    "kimi_linear": Tiny({**_MLA, "linear_head_dim": 8, "linear_num_heads": 4}),
    "lfm2": Tiny({"layer_types": ["conv", "full_attention"], "full_attn_idxs": [1]}),
    "lfm2_moe": Tiny({"num_dense_layers": 1, "layer_types": ["conv", "full_attention"]}),
    "longcat_flash": Tiny({**_MLA, "expert_ffn_hidden_size": 16, "zero_expert_num": 2,
                           "moe_topk": 2}),
    "mamba": Tiny({"time_step_rank": 4}),
    "musicgen": Tiny(refuse="not a text decoder: MusicGen's decoder reads and writes audio "
                            "codebooks (one id stream per codebook)"),
    "musicgen_melody": Tiny(refuse="not a text decoder: MusicGen's decoder reads and writes "
                                   "audio codebooks (one id stream per codebook)"),
    "mamba2": Tiny({"num_heads": 4, "head_dim": 16, "state_size": 16, "n_groups": 1,
                    "chunk_size": 8}),
    "minicpm3": Tiny(_MLA),
    "nemotron_h": Tiny({"ssm_state_size": 16, "mamba_num_heads": 4, "mamba_head_dim": 16,
                        "n_groups": 1, "chunk_size": 8}),
    "phi4_multimodal": Tiny(refuse="cannot be built tiny: its audio and vision embedders "
                                   "(part of the causal LM) keep megabyte-size convolutions"),
    "recurrent_gemma": Tiny({"num_hidden_layers": 3, "attention_window_size": 16,
                             "lru_width": 32}),
    "reformer": Tiny({"is_decoder": True, "attn_layers": ["local", "local"],
                      "axial_pos_shape": [8, 16], "axial_pos_embds_dim": [16, 16],
                      "attention_head_size": 8, "local_attn_chunk_length": 8,
                      "lsh_attn_chunk_length": 8}),
    "qwen4_exp": Tiny({"text_config": _QSA}),
    "qwen4_exp_text": Tiny(_QSA),
    "roc_bert": Tiny({"shape_vocab_size": 64, "pronunciation_vocab_size": 64,
                      "shape_embed_dim": 8, "pronunciation_embed_dim": 8}),
    "sarvam_mla": Tiny(_MLA),
    "xlm": Tiny(refuse="not a causal decoder: XLM generates masked-LM style (a [MASK] token "
                       "appended and re-read every step, no KV cache), so there are no prompt "
                       "and generation positions to check"),
    "youtu": Tiny(_MLA),
    "zamba": Tiny({"num_hidden_layers": 4, "attn_layer_period": 2, "attn_layer_offset": 1,
                   "mamba_dt_rank": 4, "use_mamba_kernels": False}),
    "zamba2": Tiny({"mamba_headdim": 16, "n_mamba_heads": 4, "mamba_d_state": 16,
                    "chunk_size": 8, "adapter_rank": 4, "use_mamba_kernels": False}),
    "zaya": Tiny({"num_experts_per_tok": 1, "router_hidden_size": 8}),
}


class TooBig(Exception):
    """The tiny config still builds a model too large to allocate."""


def causal_lm_types() -> list[str]:
    """Every model type of the installed transformers' causal-LM auto mapping, sorted.

    Example:
        >>> "llama" in causal_lm_types()
        True
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _fields(config: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(config).items() if not k.startswith("_")}


_LAYER_COUNTS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers")


def _representative(values: list[Any], n: int) -> list[Any]:
    """``n`` entries of a per-layer list that keep every distinct value, in first-seen order
    (so a hybrid's tiny model still has one block of each kind)."""
    distinct: list[Any] = []
    for value in values:
        if value not in distinct:
            distinct.append(value)
    return [distinct[i % len(distinct)] for i in range(n)]


def _shrunk_kwargs(config: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs that shrink ``config`` (an instance of its type's defaults)."""
    from transformers import PretrainedConfig

    stored = _fields(config)
    kwargs: dict[str, Any] = {k: v for k, v in SHRINK.items() if k in stored}
    old_layers = next((stored[k] for k in _LAYER_COUNTS if isinstance(stored.get(k), int)),
                      None)
    if old_layers and old_layers > 2:
        per_layer = {name: value for name, value in stored.items()
                     if isinstance(value, list) and len(value) == old_layers}
        distinct = {name: len({repr(v) for v in value}) for name, value in per_layer.items()}
        kinds = max([n for n in distinct.values() if n <= 4] + [2])
        kinds = next((overrides[k] for k in _LAYER_COUNTS if k in overrides), kinds)
        for name in _LAYER_COUNTS:
            if name in kwargs:
                kwargs[name] = kinds
        for name, value in per_layer.items():  # per-layer lists follow the depth
            kwargs[name] = (_representative(value, kinds) if distinct[name] <= 4
                            else value[:kinds])  # (an index list, e.g. full_attn_idxs)
    for name, value in stored.items():
        if isinstance(value, PretrainedConfig):
            kwargs[name] = {"model_type": value.model_type,
                            **_shrunk_kwargs(value, overrides.get(name, {}))}
    vocab = kwargs.get("vocab_size", stored.get("vocab_size"))
    if isinstance(vocab, int):
        for name in _TOKEN_FIELDS:
            token = stored.get(name)
            if isinstance(token, int) and token >= vocab:
                kwargs[name] = min(_TOKEN_FIELDS.index(name), vocab - 1)
            elif isinstance(token, list) and any(isinstance(x, int) and x >= vocab
                                                 for x in token):
                kwargs[name] = [min(2, vocab - 1)]
    for name, value in overrides.items():
        if not isinstance(value, dict) or not isinstance(stored.get(name), PretrainedConfig):
            kwargs[name] = copy.deepcopy(value)
    return kwargs


def tiny_config(model_type: str) -> Any:
    """The shrunk config of ``model_type`` (generic shrink, then its :data:`TINY` row).

    Example:
        >>> tiny_config("gpt2").n_layer
        2
    """
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    row = TINY.get(model_type, Tiny())
    return cls(**_shrunk_kwargs(cls(), row.overrides))


def _elements(model: nn.Module) -> int:
    return sum(t.numel() for t in [*model.parameters(), *model.buffers()])


def build_tiny(model_type: str, seed: int = 0, attn: str | None = "eager") -> nn.Module:
    """A random-weight fp32 ``*ForCausalLM`` of ``model_type`` in eval mode, from
    :func:`tiny_config`. Built on the meta device first: :class:`TooBig` if it would hold more
    than :data:`MAX_TINY_ELEMENTS` elements.

    Example:
        >>> model = build_tiny("llama")
        >>> type(model).__name__
        'LlamaForCausalLM'
    """
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if attn is not None:
        kwargs["attn_implementation"] = attn
    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(config, **kwargs)
    size = _elements(shell)
    del shell
    if size > MAX_TINY_ELEMENTS:
        raise TooBig(f"{size / 1e6:.1f}M elements even when shrunk")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, **kwargs)
    model.eval()
    return model
