"""Judges that rate how strongly an answer shows a trait, on a 1..10 scale (DESIGN §7).

Every judge has the same interface (:class:`~steerlab.eval.judges.base.Judge`):
``score(trait, rubric, question, answer)`` → a float in [1, 10], and ``score_many`` /
``rate_many`` for batches. :data:`JUDGES` maps a spec's scheme to a factory:

* ``local:ALIAS_OR_PATH`` — :class:`~steerlab.eval.judges.local.LocalJudge`, a local instruct
  model's log-probability expectation over 1..10;
* ``http:BASE_URL#MODEL`` — :class:`~steerlab.eval.judges.http.HTTPJudge`, any
  OpenAI-compatible API;
* ``axbench:local:...`` / ``axbench:http:...`` — :class:`~steerlab.eval.judges.axbench.
  AxBenchJudge`, AxBench's concept / instruction / fluency ratings (0..2 each) on top of either
  judge, scored as their harmonic mean (0 if any is 0; its scale is 0..2, not 1..10).

Register another scheme with :func:`register_judge`.

Example:
    >>> parse_judge("http:http://localhost:8000/v1#qwen").name
    'http:http://localhost:8000/v1#qwen'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from steerlab.errors import SteerlabError
from steerlab.eval.judges.axbench import (
    AxBenchJudge,
    AxBenchRating,
    axbench_aggregate,
    phrase_agreement,
)
from steerlab.eval.judges.base import (
    Judge,
    JudgeItem,
    Rating,
    describe_trait,
    expected_score,
    judge_prompt,
)
from steerlab.eval.judges.http import HTTPJudge, logprob_rating, parse_reply_score
from steerlab.eval.judges.local import LocalJudge, NumberTokens, number_probs, number_tokens
from steerlab.model.load import LoadedModel

#: scheme → factory(target, model name after '#', already loaded models, progress)
JudgeFactory = Callable[[str, str, Mapping[str, LoadedModel], bool], Judge]


def _local(target: str, _model: str, models: Mapping[str, LoadedModel],
           progress: bool) -> Judge:
    loaded = models.get(target)
    return LocalJudge(loaded if loaded is not None else target, progress=progress)


def _http(target: str, model: str, _models: Mapping[str, LoadedModel], progress: bool) -> Judge:
    return HTTPJudge(target, model, progress=progress)


def _axbench(target: str, _model: str, models: Mapping[str, LoadedModel],
             progress: bool) -> Judge:
    return AxBenchJudge(parse_judge(target, models, progress))  # type: ignore[arg-type]


JUDGES: dict[str, JudgeFactory] = {"local": _local, "http": _http, "axbench": _axbench}


def register_judge(scheme: str, factory: JudgeFactory) -> None:
    """Make ``scheme:TARGET`` specs build judges with ``factory``.

    Example:
        >>> register_judge("http2", JUDGES["http"]); del JUDGES["http2"]
    """
    JUDGES[scheme] = factory


def split_judge_spec(spec: str, allow_axbench: bool = False) -> tuple[str, str, str]:
    """Check a judge spec's syntax: ``("local", name, "")`` or ``("http", url, model)``.

    ``axbench:`` specs (a 0..2 aggregate, not a 1..10 trait score) are refused unless
    ``allow_axbench``: the studies that read 1..10 scores (``eval ood``, ``eval defence``, the
    audit) must not take one by mistake.

    Example:
        >>> split_judge_spec("http:http://localhost:8000/v1#qwen")
        ('http', 'http://localhost:8000/v1', 'qwen')
        >>> split_judge_spec("axbench:local:qwen2.5-coder-0.5b", allow_axbench=True)
        ('axbench', 'local:qwen2.5-coder-0.5b', '')
    """
    kind, _, rest = spec.partition(":")
    rest = rest.strip()
    if kind == "axbench" and rest:
        if not allow_axbench:
            raise SteerlabError(f"judge spec {spec!r}: AxBench's judge gives a 0..2 aggregate, "
                                "not the 1..10 trait score this study reads; use local: or "
                                "http: here (axbench: is for eval prompting --judge)")
        if rest.startswith("axbench:"):
            raise SteerlabError(f"judge spec {spec!r}: AxBench wraps a local: or http: judge, "
                                "not another axbench: one")
        split_judge_spec(rest)  # the wrapped judge's spec must be good too
        return kind, rest, ""
    if kind == "http" and rest:
        url, _, model = rest.partition("#")
        if not model.strip():
            raise SteerlabError(f"judge spec {spec!r} names no model; expected "
                                "http:BASE_URL#MODEL")
        if not url.strip().startswith(("http://", "https://")):
            raise SteerlabError(f"judge URL {url.strip()!r} must start with http:// or https://")
        return kind, url.strip(), model.strip()
    if kind in JUDGES and rest:
        return kind, rest, ""
    raise SteerlabError(f"bad judge spec {spec!r}; expected local:ALIAS_OR_PATH or "
                        "http:BASE_URL#MODEL (or axbench: before either)")


def parse_judge(spec: str, models: Mapping[str, LoadedModel] | None = None,
                progress: bool = False, allow_axbench: bool = False) -> Judge:
    """Build a judge from ``local:ALIAS_OR_PATH`` or ``http:BASE_URL#MODEL`` (or, with
    ``allow_axbench``, ``axbench:`` before either).

    ``models`` maps names to already loaded models (e.g. the steered model, to share it).

    Example:
        >>> parse_judge("http:http://localhost:8000/v1#qwen").name
        'http:http://localhost:8000/v1#qwen'
        >>> parse_judge("gpt4")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: bad judge spec 'gpt4'; expected local:ALIAS_OR_PATH or ...
    """
    kind, target, model = split_judge_spec(spec, allow_axbench)
    return JUDGES[kind](target, model, models or {}, progress)


__all__ = ["JUDGES", "AxBenchJudge", "AxBenchRating", "HTTPJudge", "Judge", "JudgeItem",
           "LocalJudge", "NumberTokens", "Rating", "axbench_aggregate", "describe_trait",
           "expected_score", "judge_prompt", "logprob_rating", "number_probs", "number_tokens",
           "parse_judge", "parse_reply_score", "phrase_agreement", "register_judge",
           "split_judge_spec"]
