"""Scorers, statistics, the steering-word control and the verdict of ``eval sentiment``.

* Scorers: the learned classifier (:mod:`steerlab.scoring.sentiment_classifier`, probability
  positive, the primary sentiment score), VADER's compound score (a second opinion: a lexicon,
  so it rises with the literal word "love"), ``alt-profanity-check`` for toxicity.
* The control: the same scorer on each completion with the steering words' family removed
  (for ``" love"``/``" hate"``: love, loves, loved, loving, lovely, lover…, hate, hated,
  hateful, hatred…, any case) — a shift that survives it is not just the vector's own words.
* Fluency: the unsteered model's perplexity of each completion; the steered / unsteered ratio
  paired per prompt.
* The verdict (:func:`judge_sentiment`, rule :data:`~steerlab.eval.verdicts.SENTIMENT_RULE`).

Example:
    >>> mask_words(["I LOVED it, lovely", "hatred and hats"], [" love", " hate"])
    ['I it,', 'and hats']
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval.verdicts import FAILS, HOLDS, MAX_PPL_RATIO, UNSURE, Verdict
from steerlab.util import stats

#: texts → one score each
Scorer = Callable[[Sequence[str]], list[float]]
Interval = tuple[float, float, float]
SCORERS = ("classifier", "vader")


@dataclass(frozen=True)
class ScoreKind:
    """What a scorer's numbers mean: the metric's name, its range and its neutral point."""

    metric: str
    centre: float
    what: str


KINDS = {"classifier": ScoreKind("p_positive", 0.5, "classifier p(positive)"),
         "vader": ScoreKind("compound", 0.0, "VADER compound"),
         "toxicity": ScoreKind("toxicity", 0.5, "p(offensive)")}


def vader_scorer() -> Scorer:
    """VADER compound score (−1..1) per text (offline lexicon; empty text → 0).

    Example:
        >>> vader_scorer()(["I love it", ""])[1]
        0.0
    """
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda texts: [float(analyzer.polarity_scores(t)["compound"]) if t.strip() else 0.0
                          for t in texts]


def classifier_scorer() -> Scorer:
    """The learned classifier's probability that each text is positive (empty text → 0.5).

    Example:
        >>> classifier_scorer()(["What a dreadful waste of time."])[0] < 0.5  # doctest: +SKIP
        True
    """
    from steerlab.scoring.sentiment_classifier import load_or_train

    return load_or_train().p_positive


def toxicity_scorer() -> Scorer:
    """``alt-profanity-check`` probability (0..1) that each text is offensive.

    Example:
        >>> toxicity_scorer()(["have a nice day"])[0] < 0.5        # doctest: +SKIP
        True
    """
    with warnings.catch_warnings():  # sklearn version notes from the pickled model
        warnings.simplefilter("ignore")
        from profanity_check import predict_prob

    def score(texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [float(p) for p in predict_prob(list(texts))]
    return score


# ------------------------------------------------------------------ the steering-word control

def steering_words(pair: tuple[str, str] | None, vec: Any = None) -> list[str]:
    """The words a pair (or an ActAdd vector's ``pair_tokens``) steers with, for masking.

    Example:
        >>> steering_words((" love", " hate"))
        ['love', 'hate']
    """
    texts: list[str] = list(pair) if pair else []
    tokens = (vec.manifest.get("pair_tokens") if vec is not None else None) or []
    if not texts and len(tokens) == 2:
        texts = [str(a) for a, b in zip(*tokens, strict=False) if a != b] + [
            str(b) for a, b in zip(*tokens, strict=False) if a != b]
    words = [w for t in texts for w in t.split() if any(c.isalpha() for c in w)]
    return list(dict.fromkeys(w.strip().lower() for w in words))


def word_family(word: str) -> str:
    """A regex (no flags) matching ``word`` and its common inflections and derivations.

    Example:
        >>> bool(re.fullmatch(word_family(" hate"), "hatred"))
        True
        >>> bool(re.fullmatch(word_family("love"), "Lovecraft"))
        False
    """
    word = word.strip().lower()
    if not word:
        raise SteerlabError("an empty word has no family to mask")
    w = re.escape(word)
    common = "s|es|d|ed|er|ers|r|rs|ly|ful|fully|less|ness|liness"
    if word.endswith("e"):  # love → loving, lovingly; hate → hating, hatred
        return rf"(?:{w}(?:{common})?|{re.escape(word[:-1])}(?:ing|ingly|ings|red|reds))"
    return rf"{w}(?:{common}|ing|ingly|ings)?"


def mask_pattern(words: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive whole-word pattern for the families of ``words`` (None if none).

    Example:
        >>> mask_pattern([" love"]).sub("_", "Loving, beloved lovers")
        '_, beloved _'
    """
    kept = [w for w in words if w.strip()]
    if not kept:
        return None
    return re.compile(r"\b(?:" + "|".join(word_family(w) for w in kept) + r")\b", re.IGNORECASE)


def mask_words(texts: Sequence[str], words: Sequence[str]) -> list[str]:
    """``texts`` with every word of the families of ``words`` removed (spaces tidied).

    Example:
        >>> mask_words(["I love you. Loved!"], ["love"])
        ['I you.!']
    """
    pattern = mask_pattern(words)
    if pattern is None:
        return list(texts)
    return [re.sub(r"\s+([,.!?;:])", r"\1", re.sub(r"\s{2,}", " ", pattern.sub("", t))).strip()
            for t in texts]


def contains_words(texts: Sequence[str], words: Sequence[str]) -> list[bool]:
    """Whether each text holds a word of the families of ``words``.

    Example:
        >>> contains_words(["so lovely", "fine"], ["love"])
        [True, False]
    """
    pattern = mask_pattern(words)
    return [bool(pattern and pattern.search(t)) for t in texts]


# ------------------------------------------------------------------------------ statistics

def success_rate(scores: Sequence[float], target: str = "positive",
                 centre: float = 0.0) -> Interval:
    """Share of scores on the target side of ``centre`` (> positive, < negative), Wilson CI.

    Example:
        >>> success_rate([0.5, -0.2, 0.0, 0.9])[0]            # 0.0 is not a success
        0.5
        >>> success_rate([0.5, -0.2, 0.0, 0.9], "negative")[0]
        0.25
    """
    if target not in ("positive", "negative"):
        raise SteerlabError(f"--target must be positive or negative, got {target!r}")
    hits = sum((s > centre) if target == "positive" else (s < centre) for s in scores)
    return stats.wilson(hits, len(scores))


def rate_above(scores: Sequence[float], threshold: float = 0.5) -> Interval:
    """Share of scores above ``threshold`` (toxic rate), Wilson CI.

    Example:
        >>> rate_above([0.9, 0.2, 0.6, 0.5])[0]
        0.5
    """
    return stats.wilson(sum(s > threshold for s in scores), len(scores))


def _per_prompt(rows: Sequence[float | None], samples: int) -> list[float | None]:
    out: list[float | None] = []
    for i in range(0, len(rows), samples):
        kept = [x for x in rows[i:i + samples] if x is not None]
        out.append(sum(kept) / len(kept) if kept else None)
    return out


def paired_shift(steered: Sequence[float], base: Sequence[float], samples: int = 1) -> Interval:
    """Mean per-prompt change steered − base (each prompt's ``samples`` rows averaged), CI.

    Rows are prompt-major: rows ``i·samples … i·samples + samples − 1`` belong to prompt i.

    Example:
        >>> paired_shift([0.5, 0.7, 0.0, 0.2], [0.1, 0.1, 0.0, 0.0], samples=2)[0]
        0.3
    """
    if len(steered) != len(base) or samples < 1 or len(base) % samples:
        raise SteerlabError(f"shift needs equal-length prompt-major rows ({len(steered)} vs "
                            f"{len(base)}, {samples} samples per prompt)")
    diffs = [(sum(steered[i:i + samples]) - sum(base[i:i + samples])) / samples
             for i in range(0, len(base), samples)]
    mean, low, high = stats.mean_ci(diffs)
    return round(mean, 12), low, high


def fluency_ppl(nlls: Sequence[float | None]) -> Interval:
    """exp(mean per-completion NLL) with exp of its normal 95 % CI (``None`` = empty, skipped).

    Example:
        >>> [round(x, 6) for x in fluency_ppl([math.log(2.0), None, math.log(8.0)])][0]
        4.0
    """
    kept = [x for x in nlls if x is not None]
    mean, low, high = stats.mean_ci(kept)
    return math.exp(mean), math.exp(low), math.exp(high)


def ppl_ratio(steered: Sequence[float | None], base: Sequence[float | None],
              samples: int = 1) -> tuple[float, float, float, int]:
    """Steered / unsteered fluency perplexity, paired per prompt: exp(mean over prompts of
    the change in mean completion NLL), exp of its 95 % t interval, and the prompts used
    (those with a non-empty completion in both).

    Example:
        >>> r = ppl_ratio([math.log(3.0), math.log(3.0)], [math.log(2.0), math.log(2.0)])
        >>> round(r[0], 6), r[3]
        (1.5, 2)
    """
    if len(steered) != len(base):
        raise SteerlabError(f"ppl ratio needs equal-length rows ({len(steered)} vs {len(base)})")
    diffs = [s - b for s, b in zip(_per_prompt(steered, samples), _per_prompt(base, samples),
                                   strict=True) if s is not None and b is not None]
    if not diffs:
        return math.nan, math.nan, math.nan, 0
    mean, low, high = stats.mean_ci(diffs)
    return math.exp(mean), math.exp(low), math.exp(high), len(diffs)


# ------------------------------------------------------------------------------ the verdict

def _towards(interval: Interval, sign: int) -> Interval:
    v, lo, hi = interval
    return (v, lo, hi) if sign > 0 else (-v, -hi, -lo)


def _ok(interval: Interval | None) -> bool:
    return interval is not None and not any(x is None or math.isnan(x) for x in interval)


def judge_sentiment(shift: Interval | None, masked: Interval | None, ratio: Interval | None,
                    *, sign: int = 1, what: str = "", finding: str = "actadd",
                    mask_share: float | None = None,
                    max_ratio: float = MAX_PPL_RATIO) -> Verdict:
    """ActAdd's sentiment claim at one setting, by :data:`~steerlab.eval.verdicts.SENTIMENT_RULE`.

    ``shift``/``masked``: the paired score shift vs unsteered, raw and with the steering words
    masked (value, low, high); ``ratio``: the steered / unsteered fluency perplexity; ``sign``:
    +1 when the target raises the score, −1 when it lowers it (toxicity down).

    Example:
        >>> judge_sentiment((0.2, 0.1, 0.3), (0.1, 0.02, 0.2), (1.2, 1.1, 1.3)).verdict
        'holds'
        >>> judge_sentiment((0.2, 0.1, 0.3), (0.1, 0.02, 0.2), (1.8, 1.6, 2.0)).reason[:13]
        'fails fluency'
    """
    numbers: dict[str, Any] = {"shift": list(shift) if shift else None,
                               "masked_shift": list(masked) if masked else None,
                               "ppl_ratio": list(ratio) if ratio else None,
                               "max_ppl_ratio": max_ratio, "sign": sign, "what": what}
    warns = []
    if mask_share is not None:
        numbers["mask_share"] = mask_share
        if mask_share > 0.5:
            warns.append(f"{mask_share:.0%} of steered completions contain the steering words")
    if not _ok(shift) or not _ok(ratio):
        return Verdict(finding, UNSURE, "not measured (no shift or no fluency ratio)",
                       numbers, warns)
    assert shift is not None and ratio is not None
    raw = _towards(shift, sign)
    if not _ok(masked):
        warns.append("no masked control (no steering words to mask)")
    control = _towards(masked, sign) if masked is not None and _ok(masked) else None
    tail = (f"shift {shift[0]:+.3f} [{shift[1]:+.3f}, {shift[2]:+.3f}]"
            + (f", masked {masked[0]:+.3f} [{masked[1]:+.3f}, {masked[2]:+.3f}]"
               if control is not None and masked is not None else "")
            + f", ppl ratio {ratio[0]:.2f} [{ratio[1]:.2f}, {ratio[2]:.2f}]"
            + (f" ({what})" if what else ""))
    if ratio[0] > max_ratio:
        return Verdict(finding, FAILS, f"fails fluency: perplexity ratio {ratio[0]:.2f} > "
                       f"{max_ratio:g}; {tail}", numbers, warns)
    if raw[2] <= 0:
        return Verdict(finding, FAILS, f"no shift towards the target: {tail}", numbers, warns)
    if control is not None and control[2] <= 0:
        return Verdict(finding, FAILS, f"the shift is the steering words alone: {tail}",
                       numbers, warns)
    if raw[1] > 0 and (control is None or control[1] > 0):
        return Verdict(finding, HOLDS, tail, numbers, warns)
    return Verdict(finding, UNSURE, f"intervals too wide: {tail}", numbers, warns)


def _interval(record: dict[str, Any] | None) -> Interval | None:
    if record is None or record.get("ci_low") is None or record.get("ci_high") is None:
        return None
    return float(record["value"]), float(record["ci_low"]), float(record["ci_high"])


def judge_cell(records: Sequence[dict[str, Any]], *, sign: int = 1, what: str = "",
               finding: str = "actadd") -> Verdict:
    """:func:`judge_sentiment` from one steered cell's records (as ``eval sentiment`` writes).

    Example:
        >>> recs = [{"metric": "shift", "value": 0.1, "ci_low": 0.05, "ci_high": 0.2},
        ...         {"metric": "ppl_ratio", "value": 1.9, "ci_low": 1.7, "ci_high": 2.1}]
        >>> judge_cell(recs).verdict
        'does not hold'
    """
    got = {r["metric"]: r for r in records}
    share = got.get("mask_rate", {}).get("value")
    return judge_sentiment(_interval(got.get("shift")), _interval(got.get("shift_masked")),
                           _interval(got.get("ppl_ratio")), sign=sign, what=what,
                           finding=finding, mask_share=share)


def judge_run(run_dir: str | Path, prompt_set: str, value: float, *, layer: int | None = None,
              unit: str = "coefficient", finding: str = "actadd") -> Verdict:
    """The verdict of one (prompt set, layer, value) cell of an ``eval sentiment`` run.

    Reads ``run_dir/results.jsonl``; ``layer`` None takes the only layer measured. The target
    direction follows the run (sentiment towards ``target``; toxicity down).

    Example:
        >>> judge_run("runs/love", "negative", 5.0).verdict              # doctest: +SKIP
        'holds'
    """
    from steerlab.eval.store import read_results

    records = [r for r in read_results(Path(run_dir) / "results.jsonl").records
               if r.get("command") == "sentiment" and str(r.get("data", "")).endswith(
                   f":{prompt_set}") and r.get(unit) == float(value)
               and not (r.get("extra") or {}).get("baseline")]
    layers = sorted({r["layer"] for r in records if r.get("layer") is not None})
    if layer is None and len(layers) > 1:
        raise SteerlabError(f"{run_dir}: layers {layers} measured; say which")
    cell = [r for r in records if layer is None or r.get("layer") == layer]
    if not cell:
        return Verdict(finding, UNSURE, f"not measured: no {prompt_set} cell at {unit} "
                                        f"{value:g} in {run_dir}")
    first = cell[0]
    task = str(first.get("data", "sentiment:")).split(":")[0]
    sign = -1 if task == "toxicity" or first.get("target") == "negative" else 1
    other = (first.get("extra") or {}).get("as_strength" if unit == "coefficient" else
                                           "as_coefficient")
    what = (f"{task}, {prompt_set} prompts, layer {first.get('layer')}, {unit} {value:g}"
            + (f" (= {'strength' if unit == 'coefficient' else 'coefficient'} {other:.3g})"
               if isinstance(other, float | int) else "") + f", n = {first.get('n')}")
    return judge_cell(cell, sign=sign, what=what, finding=finding)
