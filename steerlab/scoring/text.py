"""Token-level log-likelihoods and steered sampling that keeps token ids (eval helpers).

:func:`continuation_nll` scores the tail of token sequences (each token from the logits of the
token before it) under optional steering; :func:`sample_ids` generates continuations and
returns the new token ids (cut at the first end-of-sequence token), so that a completion can be
re-scored exactly as it was produced, with no decode/re-encode round trip.

Example:
    >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer                # doctest: +SKIP
    >>> lm = as_loaded(tiny_model("llama"), tiny_tokenizer())            # doctest: +SKIP
    >>> nll = continuation_nll(lm, [[5, 6, 7, 8]], [2])                   # doctest: +SKIP
    >>> len(nll[0])                                  # tokens 7 and 8   # doctest: +SKIP
    2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel
from steerlab.scoring.ab import Steering, _pad_id, left_pad


def _tail_logits(lm: LoadedModel, batch: dict[str, torch.Tensor], keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions (only those go through the LM head)."""
    inputs = {k: v.to(lm.device) for k, v in batch.items()}
    return lm.model(**inputs, use_cache=False, logits_to_keep=keep).logits[:, -keep:]


def continuation_nll(lm: LoadedModel, rows: Sequence[Sequence[int]], starts: Sequence[int],
                     steering: Steering = None, *,
                     prompt_lengths: Sequence[int] | None = None, batch_size: int = 4,
                     progress: bool = False, desc: str = "nll") -> list[list[float]]:
    """Negative log-likelihood (nats) of ``rows[i][starts[i]:]``, token by token.

    Token t of a row is scored from the logits at position t − 1 (teacher forcing), so every
    ``starts[i]`` must be at least 1. Rows are left-padded with explicit position ids, so
    batching never changes a row's numbers. ``steering`` is applied inside one
    :func:`steerlab.steering.hooks` context per batch; ``prompt_lengths[i]`` (real tokens) is what the
    ``prompt``/``generation`` positions of that steering treat as row i's prompt.

    Example:
        >>> continuation_nll(lm, [[1, 2, 3]], [1])[0]          # doctest: +SKIP
        [3.91, 2.07]
    """
    from steerlab.steering.hooks import steer

    if len(rows) != len(starts):
        raise SteerlabError(f"continuation_nll: {len(rows)} rows but {len(starts)} starts")
    if prompt_lengths is not None and len(prompt_lengths) != len(rows):
        raise SteerlabError(f"continuation_nll: {len(rows)} rows but {len(prompt_lengths)} "
                            "prompt lengths")
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        if not 1 <= start < len(row):
            raise SteerlabError(f"continuation_nll: row {i}: start {start} must be in "
                                f"[1, {len(row) - 1}] (row of {len(row)} tokens)")
    pad = _pad_id(lm)
    out: list[list[float]] = []
    for first in tqdm(range(0, len(rows), batch_size), disable=not progress, desc=desc,
                      leave=False):
        chunk = [list(r) for r in rows[first:first + batch_size]]
        heads = list(starts[first:first + batch_size])
        lengths = list(prompt_lengths[first:first + batch_size]) if prompt_lengths else None
        out += _batch_nll(lm, chunk, heads, steering, lengths, pad, steer)
    return out


def _batch_nll(lm: LoadedModel, chunk: list[list[int]], heads: list[int], steering: Steering,
               lengths: list[int] | None, pad: int, steer: Any) -> list[list[float]]:
    counts = [len(r) - s for r, s in zip(chunk, heads, strict=True)]
    keep = max(counts) + 1  # logits at the position before each scored token, + the last
    batch = left_pad(chunk, pad)
    with steer(lm, steering, prompt_lengths=lengths), torch.inference_mode():
        logits = _tail_logits(lm, batch, keep).float()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # predicts the last keep-1 tokens
    targets = batch["input_ids"][:, -(keep - 1):].to(logprobs.device)
    token_lp = logprobs.gather(-1, targets[..., None])[..., 0]
    return [(-token_lp[i, token_lp.shape[1] - n:]).tolist() for i, n in enumerate(counts)]


def _stop_ids(lm: LoadedModel) -> set[int]:
    ids: set[int] = set()
    config = getattr(lm.model, "generation_config", None)
    for value in (getattr(config, "eos_token_id", None), lm.tokenizer.eos_token_id,
                  lm.tokenizer.pad_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def cut_at_stop(ids: Sequence[int], stop: set[int]) -> list[int]:
    """The ids before the first stop token.

    Example:
        >>> cut_at_stop([5, 6, 0, 7], {0})
        [5, 6]
    """
    out: list[int] = []
    for token in ids:
        if token in stop:
            break
        out.append(int(token))
    return out


def sample_ids(lm: LoadedModel, prompts: Sequence[Sequence[int]], steering: Steering = None, *,
               max_new_tokens: int = 40, do_sample: bool = True, temperature: float = 1.0,
               top_p: float = 1.0, seed: int = 0, batch_size: int = 8,
               progress: bool = False) -> list[list[int]]:
    """New token ids generated after each prompt (already tokenized), optionally steered.

    Sampling is seeded per batch with ``seed + index of the batch's first row``, the same for
    any steering, so steered and unsteered runs share their random numbers row for row.

    Example:
        >>> ids = sample_ids(lm, [[5, 6, 7]], max_new_tokens=4, do_sample=False)  # doctest: +SKIP
    """
    from steerlab.steering.hooks import steer

    if max_new_tokens < 1:
        raise SteerlabError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    pad, stop = _pad_id(lm), _stop_ids(lm)
    out: list[list[int]] = []
    for first in tqdm(range(0, len(prompts), batch_size), disable=not progress,
                      desc="generate", leave=False):
        chunk = [list(p) for p in prompts[first:first + batch_size]]
        batch = left_pad(chunk, pad)
        batch.pop("position_ids")
        if do_sample:
            torch.manual_seed(seed + first)
        with steer(lm, steering, instruction_lengths=[len(p) for p in chunk]), \
                torch.inference_mode():
            generated = lm.model.generate(  # type: ignore[operator]
                **{k: v.to(lm.device) for k, v in batch.items()}, max_new_tokens=max_new_tokens,
                do_sample=do_sample, temperature=temperature if do_sample else None,
                top_p=top_p if do_sample else None, top_k=None, pad_token_id=pad)
        width = batch["input_ids"].shape[1]
        out += [cut_at_stop(row[width:].tolist(), stop) for row in generated]
    return out


def unit_values(coefficients: str | None, strengths: str | None) -> tuple[str, list[float]]:
    """The sweep's unit and values from ``--coefficients`` / ``--strengths`` (exactly one).

    Example:
        >>> unit_values("0,2", None)
        ('coefficient', [0.0, 2.0])
        >>> unit_values(None, "0:1:0.5")
        ('strength', [0.0, 0.5, 1.0])
    """
    from steerlab.cli import parse_values

    if (coefficients is None) == (strengths is None):
        raise SteerlabError("give exactly one of --coefficients or --strengths")
    unit = "coefficient" if coefficients is not None else "strength"
    text = coefficients if coefficients is not None else strengths
    values = parse_values(text or "")
    if not values:
        raise SteerlabError(f"--{unit}s: no values given")
    if len(set(values)) != len(values):
        raise SteerlabError(f"--{unit}s: repeated values in {text!r}")
    return unit, values
