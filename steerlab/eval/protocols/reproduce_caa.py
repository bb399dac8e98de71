"""CAA by its own protocol (Rimsky et al. 2023), as ``steerlab reproduce`` runs it: the cell's
records (the answer-letter vector, the letter score and mass at each raw multiplier), what they
say (:class:`CAAResult`, its verdict, warnings and deviations from the paper) and its table.

:func:`steerlab.eval.protocols.reproduce.caa_check` runs the cell (the ``caa`` study's runs).

Example:
    >>> CAA_MULTIPLIERS, CAA_POSITIONS
    ((-1.0, 0.0, 1.0), 'after_instruction')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerlab.eval import verdicts as rules
from steerlab.eval.store import make_record
from steerlab.eval.tables import print_table

CAA_MULTIPLIERS = (-1.0, 0.0, 1.0)  # Rimsky et al.'s raw multipliers of the mean difference
CAA_POSITIONS = "after_instruction"  # CAA adds the vector at every position after the prompt
CAA_PAPER = "Rimsky et al. 2023"


@dataclass
class CAAResult:
    """What :func:`~steerlab.eval.protocols.reproduce.caa_check` measured: per multiplier,
    CAA's score p(matching letter) / (p(A) + p(B)) and the answer-letter mass p(A) + p(B) (each
    value, low, high), the paired shift from the lowest multiplier to the highest, and the
    protocol it ran under."""

    model: str
    data: str
    layer: int
    multipliers: list[float]
    strengths: dict[float, float | None]  # multiplier -> equivalent strength
    score: dict[float, tuple[float, float, float]]
    letter_mass: dict[float, tuple[float, float, float]]
    shift: tuple[float, float, float] | None
    item_ids: list[str]
    n_test: int  # items in the whole test split
    n_pairs: int  # train pairs the vector was extracted from
    n_pool: int  # train + val items: what the paper would have extracted from
    read_position: str
    matching_a_share: float | None
    chat_template: bool
    params: int | None = None
    answers: tuple[str, str] = ("A", "B")  # the two answer tokens (Yes/No for persona items)

    def deviations(self) -> list[str]:
        """Where this run's protocol differs from Rimsky et al. 2023 (Llama 2 7B/13B Chat,
        ``[INST] … [/INST]`` prompts, all of ``generate.json`` for the vector, a layer sweep by
        the A/B effect, the 50 held-out A/B items, multipliers ±1 after the instruction).

        Example:
            >>> r = CAAResult("m", "caa:refusal", 3, [-1.0, 0.0, 1.0], {}, {}, {}, None,
            ...               ["a"] * 50, 50, 326, 408, "answer_token", 0.5, True, 135_000_000)
            >>> r.deviations()[0]
            'model m (135 M parameters) instead of Llama 2 7B/13B Chat'
        """
        size = f" ({self.params / 1e6:.3g} M parameters)" if self.params else ""
        out = [f"model {self.model}{size} instead of Llama 2 7B/13B Chat",
               ("the model's own chat template" if self.chat_template else
                "a plain 'Question: … Answer:' prompt (the model has no chat template)") +
               " instead of Llama 2's [INST] … [/INST], no system prompt",
               f"layer {self.layer}: the audit's (chosen by its open-answer effect on the val "
               "split), where the paper sweeps layers by the A/B effect (13 of 32 on 7B)"]
        if self.n_pairs < self.n_pool:
            out.append(f"vector from {self.n_pairs} train pairs, not all {self.n_pool} items "
                       "outside the test split (the rest is the audit's val split)")
        if len(self.item_ids) < self.n_test:
            out.append(f"{len(self.item_ids)} of the {self.n_test} test items")
        if self.answers != ("A", "B"):
            out.append(f"{'/'.join(self.answers)} answers (statements, not CAA's A/B choices):"
                       " the vector is read at that answer token and the mass is p("
                       f"{self.answers[0]})+p({self.answers[1]})")
        if self.read_position != "answer_token":
            out.append(f"vector read at {self.read_position}, not the answer letter")
        return out

    def warnings(self) -> list[str]:
        """The validity warnings of the unsteered letter score (mass, letter bias, base rate)."""
        zero = self.letter_mass.get(0.0)
        base = self.score.get(0.0)
        return rules.validity_warnings(letter_mass=zero[0] if zero else None,
                                       matching_a_share=self.matching_a_share,
                                       base_rate=base[0] if base else None)

    def verdict(self, open_effect: tuple[float, float, float] | None = None,
                open_what: str = "") -> rules.Verdict:
        """The CAA verdict (:func:`~steerlab.eval.verdicts.judge_caa`) of this measurement."""
        low, high = min(self.multipliers), max(self.multipliers)
        token = "letter" if self.answers == ("A", "B") else "answer"
        what = f"p(matching {token}) at {rules.signed(high)} vs {rules.signed(low)}"
        strength = self.strengths.get(high)
        if strength is not None:
            what += f" (strength ±{abs(strength):.3g})"
        verdict = rules.judge_caa(self.shift, {m: v[0] for m, v in self.letter_mass.items()},
                                  what=what, open_effect=open_effect, open_what=open_what,
                                  warnings=self.warnings(), deviations=self.deviations(),
                                  answers=self.answers)
        verdict.numbers.update(
            layer=self.layer, n=len(self.item_ids), n_pairs=self.n_pairs,
            score={rules.signed(m): v for m, v in self.score.items()},
            strength={rules.signed(m): v for m, v in self.strengths.items()})
        return verdict

    def read(self, records: Sequence[dict[str, Any]]) -> CAAResult:
        """Fill in what the cell's ``records`` measured (scores, letter masses, equivalent
        strengths, the shift and the protocol's facts); returns ``self``."""
        for r in records:
            extra = r.get("extra") or {}
            where = r.get("coefficient")
            if r["metric"] in ("score", "letter_mass") and where is not None:
                target = self.score if r["metric"] == "score" else self.letter_mass
                target[float(where)] = _triple(r)
                if r["metric"] == "letter_mass":
                    self.strengths[float(where)] = extra.get("strength_equivalent")
            if r["metric"] == "letter_mass":
                self.item_ids = list(extra.get("item_ids", self.item_ids))
                self.n_pairs, self.n_pool = int(r.get("n_pairs") or 0), int(extra["n_pool"])
                self.read_position = str(extra.get("read_position"))
                self.chat_template = bool(extra.get("chat_template"))
                self.params = extra.get("params")
        effects = [r for r in records if r["metric"] == "effect"]
        effect = effects[-1] if effects else None
        self.shift = _triple(effect) if effect and effect.get("ci_low") is not None else None
        return self


def answer_pair(items: Sequence[Any]) -> tuple[str, str]:
    """The two answers of non-letter items, the first item's matching one first ("Yes", "No").

    Example:
        >>> from steerlab.data.formats import ABItem
        >>> answer_pair([ABItem("Q?", " Yes", " No"), ABItem("R?", " No", " Yes")])
        ('Yes', 'No')
    """
    first = items[0]
    return str(first.matching).strip(), str(first.not_matching).strip()


def caa_records(run: Any, model: str, data: str, layer: int, values: list[float],
                items: Sequence[Any], ids: list[str], train_limit: int, seed: int,
                batch_size: int) -> list[dict[str, Any]]:
    """Extract CAA's vector, score the items at each multiplier: the cell's records."""
    from steerlab.data.loaders import load_dataset
    from steerlab.data.sequences import ab_sequences
    from steerlab.eval import behaviour as bh
    from steerlab.eval.run import stopwatch
    from steerlab.model.load import load_model
    from steerlab.scoring.sweep import SweepEngine
    from steerlab.util import stats

    lm = load_model(model)
    run.update({"model_revision": lm.revision})
    train = load_dataset(data, split="train", seed=seed)
    pool = len(train) + len(load_dataset(data, split="val", seed=seed))
    if train_limit:
        train = train.subset(train_limit, seed)
    vec = bh.cached_vector(lm, run.path("vector.safetensors"), train, "mean_diff", [layer],
                           batch_size)
    bh.explain_values(vec, [layer], "coefficient", values)
    seqs = [ab_sequences(lm.tokenizer, item) for item in items]
    with stopwatch() as took:
        results = SweepEngine(lm, batch_size=batch_size).score(
            seqs, vec, [[layer]], values, unit="coefficient", positions=CAA_POSITIONS)
    resid, norm = vec.resid_norm(layer), float(vec.directions[layer].norm(dim=-1).mean())
    fields = {"model": model, "data": data, "method": vec.method, "site": vec.site,
              "seed": seed, "n_pairs": len(train), "split": "test", "item_ids": ids,
              "positions": CAA_POSITIONS}
    records = bh.cell_records(results, layer, values, "coefficient", took[0], **fields)
    about = {"n_pool": pool, "read_position": vec.manifest.get("read_position"),
             "chat_template": bool(getattr(lm.tokenizer, "chat_template", None)),
             "params": sum(p.numel() for p in lm.model.parameters()), "vector_norm": norm,
             "resid_norm": resid}
    for value in values:
        res = results[(layer, value)]
        mass = [a + b for a, b in zip(res.p_matching, res.p_not_matching, strict=True)]
        mean, low, high = stats.mean_ci(mass, bounds=(0.0, 1.0))
        strength = value * norm / resid if resid else None
        records.append(make_record("letter_mass", mean, ci=(low, high), layer=layer,
                                   coefficient=value, n=len(mass), seconds=took[0],
                                   strength_equivalent=strength, **fields, **about))
    return records


def _triple(record: dict[str, Any]) -> tuple[float, float, float]:
    def num(key: str) -> float:
        return math.nan if record.get(key) is None else float(record[key])

    return num("value"), num("ci_low"), num("ci_high")


def print_caa(found: CAAResult) -> None:
    """The measurement as a table: per multiplier, its strength, the score and the mass."""
    rows = []
    for m in found.multipliers:
        strength = found.strengths.get(m)
        score, mass = found.score.get(m), found.letter_mass.get(m)
        rows.append([rules.signed(m), "?" if strength is None else f"{strength:+.3g}",
                     "–" if score is None else _ci(score), "–" if mass is None else _ci(mass)])
    print_table(f"CAA ({CAA_PAPER}) on {found.model}: layer {found.layer}, "
                f"{found.n_pairs} train pairs, {len(found.item_ids)} test items, "
                f"{CAA_POSITIONS}", ["multiplier", "= strength", "p(matching answer)",
                                     f"mass p({found.answers[0]})+p({found.answers[1]})"], rows,
                caption="95 % Student-t intervals over items")


def _ci(v: tuple[float, float, float]) -> str:
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"
