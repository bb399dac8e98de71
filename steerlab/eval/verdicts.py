"""The CAE paper's five findings as verdicts a user's own vector gets: written rules.

Each finding of Hao et al. (2025, "Patterns and Mechanisms of Contrastive Activation
Engineering") gets ``holds``, ``does not hold`` or ``inconclusive`` from a rule over the
numbers (with their 95 % intervals) that the audit measured. The rules, in words:

1. **In distribution only** (``ood``): *holds* when the in-distribution effect's interval lies
   above 0 and the out-of-distribution effect's upper bound is below half of the ID effect
   (both as fractions of their scale: Δ behaviour score, Δ judge score / 9); *does not hold*
   when the ID effect is above 0 and the OOD effect's lower bound reaches half of it; else
   *inconclusive* (no ID effect to compare, or intervals too wide).
2. **Diminishing returns near ~80 pairs** (``samples``): *inconclusive* without a full-data
   effect distinguishable from zero or without counts ≥ 80 tried; *holds* when the sample-count
   curve's plateau is at most 160 pairs; *does not hold* when there is no plateau (the largest
   count still beats the others by more than its interval) or it lies above 160.
3. **Adversarial inputs reverse steering, and are unnatural** (``adversarial``): *holds* when
   the search's success rate has its Wilson lower bound above the random-suffix baseline's upper
   bound *and* the found suffixes' cross-entropy lies above that of natural text of the same
   length; *does not hold* when the success rate's upper bound does not exceed the baseline's
   (no better than random suffixes) with at least 10 items; else *inconclusive* (including
   "reversals happen but the suffixes are not measurably unnatural").
4. **Steering costs perplexity** (``perplexity``): *holds* when the steered / unsteered
   perplexity ratio's lower bound is above 1 at the strength used; *does not hold* when its
   upper bound is below 1.01 (at most a 1 % cost); else *inconclusive*.
5. **Larger models resist degradation** (``size``): needs ≥ 2 models measured at the same
   strength; *holds* when the largest model's perplexity ratio interval lies below the
   smallest's; *does not hold* when it lies above; else *inconclusive*.

Beside the paper's five, one comparison the audit also judges (AxBench, Wu et al. 2025, found
prompting beats steering on its concepts):

6. **Steering beats prompting** (``prompting``): on the same test items, with the same scorer,
   the vector's behaviour score against the behaviour asked for by instruction (system prompt,
   user-turn prefix, few-shot examples from the train split). *holds* ("steering beats
   prompting") when the paired difference vector − prompt has its interval above 0; *does not
   hold* ("prompting beats steering") when it lies below 0; *inconclusive* when it straddles 0;
   *not measurable* when there is nothing to compare (no instruction text for the behaviour,
   or no items).

A fourth verdict, *not measurable*, says a comparison could not be made at all (as opposed to
*inconclusive*: made, but the intervals do not decide).

Beside them, the two seed results ``steerlab reproduce`` checks. CAA (``caa``, Rimsky et al.
2023) is judged on its own A/B letter score, which only measures the behaviour while the model
answers in the A/B format: *not measurable* when the answer-letter mass p(A) + p(B) is below
0.8 (:data:`MIN_LETTER_MASS`) at any multiplier (the measured mass at each is the reason); else
*holds* when the shift of p(matching letter) from −1 to +1 has its interval above 0, *does not
hold* when its upper bound is at most 0, *inconclusive* otherwise. A CAA verdict also says where
its protocol differs from the paper's (``deviations``).

Validity warnings ride along: answer-letter mass below 0.8 (the A/B format is not being
followed), answer-position bias (the matching answer is one letter in far more than half of the
items), a base rate near 0 or 1 (little room to move), fewer contrast pairs than the plateau.

Example:
    >>> judge_perplexity((1.08, 1.04, 1.12), strength=0.4).verdict
    'holds'
    >>> judge_ood((0.2, 0.1, 0.3), (0.01, -0.05, 0.07)).verdict
    'holds'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
NOT_MEASURABLE = "not measurable"  # nothing to compare (as opposed to: intervals undecided)
VERDICTS = (HOLDS, FAILS, UNSURE, NOT_MEASURABLE)
Interval = tuple[float, float, float]  # value, low, high

FINDINGS = {
    "ood": "Steering works in distribution, much less out of distribution",
    "samples": "Returns diminish near ~80 contrast pairs",
    "adversarial": "Adversarial inputs reverse the steering, and such inputs are unnatural",
    "perplexity": "Steering costs perplexity",
    "size": "Larger models resist steering-induced degradation",
    "prompting": "Steering beats prompting (the behaviour asked for by instruction)",
}
RULES = {
    "ood": "holds: ID low > 0 and OOD high < ID/2; does not hold: ID low > 0 and OOD low >= "
           "ID/2 (effects as fractions of their scale)",
    "samples": "holds: plateau <= 160 pairs (needs a full-data effect > 0 and counts >= 80); "
               "does not hold: no plateau, or above 160",
    "adversarial": "holds: success low > random-baseline high and suffix xent low > natural "
                   "xent high; does not hold: success high <= baseline high (n >= 10)",
    "perplexity": "holds: ratio low > 1; does not hold: ratio high < 1.01",
    "size": "holds: largest model's ratio interval below the smallest's; does not hold: above",
    "prompting": "holds (steering beats prompting): paired score difference vector - prompt "
                 "low > 0; does not hold (prompting beats steering): high < 0; not measurable: "
                 "no instruction or no items",
}
# The two seed results ``steerlab reproduce`` checks beside the five findings (not the audit's).
REPLICATIONS = {
    "actadd": "ActAdd: a Love-Hate prompt-pair vector shifts completions' sentiment up",
    "caa": "CAA: the answer-letter mean-difference vector at ±1 shifts p(matching letter)",
}
REPLICATION_RULE = "holds: shift low > 0; does not hold: shift high <= 0"
#: Below this answer-letter mass p(A) + p(B) the model is not answering in the A/B format.
MIN_LETTER_MASS = 0.8
#: ActAdd's sentiment claim also needs fluent text: the steered completions' perplexity (under
#: the unsteered model, paired per prompt) at most this many times the unsteered ones'.
MAX_PPL_RATIO = 1.5
SENTIMENT_RULE = ("holds: shift low > 0 and shift with the steering words masked low > 0, "
                  f"perplexity ratio <= {MAX_PPL_RATIO:g}; does not hold: ratio > "
                  f"{MAX_PPL_RATIO:g} (fails fluency), or shift high <= 0, or masked shift "
                  "high <= 0 (the steering words alone); shifts in the target direction")
REPLICATION_RULES = {
    "actadd": SENTIMENT_RULE,
    "caa": f"not measurable: answer-letter mass p(A)+p(B) < {MIN_LETTER_MASS:g} at any "
           "multiplier; else holds: shift of p(matching letter) from -1 to +1 low > 0; does not "
           "hold: high <= 0",
}


@dataclass
class Verdict:
    """One finding's verdict, the rule that gave it, the numbers behind it and warnings."""

    finding: str
    verdict: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    deviations: list[str] = field(default_factory=list)  # where the protocol leaves the paper's

    @property
    def title(self) -> str:
        return FINDINGS.get(self.finding) or REPLICATIONS[self.finding]

    @property
    def rule(self) -> str:
        return RULES.get(self.finding) or REPLICATION_RULES.get(self.finding, REPLICATION_RULE)

    def as_dict(self) -> dict[str, Any]:
        saved = {**asdict(self), "title": self.title, "rule": self.rule}
        if not self.deviations:
            del saved["deviations"]  # only a replication says how it differs from its paper
        return saved

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Verdict:
        """The inverse of :meth:`as_dict` (``title`` and ``rule`` follow from the finding).

        Example:
            >>> v = Verdict("perplexity", HOLDS, "x1.1", {"ratio": [1.1, 1.0, 1.2]})
            >>> Verdict.from_dict(v.as_dict()) == v
            True
        """
        return cls(saved["finding"], saved["verdict"], saved["reason"],
                   dict(saved.get("numbers", {})), list(saved.get("warnings", [])),
                   list(saved.get("deviations", [])))

    def carrying(self, warnings: Sequence[str]) -> Verdict:
        """This verdict with ``warnings`` added (each once, after its own): a validity warning
        raised anywhere in a study travels with every verdict that study's numbers feed.

        Example:
            >>> v = Verdict("perplexity", HOLDS, "x1.1", warnings=["a"])
            >>> v.carrying(["b", "a"]).warnings
            ['a', 'b']
        """
        self.warnings = [*self.warnings, *(w for w in warnings if w not in self.warnings)]
        return self


def _ok(interval: Interval | None) -> bool:
    return interval is not None and not any(math.isnan(x) for x in interval)


def _fmt(interval: Interval) -> str:
    return f"{interval[0]:+.3f} [{interval[1]:+.3f}, {interval[2]:+.3f}]"


def judge_ood(id_effect: Interval | None, ood_effect: Interval | None) -> Verdict:
    """Finding 1 from the ID and OOD effects (each as a fraction of its scale).

    Example:
        >>> judge_ood((0.2, 0.1, 0.3), (0.15, 0.11, 0.19)).verdict
        'does not hold'
    """
    numbers = {"id_effect": id_effect, "ood_effect": ood_effect}
    if not _ok(id_effect) or not _ok(ood_effect):
        return Verdict("ood", UNSURE, "an effect has no interval (too few items)", numbers)
    assert id_effect is not None and ood_effect is not None
    if id_effect[1] <= 0:
        return Verdict("ood", UNSURE, f"no in-distribution effect to compare (ID "
                       f"{_fmt(id_effect)})", numbers)
    half = id_effect[0] / 2
    if ood_effect[2] < half:
        return Verdict("ood", HOLDS, f"OOD {_fmt(ood_effect)} stays below half the ID effect "
                       f"{_fmt(id_effect)}", numbers)
    if ood_effect[1] >= half:
        return Verdict("ood", FAILS, f"OOD {_fmt(ood_effect)} is at least half the ID effect "
                       f"{_fmt(id_effect)}", numbers)
    return Verdict("ood", UNSURE, f"OOD {_fmt(ood_effect)} vs half the ID effect ({half:+.3f}): "
                   "the interval straddles it", numbers)


def judge_samples(plateau: int | None, sizes: Sequence[int], full_effect: Interval | None,
                  n_train: int) -> Verdict:
    """Finding 2 from the sample-count curve.

    Example:
        >>> judge_samples(40, [1, 10, 40, 80, 160], (0.3, 0.2, 0.4), 300).verdict
        'holds'
    """
    numbers = {"plateau": plateau, "sizes": list(sizes), "full_effect": full_effect,
               "n_train": n_train}
    warnings = []
    if plateau is not None and n_train < plateau:
        warnings.append(f"only {n_train} train pairs, fewer than the plateau ({plateau})")
    if not _ok(full_effect) or full_effect is None or full_effect[1] <= 0:
        return Verdict("samples", UNSURE, "the full-data effect is not distinguishable from "
                       "zero: nothing to saturate", numbers, warnings)
    if max(sizes, default=0) < 80:
        return Verdict("samples", UNSURE, f"pair counts up to {max(sizes, default=0)} only; "
                       "the finding is about ~80", numbers, warnings)
    if plateau is None:
        return Verdict("samples", FAILS, f"no plateau up to {max(sizes)} pairs: more pairs "
                       "still help", numbers, warnings)
    if plateau <= 160:
        return Verdict("samples", HOLDS, f"the effect plateaus at {plateau} pairs", numbers,
                       warnings)
    return Verdict("samples", FAILS, f"the plateau is at {plateau} pairs, well past ~80",
                   numbers, warnings)


def judge_adversarial(success: Interval | None, baseline: Interval | None,
                      suffix_xent: Interval | None, natural_xent: Interval | None,
                      n: int) -> Verdict:
    """Finding 3 from the reversal rates and cross-entropies.

    Example:
        >>> judge_adversarial((0.6, 0.4, 0.8), (0.1, 0.02, 0.3), (8.0, 7.0, 9.0),
        ...                   (4.0, 3.5, 4.5), 20).verdict
        'holds'
    """
    numbers = {"success": success, "baseline": baseline, "suffix_xent": suffix_xent,
               "natural_xent": natural_xent, "n": n}
    if not _ok(success) or not _ok(baseline) or success is None or baseline is None:
        return Verdict("adversarial", UNSURE, "no success rates measured", numbers)
    beats = success[1] > baseline[2]
    unnatural = (_ok(suffix_xent) and _ok(natural_xent) and suffix_xent is not None
                 and natural_xent is not None and suffix_xent[1] > natural_xent[2])
    if beats and unnatural:
        return Verdict("adversarial", HOLDS, f"search reverses {success[0]:.0%} of items vs "
                       f"{baseline[0]:.0%} for random suffixes, with suffixes less natural "
                       "than text", numbers)
    if success[2] <= baseline[2] and n >= 10:
        return Verdict("adversarial", FAILS, f"the search does no better than random suffixes "
                       f"({success[0]:.0%} vs {baseline[0]:.0%})", numbers)
    reason = ("reversals beat random suffixes but the suffixes are not measurably unnatural"
              if beats else "the success rate's interval overlaps the random baseline's")
    return Verdict("adversarial", UNSURE, reason, numbers)


def judge_perplexity(ratio: Interval | None, strength: float | None) -> Verdict:
    """Finding 4 from the perplexity ratio at the strength used.

    Example:
        >>> judge_perplexity((1.004, 0.998, 1.009), strength=0.1).verdict
        'does not hold'
    """
    numbers = {"ratio": ratio, "strength": strength}
    if not _ok(ratio) or ratio is None:
        return Verdict("perplexity", UNSURE, "no perplexity ratio measured", numbers)
    if ratio[1] > 1.0:
        return Verdict("perplexity", HOLDS, f"perplexity ×{ratio[0]:.3f} [{ratio[1]:.3f}, "
                       f"{ratio[2]:.3f}] when steered", numbers)
    if ratio[2] < 1.01:
        return Verdict("perplexity", FAILS, f"at most a 1 % cost (×{ratio[0]:.3f} [{ratio[1]:.3f}"
                       f", {ratio[2]:.3f}])", numbers)
    return Verdict("perplexity", UNSURE, f"ratio ×{ratio[0]:.3f} [{ratio[1]:.3f}, "
                   f"{ratio[2]:.3f}] may be 1", numbers)


def judge_size(ratios: Sequence[tuple[str, float, Interval]]) -> Verdict:
    """Finding 5 from ``(model, parameters, perplexity ratio)`` per model, same strength.

    Example:
        >>> judge_size([("small", 1.35e8, (1.4, 1.3, 1.5)),
        ...             ("big", 1.5e9, (1.05, 1.02, 1.08))]).verdict
        'holds'
    """
    numbers = {"models": [{"model": m, "params": p, "ratio": r} for m, p, r in ratios]}
    usable = [x for x in ratios if _ok(x[2])]
    if len(usable) < 2:
        return Verdict("size", UNSURE, "needs at least two models (audit --models)", numbers)
    small = min(usable, key=lambda x: x[1])
    big = max(usable, key=lambda x: x[1])
    if big[2][2] < small[2][1]:
        return Verdict("size", HOLDS, f"{big[0]} degrades less (×{big[2][0]:.3f}) than "
                       f"{small[0]} (×{small[2][0]:.3f})", numbers)
    if big[2][1] > small[2][2]:
        return Verdict("size", FAILS, f"{big[0]} degrades more (×{big[2][0]:.3f}) than "
                       f"{small[0]} (×{small[2][0]:.3f})", numbers)
    return Verdict("size", UNSURE, f"{big[0]} ×{big[2][0]:.3f} vs {small[0]} "
                   f"×{small[2][0]:.3f}: intervals overlap", numbers)


def judge_prompting(difference: Interval | None, vector_effect: Interval | None = None,
                    prompt_effect: Interval | None = None, *,
                    combined_effect: Interval | None = None,
                    fluency: Mapping[str, Interval | None] | None = None,
                    missing: str | None = None, letter_mass: float | None = None) -> Verdict:
    """Comparison 6 from the paired behaviour-score difference vector − prompt on the same items.

    ``vector_effect``, ``prompt_effect`` and ``combined_effect`` (prompt + vector) are each
    condition's paired effect over the unsteered, uninstructed baseline; ``fluency`` maps a
    condition to its answers' perplexity ratio over the baseline's. ``missing`` says why there
    is nothing to compare (then the verdict is *not measurable*); so does an A/B letter score
    whose unsteered ``letter_mass`` p(A) + p(B) is below :data:`MIN_LETTER_MASS` (the model is
    not answering in the format, so its score cannot say which wins).

    Example:
        >>> judge_prompting((0.12, 0.05, 0.19)).reason[:27]
        'steering beats prompting by'
        >>> judge_prompting((-0.2, -0.3, -0.1)).verdict
        'does not hold'
        >>> judge_prompting(None, missing="no instruction for 'x'").verdict
        'not measurable'
        >>> judge_prompting((0.12, 0.05, 0.19), letter_mass=0.07).reason[:30]
        'answer-letter mass p(A)+p(B) i'
    """
    numbers: dict[str, Any] = {"difference": difference, "vector_effect": vector_effect,
                               "prompt_effect": prompt_effect,
                               "combined_effect": combined_effect,
                               "fluency_ratio": dict(fluency or {})}
    if missing:
        return Verdict("prompting", NOT_MEASURABLE, missing, numbers)
    if letter_mass is not None and not letter_mass >= MIN_LETTER_MASS:  # NaN too
        numbers["letter_mass"] = letter_mass
        return Verdict("prompting", NOT_MEASURABLE,
                       f"answer-letter mass p(A)+p(B) is {letter_mass:.2f} unsteered (< "
                       f"{MIN_LETTER_MASS:g}): the model is not answering in the A/B format, so "
                       "its letter score cannot say whether steering or prompting moves the "
                       "behaviour (--format open where the data allows)", numbers)
    if not _ok(difference) or difference is None:
        return Verdict("prompting", UNSURE, "the difference has no interval (too few items)",
                       numbers)
    both = (f" (over the baseline: vector {_fmt(vector_effect)}, prompt "
            f"{_fmt(prompt_effect)})" if _ok(vector_effect) and _ok(prompt_effect)
            and vector_effect is not None and prompt_effect is not None else "")
    warnings = _cost_warnings(fluency or {})
    if _ok(combined_effect) and combined_effect is not None and _ok(vector_effect) \
            and vector_effect is not None and _ok(prompt_effect) and prompt_effect is not None \
            and combined_effect[0] > max(vector_effect[0], prompt_effect[0]):
        warnings.append(f"prompt + vector together move the score most ({_fmt(combined_effect)}"
                        " over the baseline)")
    if difference[1] > 0:
        return Verdict("prompting", HOLDS, f"steering beats prompting by {_fmt(difference)} in "
                       f"behaviour score{both}", numbers, warnings)
    if difference[2] < 0:
        return Verdict("prompting", FAILS, f"prompting beats steering by "
                       f"{_fmt((-difference[0], -difference[2], -difference[1]))} in behaviour "
                       f"score{both}", numbers, warnings)
    return Verdict("prompting", UNSURE, f"neither wins: vector − prompt {_fmt(difference)} may "
                   f"be 0{both}", numbers, warnings)


def _cost_warnings(fluency: Mapping[str, Interval | None]) -> list[str]:
    """Which side's answers read measurably worse (its fluency ratio interval above the
    other's): what a win on the behaviour score costs."""
    got = {k: fluency.get(k) for k in ("vector", "prompt")}
    if not all(_ok(v) for v in got.values()):
        return []
    vec, prompt = got["vector"], got["prompt"]
    assert vec is not None and prompt is not None
    for (name, a), (other, b) in ((("vector", vec), ("prompt", prompt)),
                                  (("prompt", prompt), ("vector", vec))):
        if a[1] > b[2]:
            return [f"the {name}'s answers cost more fluency: perplexity ×{a[0]:.2f} "
                    f"[{a[1]:.2f}, {a[2]:.2f}] over the baseline's, vs ×{b[0]:.2f} "
                    f"[{b[1]:.2f}, {b[2]:.2f}] for the {other}'s"]
    return []


def judge_shift(finding: str, shift: Interval | None, what: str) -> Verdict:
    """A seed result (``actadd`` / ``caa``) from its shift's interval (``what`` names it).

    Example:
        >>> judge_shift("caa", (0.2, 0.1, 0.3), "A/B score at ±0.4").verdict
        'holds'
        >>> judge_shift("actadd", (-0.01, -0.05, 0.03), "VADER compound").verdict
        'inconclusive'
    """
    numbers = {"shift": shift, "measure": what}
    if not _ok(shift) or shift is None:
        return Verdict(finding, UNSURE, f"no {what} shift measured", numbers)
    if shift[1] > 0:
        return Verdict(finding, HOLDS, f"{what} shifts {_fmt(shift)}", numbers)
    if shift[2] <= 0:
        return Verdict(finding, FAILS, f"{what} does not rise: {_fmt(shift)}", numbers)
    return Verdict(finding, UNSURE, f"{what} shift {_fmt(shift)} may be 0", numbers)


def validity_warnings(*, letter_mass: float | None = None, matching_a_share: float | None = None,
                      base_rate: float | None = None) -> list[str]:
    """The warnings that make a measurement hard to read (see the module notes).

    Example:
        >>> validity_warnings(letter_mass=0.4, base_rate=0.97)[0][:26]
        'answer-letter mass is 0.40'
    """
    out = []
    if letter_mass is not None and letter_mass < MIN_LETTER_MASS:
        out.append(f"answer-letter mass is {letter_mass:.2f} (< {MIN_LETTER_MASS:g}): the model "
                   "is not answering in the A/B format; prefer --format open")
    if matching_a_share is not None and abs(matching_a_share - 0.5) > 0.15:
        out.append(f"the matching answer is (A) in {matching_a_share:.0%} of items: a letter "
                   "bias can pass for the behaviour")
    if base_rate is not None and not 0.1 <= base_rate <= 0.9:
        out.append(f"the unsteered score is {base_rate:.2f}: little room to move")
    return out


def signed(value: float) -> str:
    """A multiplier as the tables write it: with its sign, and 0 without one.

    Example:
        >>> [signed(v) for v in (-1.0, 0.0, 1.0, 0.5)]
        ['-1', '0', '+1', '+0.5']
    """
    return "0" if value == 0 else f"{value:+g}"


def judge_caa(shift: Interval | None, letter_mass: Mapping[float, float], *, what: str,
              open_effect: Interval | None = None, open_what: str = "",
              warnings: Sequence[str] = (), deviations: Sequence[str] = (),
              answers: tuple[str, str] = ("A", "B")) -> Verdict:
    """CAA's seed result on its own A/B letter score, valid only where the letters are answered.

    ``shift``: the paired shift of p(matching letter) / (p(A) + p(B)) from multiplier −1 to +1;
    ``letter_mass``: the mean p(A) + p(B) at each multiplier. Any mass below
    :data:`MIN_LETTER_MASS` makes the verdict *not measurable* (the masses are the reason)
    whatever the shift; else :func:`judge_shift`'s rule. ``open_effect`` (the audit's
    open-answer effect, described by ``open_what``) rides beside it in the numbers, never
    deciding it; ``warnings`` and ``deviations`` (where the protocol differs from the paper's)
    are kept on the verdict. ``answers``: the two answer tokens (CAA's letters; ``("Yes",
    "No")`` for persona statements), named in the reason.

    Example:
        >>> v = judge_caa((0.05, -0.02, 0.12), {-1.0: 0.80, 0.0: 0.63, 1.0: 0.08},
        ...               what="p(matching letter) at +1 vs -1")
        >>> v.verdict, v.reason[:53]
        ('not measurable', 'answer-letter mass p(A)+p(B) is 0.80 / 0.63 / 0.08 at')
        >>> judge_caa((0.2, 0.1, 0.3), {-1.0: 0.9, 0.0: 0.95, 1.0: 0.9}, what="x").verdict
        'holds'
    """
    masses = {float(m): float(v) for m, v in sorted(letter_mass.items())}
    numbers = {"shift": shift, "measure": what,
               "letter_mass": {signed(m): round(v, 4) for m, v in masses.items()},
               "open_effect": open_effect, "open_measure": open_what}
    low = [m for m, v in masses.items() if math.isnan(v) or v < MIN_LETTER_MASS]
    if not masses:
        verdict, reason = NOT_MEASURABLE, "no answer-letter mass measured (no A/B items)"
    elif low:
        verdict = NOT_MEASURABLE
        pair = "answer-letter mass p(A)+p(B)" if answers == ("A", "B") else (
            f"answer-token mass p({answers[0]})+p({answers[1]})")
        reason = (f"{pair} is "
                  f"{' / '.join(f'{v:.2f}' for v in masses.values())} at multipliers "
                  f"{' / '.join(map(signed, masses))} (below {MIN_LETTER_MASS:g} at "
                  f"{', '.join(map(signed, low))}): the model is not answering in the "
                  f"{'/'.join(answers)} format, so {what} does not measure the behaviour")
        if _ok(shift) and shift is not None:
            reason += f" (its shift {_fmt(shift)} is not judged)"
    else:
        judged = judge_shift("caa", shift, what)
        verdict, reason = judged.verdict, judged.reason
    return Verdict("caa", verdict, reason, numbers, list(dict.fromkeys(warnings)),
                   list(deviations))
