"""The one generation loop: batched, KV-cached decoding with a steering, sampling and budget
per row.

:class:`Decoder` runs a batch step by step: one prefill of the left-padded prompts, then one
token per row per step. Every row carries its own per-row steering specs (added to any global
steering), its own :class:`Sampling` (greedy or temperature / top-p / top-k with a per-row
seeded generator, so a row samples the same tokens whatever else is in its batch), its own
token budget and stop ids. Rows that finish leave the batch (their cache rows are dropped), and
callers may stop rows early (:meth:`Decoder.cancel`) — the server streams tokens from
:meth:`Decoder.step` this way. :func:`generate_ids` and :func:`generate` wrap it for lists of
prompts. Positions of the steering are those of :mod:`steerlab.steering`: each row's prompt
length is fixed, so ``prompt`` / ``generation`` / ``after_instruction`` are exact under the
cache, whatever the padding. A row steered at ``front`` by an ActAdd vector that was extracted
with a document-start token in front (``<|endoftext|>`` on SmolLM2 and Qwen, which add no BOS)
gets that token in front of its prompt, so the vector's row 0 lands on it as at extraction
(:func:`~steerlab.steering.spec.document_start_for`); :func:`generate` gives every prompt of
the call the token then, so unsteered rows compare like for like.

Example:
    >>> from steerlab.model.load import as_loaded
    >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
    >>> lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    >>> out = generate_ids(lm, [[5, 6, 7], [8, 9]], max_new_tokens=3)
    >>> [len(ids) <= 3 for ids in out]
    [True, True]
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from steerlab.errors import SteerlabError
from steerlab.model.arch import cache_kwarg, cache_length, returned_cache
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.model.prompts import Prompt, prompt_ids, with_document_start
from steerlab.steering.hooks import SteeringHandle, attach
from steerlab.steering.spec import Steering, SteeringSpec, as_specs, document_start_for
from steerlab.util.progress import bar
from steerlab.util.seq import left_pad


@dataclass(frozen=True)
class Sampling:
    """How a row picks its next token: greedy (``temperature=0``) or sampled.

    Sampling uses temperature, then top-k (0 = off), then top-p (nucleus), from a generator
    seeded with ``seed`` for this row only.

    Example:
        >>> Sampling().greedy, Sampling(temperature=0.7, top_p=0.9).greedy
        (True, False)
        >>> Sampling(top_p=2.0)
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: top_p must be in (0, 1], got 2.0
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, int | float) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise SteerlabError(f"temperature must be a finite number >= 0, got "
                                f"{self.temperature!r}")
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise SteerlabError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise SteerlabError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SteerlabError(f"seed must be an integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = Sampling()


@dataclass
class GenerationRow:
    """One row to generate: its prompt ids, budget, sampling, per-row steering and stops.

    ``instruction_length`` (real tokens up to the end of the user turn) is what
    ``after_instruction`` steering starts from; ``stop`` defaults to the model's stop ids.
    """

    prompt: Sequence[int]
    max_new_tokens: int = 48
    sampling: Sampling = GREEDY
    steering: Sequence[SteeringSpec] = ()
    instruction_length: int | None = None
    stop: frozenset[int] | None = None

    def __post_init__(self) -> None:
        if not self.prompt:
            raise SteerlabError("cannot generate from an empty prompt")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise SteerlabError(f"max_new_tokens must be a positive integer, got "
                                f"{self.max_new_tokens!r}")


@dataclass
class _Live:
    index: int  # position in the Decoder's rows
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)


class Decoder:
    """Step-by-step batched generation of :class:`GenerationRow` s under ``steering``.

    ``step()`` returns the ``(row index, token)`` pairs produced by that step (the first call
    runs the prefill and yields every row's first token); a row that emits a stop id or
    reaches its budget is finished (the stop id is not part of its output) and leaves the batch.

    Example:
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()                     # steerlab.load_model(...) on a real model
        >>> prompt = lm.tokenizer("Hello").input_ids
        >>> with Decoder(lm, [GenerationRow(prompt, max_new_tokens=2)]) as dec:
        ...     while not dec.finished:
        ...         pairs = dec.step()         # [(row index, token id), ...]
        >>> len(dec.outputs[0]) <= 2
        True
    """

    def __init__(self, model: LoadedModel | Any, rows: Sequence[GenerationRow],
                 steering: Steering = None):
        self.lm = as_loaded(model)
        if not rows:
            raise SteerlabError("no rows to generate")
        shared = as_specs(steering)
        self.rows = [_with_start(r, document_start_for([*shared, *r.steering])) for r in rows]
        self.steering = steering
        self.outputs: list[list[int]] = [[] for _ in self.rows]
        self.done = [False] * len(self.rows)
        self._live = [_Live(i, _generator(r.sampling)) for i, r in enumerate(self.rows)]
        self._stops = [r.stop if r.stop is not None else self.lm.stop_ids for r in self.rows]
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._next_pos: torch.Tensor | None = None
        self._handle: SteeringHandle | None = None
        self._started = False

    @property
    def finished(self) -> bool:
        return not self._live

    @property
    def active(self) -> list[int]:
        """Indices of the rows still generating."""
        return [live.index for live in self._live]

    def cancel(self, index: int) -> None:
        """Stop row ``index`` now (its output so far is kept); it leaves the batch."""
        self._drop([i for i, live in enumerate(self._live) if live.index == index])

    def close(self) -> None:
        """End the run: steering detached, cache freed (idempotent)."""
        self._detach()
        self._live, self._cache = [], None

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def step(self) -> list[tuple[int, int]]:
        """Run one forward (the prefill on the first call) and pick each live row's token."""
        if not self._live:
            return []
        try:
            logits = self._forward()
        except BaseException:
            self.close()
            raise
        emitted: list[tuple[int, int]] = []
        finished: list[int] = []
        tokens = self._choose(logits)
        for slot, (live, token) in enumerate(zip(self._live, tokens, strict=True)):
            row = self.rows[live.index]
            if token in self._stops[live.index]:
                finished.append(slot)
                continue
            live.tokens.append(token)
            self.outputs[live.index].append(token)
            emitted.append((live.index, token))
            if len(live.tokens) >= row.max_new_tokens:
                finished.append(slot)
        self._last = torch.tensor([[t] for t in tokens], dtype=torch.long)
        self._drop(finished)
        return emitted

    # ---- internals ------------------------------------------------------------------------
    def _attach(self) -> None:
        self._detach()
        live = [self.rows[x.index] for x in self._live]
        per_row = [list(r.steering) for r in live]
        instr = [r.instruction_length if r.instruction_length is not None else len(r.prompt)
                 for r in live]
        self._handle = attach(self.lm, self.steering,
                              row_specs=per_row if any(per_row) else None,
                              prompt_lengths=[len(r.prompt) for r in live],
                              instruction_lengths=instr)

    def _detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _forward(self) -> torch.Tensor:
        module = self.lm.model
        device = self.lm.device
        if not self._started:
            self._started = True
            batch = left_pad([list(self.rows[x.index].prompt) for x in self._live],
                             self.lm.pad_id)
            self._mask = batch["attention_mask"]
            self._next_pos = batch["position_ids"][:, -1:] + 1
            self._cache = _new_cache(module)
            inputs = {k: v.to(device) for k, v in batch.items()}
        else:
            assert self._mask is not None and self._next_pos is not None
            self._mask = torch.cat([self._mask, torch.ones(len(self._live), 1,
                                                           dtype=self._mask.dtype)], dim=1)
            inputs = {"input_ids": self._last.to(device),
                      "attention_mask": self._mask.to(device),
                      "position_ids": self._next_pos.to(device)}
            if cache_length(self._cache) is None:
                # a state-only cache (Mamba, RWKV): no mask on decode steps, as transformers'
                # generate does (5.25's Mamba multiplies the step by the whole mask)
                del inputs["attention_mask"]
            self._next_pos = self._next_pos + 1
        if self._handle is None:
            self._attach()
        cache = {cache_kwarg(module): self._cache} if self._cache is not None else {}
        with torch.inference_mode():
            out = module(**inputs, **cache, use_cache=True, logits_to_keep=1)
        returned = returned_cache(out)
        if returned is not None:
            self._cache = returned
        elif not _filled(self._cache):  # (BERT-style decoders fill the cache passed in)
            raise SteerlabError(f"{type(module).__name__} keeps no KV cache; steerlab's "
                                "decoder feeds one token per step and needs one")
        return out.logits[:, -1].float()

    def _choose(self, logits: torch.Tensor) -> list[int]:
        picked: list[int] = []
        for slot, live in enumerate(self._live):
            sampling = self.rows[live.index].sampling
            row = logits[slot]
            if sampling.greedy or live.generator is None:
                picked.append(int(row.argmax()))
            else:
                probs = _sampling_probs(row, sampling)
                picked.append(int(torch.multinomial(probs.cpu(), 1,
                                                    generator=live.generator)))
        return picked

    def _drop(self, slots: list[int]) -> None:
        if not slots:
            return
        for slot in slots:
            self.done[self._live[slot].index] = True
        keep = [i for i in range(len(self._live)) if i not in set(slots)]
        self._live = [self._live[i] for i in keep]
        if not self._live:
            self.close()
            return
        if self._started:
            index = torch.tensor(keep, dtype=torch.long)
            self._cache.batch_select_indices(index.to(self.lm.device))
            assert self._mask is not None and self._next_pos is not None
            self._mask, self._next_pos = self._mask[index], self._next_pos[index]
            self._last = self._last[index]
            if self._handle is not None:  # per-row steering (and gates) follow their rows
                self._handle.select_rows(keep)
        else:
            self._detach()


def _with_start(row: GenerationRow, start: dict[str, Any] | None) -> GenerationRow:
    """``row`` with the document-start token ``start`` in front of its prompt where needed."""
    prompt = with_document_start(row.prompt, start)
    if len(prompt) == len(row.prompt):
        return row
    instr = None if row.instruction_length is None else row.instruction_length + 1
    return replace(row, prompt=prompt, instruction_length=instr)


def _new_cache(module: Any) -> Any:
    """The cache a prefill starts from: a ``DynamicCache`` built from the config (its layers
    follow the model's layer types, attention or state-space), as ``generate`` does; None for
    models transformers says need their own (MiniMax's linear attention): they build it."""
    supports = getattr(module, "_supports_default_dynamic_cache", None)
    if callable(supports) and not supports():
        return None
    from transformers import DynamicCache

    return DynamicCache(config=getattr(module, "config", None))


def _filled(cache: Any) -> bool:
    """Whether a cache passed to the prefill now holds it (one that cannot count its tokens,
    a state-space cache, is taken as filled)."""
    if cache is None:
        return False
    length = cache_length(cache)
    return length is None or length > 0


def _generator(sampling: Sampling) -> torch.Generator | None:
    if sampling.greedy:
        return None
    generator = torch.Generator()
    generator.manual_seed(int(sampling.seed))
    return generator


def _sampling_probs(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """The distribution a sampled token is drawn from (temperature, top-k, then top-p).

    Example:
        >>> p = _sampling_probs(torch.tensor([2.0, 1.0, 0.0]), Sampling(1.0, top_k=2))
        >>> p[2].item()
        0.0
    """
    scores = logits.float() / sampling.temperature
    if sampling.top_k and sampling.top_k < scores.shape[-1]:
        threshold = torch.topk(scores, sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < threshold, -math.inf)
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(ordered, dim=-1) >= sampling.top_p  # keep the first
        scores = scores.clone()
        scores[order[drop]] = -math.inf
    return torch.softmax(scores, dim=-1)


class GenerationBackend(Protocol):
    """Another engine that generates :class:`GenerationRow` s (e.g. vLLM with steerlab's plugin).

    ``run`` returns each row's new token ids, stop id excluded, as :func:`run_rows` does; a row
    whose steering the engine cannot express is refused with a one-line error, never ignored.
    ``serves`` says whether it holds ``model`` (other models, e.g. a judge, stay on steerlab's
    loop).
    """

    name: str

    def serves(self, model: Any) -> bool: ...

    def run(self, rows: Sequence[GenerationRow]) -> list[list[int]]: ...


_BACKEND: contextvars.ContextVar[GenerationBackend | None] = contextvars.ContextVar(
    "steerlab_generation_backend", default=None)


@contextlib.contextmanager
def generation_backend(backend: GenerationBackend | None) -> Iterator[None]:
    """Route every :func:`run_rows` in this context (so :func:`generate_ids`, :func:`generate`
    and the studies built on them) to ``backend``; ``None`` keeps steerlab's own loop.

    Example:
        >>> with generation_backend(None):
        ...     pass
    """
    token = _BACKEND.set(backend)
    try:
        yield
    finally:
        _BACKEND.reset(token)


def run_rows(model: LoadedModel | Any, rows: Sequence[GenerationRow], steering: Steering = None,
             *, batch_size: int = 8, progress: bool = False,
             desc: str = "generate") -> list[list[int]]:
    """Generate every row (``batch_size`` rows per :class:`Decoder`); new ids per row.

    Example:
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()
        >>> out = run_rows(lm, [GenerationRow([5, 6], max_new_tokens=2)])
        >>> len(out), len(out[0]) <= 2
        (1, True)
    """
    if batch_size < 1:
        raise SteerlabError(f"batch size must be >= 1, got {batch_size}")
    backend = _BACKEND.get()
    if backend is not None and backend.serves(model):  # another engine generates this model
        shared = as_specs(steering)
        whole = [_with_start(replace(r, steering=[*shared, *r.steering]),
                             document_start_for([*shared, *r.steering])) for r in rows]
        with bar(len(rows), f"{desc} {len(rows)} answer(s) on {backend.name}", unit="row",
                 enabled=progress) as shown:
            out = backend.run(whole)
            shown.update(len(rows))
        return out
    outputs: list[list[int]] = []
    total = sum(r.max_new_tokens for r in rows)
    with bar(total, f"{desc} {len(rows)} answer(s)", unit="tok", enabled=progress) as shown:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            with Decoder(model, chunk, steering) as decoder:
                while not decoder.finished:
                    before = sum(len(o) for o in decoder.outputs)
                    decoder.step()
                    shown.update(sum(len(o) for o in decoder.outputs) - before)
                outputs += decoder.outputs
                shown.update(sum(r.max_new_tokens - len(o)
                                 for r, o in zip(chunk, decoder.outputs, strict=True)))
    return outputs


def generate_ids(model: LoadedModel | Any, prompts: Sequence[Sequence[int]],
                 steering: Steering = None, *,
                 row_steering: Sequence[Sequence[SteeringSpec]] | None = None,
                 instruction_lengths: Sequence[int] | None = None, max_new_tokens: int = 48,
                 sampling: Sampling = GREEDY, batch_size: int = 8,
                 progress: bool = False) -> list[list[int]]:
    """New token ids after each (tokenized) prompt, optionally steered, stop id excluded.

    Sampled rows use ``sampling.seed + i`` for prompt i, so steered and unsteered runs of the
    same prompts share their random numbers row for row.

    Example:
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()
        >>> out = generate_ids(lm, [[5, 6, 7]], max_new_tokens=4)
        >>> len(out), len(out[0]) <= 4
        (1, True)
    """
    for name, per_row in (("row_steering", row_steering),
                          ("instruction_lengths", instruction_lengths)):
        if per_row is not None and len(per_row) != len(prompts):
            raise SteerlabError(f"{name} has {len(per_row)} rows for {len(prompts)} prompts")
    rows = [GenerationRow(list(p), max_new_tokens,
                          Sampling(sampling.temperature, sampling.top_p, sampling.top_k,
                                   sampling.seed + i) if not sampling.greedy else GREEDY,
                          list(row_steering[i]) if row_steering else (),
                          instruction_lengths[i] if instruction_lengths else None)
            for i, p in enumerate(prompts)]
    return run_rows(model, rows, steering, batch_size=batch_size, progress=progress)


def generate(model: LoadedModel | Any, prompts: Prompt | Sequence[Prompt],
             steering: Steering = None, *, max_new_tokens: int = 48, chat: bool = True,
             batch_size: int = 8, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, seed: int = 0, system: str | None = None,
             row_steering: Sequence[Sequence[SteeringSpec]] | None = None,
             tokenizer: Any = None, progress: bool = False) -> list[str]:
    """Completions of ``prompts`` (chat-formatted when ``chat``), optionally steered.

    A prompt is a string, or (with ``chat``) a list of chat messages
    ``[{"role": "user", "content": ...}, ...]`` — a whole conversation whose reply is wanted.
    ``row_steering[i]`` adds specs for prompt i only (batched with the others). When any of
    them applies an ActAdd vector at ``front`` that was extracted with a document-start token
    in front, every prompt gets that token (:func:`~steerlab.steering.spec.document_start_for`),
    the unsteered ones too, so they differ from the steered ones by the steering alone.

    Example:
        >>> import steerlab
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()                     # steerlab.load_model(...) on a real model
        >>> vec = steerlab.extract(lm, [("I love Mondays.", "I hate Mondays.")], layers=[2],
        ...                        progress=False)
        >>> texts = generate(lm, ["Tell me about Mondays."], max_new_tokens=8,
        ...                  steering=SteeringSpec(vec, layers=[2], strength=0.5))
        >>> len(texts), isinstance(texts[0], str)
        (1, True)
    """
    lm = as_loaded(model, tokenizer)
    if lm.tokenizer is None:
        raise SteerlabError("generate needs a tokenizer: pass a LoadedModel or tokenizer=")
    items: list[Prompt] = ([prompts] if _single_prompt(prompts)  # type: ignore[list-item]
                           else list(prompts))  # type: ignore[arg-type]
    encoded = [prompt_ids(lm.tokenizer, p, chat, system) for p in items]
    start = document_start_for([*as_specs(steering),
                                *(spec for row in row_steering or [] for spec in row)])
    if start is not None:  # every row, so unsteered rows differ by the steering alone
        prefixed = [with_document_start(ids, start) for ids, _ in encoded]
        encoded = [(ids, n + len(ids) - len(old))
                   for ids, (old, n) in zip(prefixed, encoded, strict=True)]
    sampling = (Sampling(temperature, top_p, top_k, seed) if do_sample else GREEDY)
    ids = generate_ids(lm, [e for e, _ in encoded], steering, row_steering=row_steering,
                       instruction_lengths=[n for _, n in encoded],
                       max_new_tokens=max_new_tokens, sampling=sampling,
                       batch_size=batch_size, progress=progress)
    return [lm.tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]


def _single_prompt(prompts: Any) -> bool:
    """A string, or one message list (a list of dicts), rather than a list of prompts."""
    if isinstance(prompts, str):
        return True
    return isinstance(prompts, list) and bool(prompts) and isinstance(prompts[0], dict)


def stream(decoder: Decoder) -> Iterator[tuple[int, int]]:
    """Every ``(row index, token)`` of ``decoder`` as it is produced.

    Example:
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()
        >>> rows = [GenerationRow([5, 6], max_new_tokens=3), GenerationRow([7], max_new_tokens=3)]
        >>> for row, token in stream(Decoder(lm, rows)):
        ...     assert row in (0, 1) and isinstance(token, int)
    """
    with decoder:
        while not decoder.finished:
            yield from decoder.step()
