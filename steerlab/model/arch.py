"""Find a model's decoder blocks and turn user layer specs into block indices.

Blocks are found structurally (the longest ``nn.ModuleList`` of same-class modules), so any
Hugging Face decoder works without a per-architecture table; an explicit path or a path
registered per ``config.model_type`` overrides the search.

Example:
    >>> import torch.nn as nn
    >>> class Toy(nn.Module):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(6))
    >>> find_blocks(Toy())[0]
    'layers'
    >>> from steerlab.util.parse import resolve_layer, resolve_layers
    >>> resolve_layers("2-5:2", 6), resolve_layer(-1, 6), resolve_layer("0.5", 5)
    ([2, 4], 5, 2)
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerlab.errors import SteerlabError

__all__ = [
    "UNSTEERABLE",
    "cache_kwarg",
    "cache_offset",
    "count_cache",
    "declared_layers",
    "find_blocks",
    "fork_cache",
    "join_block_output",
    "model_width",
    "n_layers",
    "register_block_path",
    "returned_cache",
    "split_block_output",
    "unsteerable_reason",
]

_BLOCK_PATHS: dict[str, str] = {}

#: ``config.model_type`` → why steering at its block outputs cannot be exact (checked on tiny
#: models of each by ``steerlab models check``; docs/ARCHITECTURES.md lists the rest).
#: :func:`find_blocks` refuses these unless the caller names a block path explicitly.
_HYPER = ("hyper-connections: the residual stream between blocks is several parallel streams "
          "(hc_mult × hidden_size), not one hidden state to add a vector to")
_ALTUP = ("AltUp: every block carries several predicted copies of the residual stream "
          "([altup_num_inputs, batch, tokens, width]), not one hidden state")
UNSTEERABLE: dict[str, str] = {
    "blt": "Byte Latent Transformer: three stacks (local byte encoder, global patch "
           "transformer, local byte decoder), no single stream of decoder blocks",
    "cpmant": "prepends learned prompt positions inside the model: block outputs are longer "
              "than the input, so token positions cannot be matched",
    "deepseek_v4": _HYPER,
    "dory": "recurrent depth: a middle group of blocks runs several times per forward, so a "
            "block's output is not one site of the residual stream",
    "gemma3n": _ALTUP,
    "gemma3n_text": _ALTUP,
    "hrm_text": "hierarchical recurrence: the same blocks run in loops, so a block's output is "
                "not one site of the residual stream",
    "hy_v4": _HYPER,
    "prophetnet": "n-gram stream decoder: block outputs hold the main and the predicting "
                  "streams side by side ([batch, (1 + ngram) × tokens, width])",
    "qwen4_exp": _HYPER,
    "qwen4_exp_text": _HYPER,
    "reformer": "reversible residual layers: each block carries two half-streams (attention "
                "and feed-forward), no single block output",
    "xlnet": "two-stream attention with time-major hidden states ([tokens, batch, width])",
}


def unsteerable_reason(model: nn.Module) -> str | None:
    """Why steerlab refuses to steer ``model``'s blocks (None when it does not).

    Example:
        >>> unsteerable_reason(nn.Linear(2, 2)) is None
        True
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return UNSTEERABLE.get(model_type) if isinstance(model_type, str) else None


def declared_layers(model: nn.Module) -> int | None:
    """The number of decoder layers the model's (text) config declares, if it says.

    Example:
        >>> declared_layers(nn.Linear(2, 2)) is None
        True
    """
    config = getattr(model, "config", None)
    get_text = getattr(config, "get_text_config", None)
    text = get_text(decoder=True) if callable(get_text) else config
    for name in ("decoder_layers", "num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = getattr(text, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def register_block_path(model_type: str, path: str) -> None:
    """Use the dotted ``path`` as the block list for every model whose ``config.model_type``
    is ``model_type``, instead of searching.

    Example:
        >>> register_block_path("my_arch", "backbone.blocks")
    """
    _BLOCK_PATHS[model_type] = path


def _at_path(model: nn.Module, path: str) -> nn.ModuleList:
    try:
        found = model.get_submodule(path)
    except AttributeError:
        raise SteerlabError(f"block path '{path}' not found in {type(model).__name__}") from None
    if not isinstance(found, nn.ModuleList):
        raise SteerlabError(f"block path '{path}' is a {type(found).__name__}, not a ModuleList")
    return found


def _decoder_prefix(model: nn.Module) -> str | None:
    """The dotted path (with a trailing dot) of the language model inside a multimodal model
    (``get_decoder()``), so its blocks win over a vision or audio tower's."""
    get_decoder = getattr(model, "get_decoder", None)
    if not callable(get_decoder):
        return None
    try:
        decoder = get_decoder()
    except Exception:
        return None
    if not isinstance(decoder, nn.Module) or decoder is model:
        return None
    return next((f"{name}." for name, module in model.named_modules() if module is decoder),
                None)


def find_blocks(model: nn.Module, path: str | None = None) -> tuple[str, nn.ModuleList]:
    """Return ``(dotted_path, blocks)``: the model's decoder blocks.

    Order of precedence: ``path`` if given, then a path registered with
    :func:`register_block_path` for ``model.config.model_type``, then the shallowest
    ``nn.ModuleList`` as long as the number of layers the (text) config declares, inside the
    language model (``get_decoder()``) of a multimodal model where there is one — its blocks
    may be of several classes (hybrids: attention and Mamba / linear-attention blocks in one
    list) — then the longest ``nn.ModuleList`` whose children all share one class (ties:
    shallowest path, then first). A model type in :data:`UNSTEERABLE` is refused unless
    ``path`` is given.

    Example:
        >>> import torch.nn as nn
        >>> m = nn.Module()
        >>> m.h = nn.ModuleList(nn.Linear(2, 2) for _ in range(3))
        >>> path, blocks = find_blocks(m)
        >>> path, len(blocks)
        ('h', 3)
    """
    if path is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if isinstance(model_type, str):
            reason = UNSTEERABLE.get(model_type)
            if reason is not None:
                raise SteerlabError(f"{model_type}: {reason}")
            path = _BLOCK_PATHS.get(model_type)
    if path is not None:
        return path, _at_path(model, path)

    declared = declared_layers(model)
    decoder = _decoder_prefix(model)
    best: tuple[int, int, str, nn.ModuleList] | None = None
    matching: tuple[int, int, int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        same = len({type(child) for child in module}) == 1
        if declared is not None and len(module) == declared:
            outside = 0 if decoder is None or name.startswith(decoder) else 1
            rank = (outside, name.count("."), 0 if same else 1)
            if matching is None or rank < matching[:3]:
                matching = (*rank, name, module)
        if not same:
            continue
        key = (-len(module), name.count("."))
        if best is None or key < best[:2]:
            best = (*key, name, module)
    if matching is not None:
        return matching[3], matching[4]
    if best is None:
        raise SteerlabError(
            f"no decoder blocks found in {type(model).__name__}: no ModuleList of same-class "
            "modules; pass the block path explicitly"
        )
    return best[2], best[3]


def n_layers(model: nn.Module) -> int:
    """Number of decoder blocks in ``model``.

    Example:
        >>> import torch.nn as nn
        >>> m = nn.Module()
        >>> m.layers = nn.ModuleList(nn.Identity() for _ in range(4))
        >>> n_layers(m)
        4
    """
    return len(find_blocks(model)[1])


def cache_kwarg(model: nn.Module) -> str:
    """The keyword this transformers version's ``forward`` takes the KV cache under.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns until 5.40);
    steerlab passes whichever the running version declares, so no deprecation warning leaks.

    Example:
        >>> class M(nn.Module):
        ...     def forward(self, input_ids=None, cache=None): ...
        >>> cache_kwarg(M())
        'cache'
    """
    import inspect

    try:
        names = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in names else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a forward returned (``output.cache`` on 5.24+, else ``past_key_values``)."""
    keys = output.keys() if hasattr(output, "keys") else ()
    if "cache" in keys:
        return output["cache"]
    return output["past_key_values"] if "past_key_values" in keys else None


def fork_cache(cache: Any, rows: int = 1) -> Any:
    """A private copy of a shared-prefix KV cache for one forward, repeated to ``rows`` rows.

    The shared-prefix trick: a prefix every row shares runs once into a (batch-1) KV cache;
    each later forward continues a deep copy of it, each row repeated ``rows`` times
    (``batch_repeat_interleave``), so the shared cache itself is never extended and can be
    forked again. Extraction (pairs after a shared chat prefix), the sweep engine (cells after
    a token prefix) and the suffix search (candidates after a shared prompt) all fork here.

    Example:
        >>> class Cache:
        ...     rows = 1
        ...     def batch_repeat_interleave(self, times: int) -> None:
        ...         self.rows *= times
        >>> shared = Cache()
        >>> fork_cache(shared, 4).rows, fork_cache(shared).rows, shared.rows
        (4, 1, 1)
    """
    forked = copy.deepcopy(cache)
    if rows > 1:
        forked.batch_repeat_interleave(rows)
    return forked


def split_block_output(output: Any) -> tuple[torch.Tensor, Any]:
    """A decoder block's output as (hidden states, the rest or None).

    Example:
        >>> h, rest = split_block_output((torch.zeros(1), "cache"))
        >>> rest
        ('cache',)
    """
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0], output[1:]  # a list stays a list (GPT-1 blocks return lists)
    raise SteerlabError(f"cannot steer a block whose output is {type(output).__name__}")


def join_block_output(hidden: torch.Tensor, rest: Any) -> Any:
    """The inverse of :func:`split_block_output`."""
    if rest is None:
        return hidden
    return [hidden, *rest] if isinstance(rest, list) else (hidden, *rest)


#: Keyword names under which transformers has passed the KV cache to a model's forward
#: (``past_key_values`` up to 5.23; 5.24 renamed it ``cache``).
CACHE_KWARGS = ("cache", "past_key_values")
#: Keyword names of recurrent states that hold no token count (RWKV's ``state``).
STATE_KWARGS = ("state", "cache_params")

#: Tokens seen so far by caches that cannot count them (state-space / recurrent), keyed weakly
#: by the cache object (or a list state's first tensor); filled by :func:`count_cache` after
#: each steered forward. Nothing is kept on the model.
_COUNTED: dict[int, tuple[weakref.ref[Any], int]] = {}


def _count_key(cache: Any) -> Any:
    if isinstance(cache, list | tuple):
        return next((x for x in cache if isinstance(x, torch.Tensor)), None)
    return cache


def _cache_is_empty(cache: Any) -> bool:
    """Whether a cache object with per-layer states holds nothing yet (a fresh prefill)."""
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list | tuple):
        return False
    for layer in layers:
        if getattr(layer, "is_initialized", False) is True:
            return False
        previous = getattr(layer, "has_previous_state", None)
        if previous is True or (isinstance(previous, dict) and any(previous.values())):
            return False
    return True


def count_cache(cache: Any, total: int) -> None:
    """Remember that ``cache`` (which cannot count tokens itself) now holds ``total`` tokens.

    Example:
        >>> state = [torch.zeros(1)]
        >>> count_cache(state, 7)
        >>> cache_offset({"state": state}, 1)
        7
    """
    key = _count_key(cache)
    if key is None:
        return
    ident = id(key)
    try:  # keyed by identity (a tensor's == is elementwise), dropped when the key dies
        ref = weakref.ref(key, lambda _r: _COUNTED.pop(ident, None))
    except TypeError:  # not weak-referenceable: nothing to count on
        return
    _COUNTED[ident] = (ref, total)


def _counted(cache: Any) -> int | None:
    if _cache_is_empty(cache):
        return 0
    key = _count_key(cache)
    entry = _COUNTED.get(id(key)) if key is not None else None
    if entry is None or entry[0]() is not key:
        return None
    return entry[1]


def _counts_no_tokens(layer: Any) -> bool:
    """A linear-attention / state-space cache layer: its state has no token axis, and its
    token count is not trustworthy (5.25's ``LinearAttentionLayer`` reports 0 for models that
    update the state in place, RecurrentGemma's; 5.24's raises)."""
    return any("LinearAttention" in cls.__name__ or "Mamba" in cls.__name__
               for cls in type(layer).__mro__)


def cache_length(cache: Any) -> int | None:
    """Tokens held by a transformers cache object, or None when it cannot say.

    A cache with per-layer entries is read from its attention layers only (the longest, as
    a sliding window can only under-count): the linear-attention layers of a hybrid stack hold
    a state, not tokens, and :meth:`Cache.get_seq_length` without an index reads layer 0, which
    in a hybrid is often such a layer; placeholder layers (an MLP-only block's) that cannot
    count are skipped. A cache with no layer that can count is unreadable.

    Example:
        >>> from transformers import DynamicCache
        >>> cache = DynamicCache()
        >>> _ = cache.update(torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4), 0)
        >>> cache_length(cache)
        5
        >>> cache_length(object()) is None
        True
    """
    layers = getattr(cache, "layers", None)
    if isinstance(layers, (list, tuple)) and layers:
        lengths = [_layer_length(layer) for layer in layers if not _counts_no_tokens(layer)]
        known = [length for length in lengths if length is not None]
        return max(known) if known else None
    return _layer_length(cache)


def _layer_length(holder: Any) -> int | None:
    """``holder.get_seq_length()``, or None where it has none or cannot say (a state-space /
    linear-attention cache, a placeholder layer of an MLP-only block)."""
    get_seq_length = getattr(holder, "get_seq_length", None)
    if not callable(get_seq_length):
        return None
    try:
        return int(get_seq_length())
    except (ValueError, NotImplementedError, AttributeError, TypeError):
        return None


def cache_offset(kwargs: dict[str, Any], length: int,
                 attention_mask: torch.Tensor | None = None) -> int:
    """Tokens already in the KV cache before a call of ``length`` new tokens.

    Read from whatever the running transformers passes: ``cache_position`` (≤ 5.23), a cache
    object under ``cache`` (5.24+) or ``past_key_values`` (or any other keyword holding an
    object with ``get_seq_length``), checked against a 2-D attention mask, which covers cached
    plus new tokens. A cache that cannot say its length (a state-space cache, RWKV's
    ``state``) counts as empty when it holds no state yet, else as the tokens
    :func:`count_cache` recorded for it after the steered forwards that filled it. When the
    sources disagree, or a cache is present and nothing can say its length, this raises
    instead of guessing: a wrong offset would silently steer the wrong tokens.

    Example:
        >>> cache_offset({}, 3)
        0
        >>> cache_offset({"cache_position": torch.tensor([7])}, 1)
        7
    """
    found: list[tuple[str, int]] = []
    unreadable: list[str] = []
    cache_position = kwargs.get("cache_position")
    if isinstance(cache_position, torch.Tensor) and cache_position.numel():
        found.append(("cache_position", int(cache_position.reshape(-1)[0])))
    for name, value in kwargs.items():
        if value is None or name == "cache_position":
            continue
        if callable(getattr(value, "get_seq_length", None)):
            length_now = cache_length(value)
            if length_now is not None:
                found.append((name, length_now))
                continue
        elif name not in CACHE_KWARGS and name not in STATE_KWARGS:
            continue
        counted = _counted(value)
        if counted is not None:
            found.append((f"{name} (counted)", counted))
        else:
            unreadable.append(f"{name}={type(value).__name__}")
    if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
        found.append(("attention_mask", int(attention_mask.shape[1]) - length))
    if unreadable and not found:
        raise SteerlabError(f"cannot read the KV-cache length from {', '.join(unreadable)} "
                            "and no cache_position or attention mask says it; steering "
                            "positions would be wrong")
    offsets = {offset for _, offset in found}
    if len(offsets) > 1 or any(offset < 0 for offset in offsets):
        seen = ", ".join(f"{name} says {offset}" for name, offset in found)
        raise SteerlabError(f"cannot tell how many tokens are cached before this call ({seen}); "
                            "refusing to steer positions that may be wrong")
    return offsets.pop() if offsets else 0


def model_width(module: nn.Module) -> int | None:
    """The residual-stream width: ``config.hidden_size``, else the input embeddings' width."""
    config = getattr(module, "config", None)
    width = getattr(config, "hidden_size", None)
    if isinstance(width, int):
        return width
    get_embeddings = getattr(module, "get_input_embeddings", None)
    if callable(get_embeddings):
        embeddings = get_embeddings()
        weight = getattr(embeddings, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 2:
            return int(weight.shape[1])
    return None


_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f")


class UnsupportedArchitecture(Exception):
    """The model's forward does not decompose into blocks → norm → head as expected."""


@dataclass
class BlockCall:
    """The arguments one decoder block was called with (to call it again)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Head:
    """Final norm + LM head of a model, applied to chosen positions only.

    ``supported`` is False when the model does something between the last block and the head
    that this does not know (then callers run whole forwards instead).

    Example:
        >>> from steerlab.testing.tiny import tiny_model
        >>> Head(tiny_model("llama"), "model.layers").supported
        True
    """

    def __init__(self, model: nn.Module, blocks_path: str):
        parent_path = blocks_path.rsplit(".", 1)[0] if "." in blocks_path else ""
        parent = model.get_submodule(parent_path) if parent_path else model
        self.norm: nn.Module | None = next(
            (getattr(parent, n) for n in _NORM_NAMES if isinstance(getattr(parent, n, None),
                                                                   nn.Module)), None)
        get_out = getattr(model, "get_output_embeddings", None)
        self.lm_head: nn.Module | None = get_out() if callable(get_out) else None
        self.softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
        self.supported = (self.norm is not None and self.lm_head is not None
                          and getattr(parent, "project_out", None) is None)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        assert self.norm is not None and self.lm_head is not None
        logits = self.lm_head(self.norm(hidden)).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def block_input(call: BlockCall) -> torch.Tensor:
    """The hidden states a recorded block call received."""
    if call.args and isinstance(call.args[0], torch.Tensor):
        return call.args[0]
    hidden = call.kwargs.get("hidden_states")
    if not isinstance(hidden, torch.Tensor):
        raise UnsupportedArchitecture("block input is neither the first argument nor "
                                      "hidden_states=")
    return hidden


def run_block(block: nn.Module, call: BlockCall, hidden: torch.Tensor) -> torch.Tensor:
    """Call ``block`` again as recorded, on new hidden states; its output hidden states."""
    if call.args and isinstance(call.args[0], torch.Tensor):
        out = block(hidden, *call.args[1:], **call.kwargs)
    else:
        out = block(*call.args, **{**call.kwargs, "hidden_states": hidden})
    return split_block_output(out)[0]
