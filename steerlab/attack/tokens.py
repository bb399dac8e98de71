"""Which tokens a suffix may use, and the default starting suffix.

The allowed set starts from llm-attacks / nanoGCG (a token must decode to printable ASCII) and
closes the gaps nanoGCG leaves (it checks only ids below ``tokenizer.vocab_size``):

* every id at or above ``len(tokenizer)`` (padded embedding rows) is forbidden;
* every special id (``all_special_ids``) and every added token (``added_tokens_decoder``:
  chat markers, reserved ids) is forbidden;
* a token must decode to a non-empty string that is printable ASCII (no newline or tab), unless
  ``allow_non_ascii`` (then any non-empty string without control characters);
* a token must re-encode on its own to itself (decode → encode gives back ``[id]``): a token
  that does not is never part of a re-tokenisation-stable suffix where it stands alone;
* plus any ids the caller forbids.

Example:
    >>> from steerlab.testing.tiny import tiny_tokenizer
    >>> tok = tiny_tokenizer()
    >>> mask = allowed_tokens(tok)
    >>> bool(mask[tok.eos_token_id]), bool(mask[tok.encode(" the", add_special_tokens=False)[0]])
    (False, True)
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from steerlab.attack.layout import decode_all
from steerlab.errors import SteerlabError

_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[int, bool], torch.Tensor]] = (
    weakref.WeakKeyDictionary())


def _text_ok(text: str, allow_non_ascii: bool) -> bool:
    if not text:
        return False
    if allow_non_ascii:
        return text.isprintable() and "\ufffd" not in text
    return text.isascii() and text.isprintable()


def _base_mask(tokenizer: Any, rows: int, allow_non_ascii: bool) -> torch.Tensor:
    size = min(rows, len(tokenizer))
    mask = torch.zeros(rows, dtype=torch.bool)
    texts = decode_all(tokenizer, [[i] for i in range(size)])
    again = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for i, (text, ids) in enumerate(zip(texts, again, strict=True)):
        mask[i] = _text_ok(text, allow_non_ascii) and list(ids) == [i]
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    special |= set(getattr(tokenizer, "added_tokens_decoder", None) or {})
    for i in special:
        if 0 <= int(i) < rows:
            mask[int(i)] = False
    return mask


def allowed_tokens(tokenizer: Any, rows: int | None = None, *, allow_non_ascii: bool = False,
                   forbid: Sequence[int] = ()) -> torch.Tensor:
    """Bool mask ``[rows]`` of the token ids a suffix may use (rules in the module docstring).

    ``rows`` is the number of embedding rows (default ``len(tokenizer)``); ids at or above
    ``len(tokenizer)`` are always forbidden. Built once per tokenizer (decoding the vocabulary
    takes about a second for 50k tokens) and cached while the tokenizer lives.

    Example:
        >>> from steerlab.testing.tiny import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> int(allowed_tokens(tok, len(tok) + 5)[len(tok):].sum())
        0
    """
    rows = len(tokenizer) if rows is None else int(rows)
    try:
        per_tok = _CACHE.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: no cache
        per_tok = {}
    key = (rows, allow_non_ascii)
    if key not in per_tok:
        per_tok[key] = _base_mask(tokenizer, rows, allow_non_ascii)
    mask = per_tok[key].clone()
    for i in forbid:
        if 0 <= int(i) < rows:
            mask[int(i)] = False
    if not mask.any():
        raise SteerlabError("no token is allowed in a suffix (check allow_non_ascii / forbid)")
    return mask


#: Starting tokens tried in order for the default initial suffix (GCG's "! !", nanoGCG's "x x").
INIT_TEXTS = (" x", "x", " !", "!")


def initial_suffix(tokenizer: Any, length: int, allowed: torch.Tensor,
                   init: str | Sequence[int] | None = None) -> list[int]:
    """The starting suffix: ``init`` (text or ids; its length wins), else ``length`` copies of
    the first text of :data:`INIT_TEXTS` that is one allowed token and whose repetition
    re-tokenizes to itself (``" x x x …"`` on most tokenizers).

    Example:
        >>> from steerlab.testing.tiny import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> ids = initial_suffix(tok, 3, allowed_tokens(tok))
        >>> len(ids), len(set(ids))
        (3, 1)
    """
    if init is not None:
        ids = (list(tokenizer(init, add_special_tokens=False)["input_ids"])
               if isinstance(init, str) else [int(i) for i in init])
        if not ids:
            raise SteerlabError("the initial suffix is empty")
        bad = [i for i in ids if not (0 <= i < len(allowed)) or not allowed[i]]
        if bad:
            raise SteerlabError(f"the initial suffix uses forbidden token ids {bad[:5]}")
        return ids
    if length < 1:
        raise SteerlabError(f"suffix length must be at least 1, got {length}")
    for text in INIT_TEXTS:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) == 1 and 0 <= ids[0] < len(allowed) and allowed[ids[0]]:
            again = tokenizer(decode_all(tokenizer, [ids * length])[0],
                              add_special_tokens=False)["input_ids"]
            if list(again) == ids * length:
                return ids * length
    return [int(torch.nonzero(allowed)[0])] * length
