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
    >>> resolve_layers("2-5:2", 6), resolve_layer(-1, 6), resolve_layer("0.5", 5)
    ([2, 4], 5, 2)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from torch import nn

from steerlab.errors import SteerlabError

__all__ = [
    "find_blocks",
    "n_layers",
    "register_block_path",
    "resolve_layer",
    "resolve_layers",
]

LayerSpec = int | float | str

_BLOCK_PATHS: dict[str, str] = {}
_RANGE = re.compile(r"^(-?[0-9.]+)\s*-\s*(-?[0-9.]+)(?:\s*:\s*(-?[0-9]+))?$")


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


def find_blocks(model: nn.Module, path: str | None = None) -> tuple[str, nn.ModuleList]:
    """Return ``(dotted_path, blocks)``: the model's decoder blocks.

    Order of precedence: ``path`` if given, then a path registered with
    :func:`register_block_path` for ``model.config.model_type``, then the longest
    ``nn.ModuleList`` whose children all share one class (ties: shallowest path, then first).

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
            path = _BLOCK_PATHS.get(model_type)
    if path is not None:
        return path, _at_path(model, path)

    best: tuple[int, int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        key = (-len(module), name.count("."))
        if best is None or key < best[:2]:
            best = (*key, name, module)
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


def _bad(spec: object) -> SteerlabError:
    return SteerlabError(
        f"invalid layer {spec!r}: expected an index (e.g. 8 or -1), a fraction of depth in "
        "[0, 1] (e.g. 0.5), a range like '8-20' or '8-20:2', a list like '10,16', or 'all'"
    )


def resolve_layer(spec: LayerSpec, n: int) -> int:
    """Turn one layer spec into an index in ``0..n-1`` for a model with ``n`` blocks.

    Ints count from the start, negatives from the end (-1 = last); floats in [0, 1] (or
    strings like ``"0.5"``) are fractions of depth, ``round(f * (n - 1))``; strings of ints
    work like ints. Anything else, or out of range, raises :class:`SteerlabError`.

    Example:
        >>> resolve_layer(-1, 30), resolve_layer(0.5, 31), resolve_layer("12", 30)
        (29, 15, 12)
    """
    if n <= 0:
        raise SteerlabError(f"cannot pick layer {spec!r}: model has no layers")
    value: int | float
    if isinstance(spec, bool):
        raise _bad(spec)
    if isinstance(spec, str):
        text = spec.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise _bad(spec) from None
    elif isinstance(spec, int | float):
        value = spec
    else:
        raise _bad(spec)

    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:  # also rejects nan
            raise SteerlabError(
                f"layer fraction {value} out of range: fractions of depth must be in [0, 1]"
            )
        return round(value * (n - 1))
    if not -n <= value < n:
        raise SteerlabError(
            f"layer {value} out of range: model has {n} layers (valid 0..{n - 1} or -{n}..-1)"
        )
    return value % n


def _resolve_str(spec: str, n: int) -> list[int]:
    text = spec.strip()
    if text.lower() == "all":
        return list(range(n))
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = _RANGE.match(part)
        if match is None:
            out.append(resolve_layer(part, n))
            continue
        start, end = resolve_layer(match[1], n), resolve_layer(match[2], n)
        step = int(match[3]) if match[3] is not None else 1
        if step < 1:
            raise SteerlabError(f"layer range '{part}': step must be >= 1, got {step}")
        if start > end:
            raise SteerlabError(f"layer range '{part}' is empty: start {start} is after end {end}")
        out.extend(range(start, end + 1, step))
    return out


def resolve_layers(spec: LayerSpec | Iterable[LayerSpec], n: int) -> list[int]:
    """Turn a layer selection into sorted, unique indices for a model with ``n`` blocks.

    Accepts ``"all"``, inclusive ranges ``"8-20"`` with optional step ``"8-20:2"``,
    comma lists ``"10,16"``, single specs (``-1``, ``0.5``, ``"0.5"``; see
    :func:`resolve_layer`) and iterables of any of these.

    Example:
        >>> resolve_layers("8-20:4", 30), resolve_layers("10,16,-1", 30)
        ([8, 12, 16, 20], [10, 16, 29])
        >>> resolve_layers([0.0, 1.0, "all"], 3)
        [0, 1, 2]
    """
    if isinstance(spec, str):
        out = _resolve_str(spec, n)
    elif isinstance(spec, int | float):
        out = [resolve_layer(spec, n)]
    else:
        out = []
        try:
            items = list(spec)
        except TypeError:
            raise _bad(spec) from None
        for item in items:
            out.extend(_resolve_str(item, n) if isinstance(item, str) else [resolve_layer(item, n)])
    if not out:
        raise SteerlabError(f"layer selection {spec!r} selects no layers")
    return sorted(set(out))


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
