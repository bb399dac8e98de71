"""What a decoder is made of, read from its modules and config without running it: steerlab's
blocks, the width, the final norm, the kind of each block, and notable features (MoE routers,
sliding windows, hybrid state-space / linear-attention blocks).

Example:
    >>> from steerlab.testing.tiny import tiny_model
    >>> describe(tiny_model("llama", n_layers=2)).final_norm
    'model.norm (LlamaRMSNorm)'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from torch import nn

from steerlab.model.arch import find_blocks, model_width
from steerlab.testing.findings import ModelReport

__all__ = ["describe", "text_config"]

_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f", "final_norm",
               "layer_norm", "layernorm")
_HYBRID_WORDS = ("mamba", "ssm", "linearattention", "linear_attention", "recurrent", "rglru",
                 "shortconv", "rwkv", "lstm", "deltanet", "gateddelta", "retention",
                 "lightning", "kda", "mixer")
_MOE_WORDS = ("expert", "router", "sparsemoe")


def _final_norm(model: nn.Module, path: str) -> str | None:
    parent_path = path.rsplit(".", 1)[0] if "." in path else ""
    parent = model.get_submodule(parent_path) if parent_path else model
    for name in _NORM_NAMES:
        module = getattr(parent, name, None)
        if isinstance(module, nn.Module) and not isinstance(module, nn.ModuleList):
            prefix = f"{parent_path}." if parent_path else ""
            return f"{prefix}{name} ({type(module).__name__})"
    return None


def describe(model: nn.Module) -> ModelReport:
    """Blocks, width, final norm, block kinds and notable features (MoE routers, sliding
    windows, hybrid SSM / linear-attention blocks) of ``model``; no forward is run.

    Example:
        >>> from steerlab.testing.tiny import tiny_model
        >>> describe(tiny_model("llama", n_layers=2)).kinds
        {'LlamaDecoderLayer': [0, 1]}
    """
    config = getattr(model, "config", None)
    report = ModelReport(model_type=str(getattr(config, "model_type", type(model).__name__)))
    path, blocks = find_blocks(model)
    report.blocks_path, report.n_blocks = path, len(blocks)
    report.width = model_width(model)
    report.final_norm = _final_norm(model, path)
    for k, block in enumerate(blocks):
        report.kinds.setdefault(type(block).__name__, []).append(k)
    report.features = _features(model, blocks)
    return report


def text_config(model: nn.Module) -> Any:
    """The config of the text model (a multimodal model's ``get_text_config()``), or None."""
    config: Any = getattr(model, "config", None)
    get_text = getattr(config, "get_text_config", None)
    return get_text() if callable(get_text) else config


def _span(indices: Sequence[int]) -> str:
    return ",".join(str(i) for i in indices) if len(indices) <= 6 else \
        f"{indices[0]}..{indices[-1]} ({len(indices)})"


def _features(model: nn.Module, blocks: nn.ModuleList) -> list[str]:
    out: list[str] = []
    moe: dict[str, list[int]] = {}
    mixers: dict[str, list[int]] = {}
    for k, block in enumerate(blocks):
        for name, module in block.named_modules():
            if not name or type(module).__module__.startswith("torch."):
                continue
            cls = type(module).__name__
            low = cls.lower()
            if any(w in low for w in _MOE_WORDS) or low.endswith(("moe", "moeblock")):
                moe.setdefault(cls, []).append(k)
            if any(w in low for w in _HYBRID_WORDS) and not any(
                    w in low for w in ("norm", "rotary", "embedding", "mlp")):
                mixers.setdefault(cls, []).append(k)
    if moe:
        out.append("MoE: " + ", ".join(f"{cls} in blocks {_span(sorted(set(ks)))}"
                                       for cls, ks in moe.items()))
    if mixers:
        out.append("state-space / linear-attention / recurrent: " + ", ".join(
            f"{cls} in blocks {_span(sorted(set(ks)))}" for cls, ks in mixers.items()))
    kinds: dict[str, list[int]] = {}
    for k, block in enumerate(blocks):
        kinds.setdefault(type(block).__name__, []).append(k)
    if len(kinds) > 1:
        out.append("hybrid: " + ", ".join(f"{cls} in blocks {_span(ks)}"
                                          for cls, ks in kinds.items()))
    text = text_config(model)
    window = getattr(text, "sliding_window", None)
    types = getattr(text, "layer_types", None)
    if isinstance(types, list | tuple) and types and len(set(map(str, types))) > 1:
        counts = Counter(str(t) for t in types)
        out.append("layer types " + ", ".join(f"{t} ×{n}" for t, n in counts.items()))
    if isinstance(window, int) and window > 0:
        out.append(f"sliding window {window}")
    return out
