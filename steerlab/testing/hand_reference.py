"""The hand-written side of the steering checks: running a model with plain torch and
transformers calls, and adding a vector with a forward hook written without any steerlab code.

:mod:`steerlab.testing.checks` holds steerlab's steering against these. (The naive scoring
loops the benchmarks compare against are :mod:`steerlab.testing.reference`.)

Example:
    >>> from steerlab.testing.tiny import tiny_model
    >>> model = tiny_model("llama", n_layers=2)
    >>> out, seen = capture(model, model.model.layers, torch.tensor([[3, 4, 5]]))
    >>> [len(v) for v in seen.values()], logits_of(out).shape[:2]
    ([1, 1], torch.Size([1, 3]))
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["Hooked", "capture", "hand_hook", "hf_generate", "hidden_states_of", "logits_of",
           "max_diff", "output_hidden", "plain_forward", "reference_loop", "teacher_forced"]


def hand_hook(vector: torch.Tensor, weight: torch.Tensor | None = None) -> Callable[..., Any]:
    """A forward hook that adds ``weight[b, t] · vector`` (``vector`` everywhere when no
    weight) to a block's output hidden states — written without any steerlab code, as the
    reference steerlab's steering is held against.

    Example:
        >>> hook = hand_hook(torch.ones(2))
        >>> hook(None, (), (torch.zeros(1, 1, 2), "cache"))[0].tolist()
        [[[1.0, 1.0]]]
    """
    def hook(_module: Any, _args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            hidden, rest = output, None
        elif isinstance(output, tuple | list) and output and \
                isinstance(output[0], torch.Tensor):
            hidden, rest = output[0], output[1:]
        else:
            raise TypeError(f"block output is a {type(output).__name__}")
        add = vector.to(hidden.dtype)
        if weight is not None:
            add = weight.to(hidden.device, hidden.dtype)[..., None] * add
        hidden = hidden + add
        if rest is None:
            return hidden
        return [hidden, *rest] if isinstance(rest, list) else (hidden, *rest)
    return hook


class Hooked:
    """Hand hooks on some blocks for the duration of a ``with``."""

    def __init__(self, blocks: nn.ModuleList, hooks: dict[int, Callable[..., Any]]):
        self.handles = [blocks[k].register_forward_hook(h) for k, h in hooks.items()]

    def __enter__(self) -> Hooked:
        return self

    def __exit__(self, *_exc: object) -> None:
        for handle in self.handles:
            handle.remove()


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def plain_forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None = None,
                  hidden: bool = False, like_generate: bool = False) -> Any:
    """One no-cache forward; with a mask (or ``like_generate``) the position ids are passed
    explicitly, counted over real tokens from 0 as ``generate`` passes them (RoBERTa-style
    models would otherwise count from ``padding_idx + 1`` and differ from ``generate`` even
    unsteered)."""
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"input_ids": ids.to(device)}
    if like_generate and mask is None:
        mask = torch.ones_like(ids)
    if mask is not None:
        kwargs["attention_mask"] = mask.to(device)
        if _accepts(model, "position_ids"):
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp_min(0).to(device)
    if _accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    if hidden:
        kwargs["output_hidden_states"] = True
    with torch.no_grad():
        return model(**kwargs)


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a forward's output (a dict-like output or a tuple), as float32."""
    logits = output["logits"] if hasattr(output, "keys") else output[0]
    return logits.float()


def hidden_states_of(output: Any) -> tuple[torch.Tensor, ...] | None:
    """The output's ``hidden_states`` (embeddings first), or None where it has none."""
    keys = output.keys() if hasattr(output, "keys") else ()
    found = output["hidden_states"] if "hidden_states" in keys else None
    if isinstance(found, tuple | list) and all(isinstance(h, torch.Tensor) for h in found):
        return tuple(found)
    return None


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest |a − b| (infinite when the shapes differ, 0 when empty).

    Example:
        >>> max_diff(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]))
        0.5
    """
    if a.shape != b.shape:
        return math.inf
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def output_hidden(output: Any) -> torch.Tensor | None:
    """The hidden states in a block's output (a tensor, or the first of a tuple), if any."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def capture(model: nn.Module, blocks: nn.ModuleList, ids: torch.Tensor
            ) -> tuple[Any, dict[int, list[torch.Tensor]]]:
    """An unsteered forward (hidden states on) and every block output it produced."""
    seen: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(blocks))}

    def keep(k: int) -> Callable[..., None]:
        def hook(_m: Any, _a: Any, output: Any) -> None:
            hidden = output_hidden(output)
            if hidden is not None:
                seen[k].append(hidden.detach().float().clone())
        return hook

    handles = [b.register_forward_hook(keep(k)) for k, b in enumerate(blocks)]
    try:
        out = plain_forward(model, ids, hidden=True)
    finally:
        for handle in handles:
            handle.remove()
    return out, seen


def hf_generate(model: nn.Module, ids: torch.Tensor, new: int) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """``new`` greedy tokens from transformers' ``model.generate`` (KV cache, no stopping)
    and the logits of each step."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False,
                              num_beams=1, output_logits=True, return_dict_in_generate=True,
                              eos_token_id=None, pad_token_id=0, use_cache=True,
                              repetition_penalty=1.0, no_repeat_ngram_size=0)
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device),  # type: ignore[operator]
                             attention_mask=torch.ones_like(ids).to(device),
                             generation_config=config)
    logits = torch.stack([x[0].float() for x in out.logits])
    return out.sequences[0, ids.shape[1]:].cpu(), logits.cpu()


def reference_loop(model: nn.Module, blocks: nn.ModuleList, prompt: torch.Tensor,
                   tokens: torch.Tensor, layer: int | None, vector: torch.Tensor | None,
                   positions: str) -> torch.Tensor:
    """No-cache reference: the logits after each prefix prompt + tokens[:t], v added by hand
    at the absolute positions ``positions`` selects (``prompt``: < prompt length;
    ``generation``: the rest)."""
    plen = prompt.shape[1]
    rows = []
    for t in range(len(tokens)):
        seq = torch.cat([prompt, tokens[None, :t]], dim=1)
        hooks = {}
        if layer is not None and vector is not None:
            pos = torch.arange(seq.shape[1])
            weight = (pos < plen) if positions == "prompt" else (pos >= plen)
            hooks[layer] = hand_hook(vector, weight[None].float())
        with Hooked(blocks, hooks):
            rows.append(logits_of(plain_forward(model, seq, like_generate=True))[0, -1].cpu())
    return torch.stack(rows)


def teacher_forced(model: nn.Module, prompt: torch.Tensor, tokens: torch.Tensor
                   ) -> torch.Tensor:
    """Unsteered logits after each prefix prompt + tokens[:t], from one causal forward."""
    seq = torch.cat([prompt, tokens[None, :-1]], dim=1) if len(tokens) > 1 else prompt
    logits = logits_of(plain_forward(model, seq, like_generate=True))[0].cpu()
    return logits[prompt.shape[1] - 1:]
