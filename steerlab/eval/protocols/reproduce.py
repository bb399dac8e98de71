"""``steerlab reproduce``: the seeds' findings on several models, one table.

Per model (``--out/<model>/``): the :mod:`audit <steerlab.eval.protocols.audit>` of one
behaviour (the five findings; the size finding is judged once across all models from each
model's perplexity ratio at the same strength), plus two seed results —

* ``actadd/``: ActAdd's Love−Hate prompt-pair vector at 20 % depth, applied at the front
  positions, shifting the sentiment of completions of negative (judged) and neutral prompts
  (coefficient 5 vs 0, paired per prompt; 100 prompts per set), scored by the learned
  classifier with VADER beside it, with the steering words masked as a control and the
  perplexity ratio ≤ 1.5 as the fluency condition. The pair is ``" love"``/``" hate"``: with
  the leading space each is one token on SmolLM2 (where ``"Hate"`` splits into ``"H"`` +
  ``"ate"``), so the two prompts line up token for token, as ActAdd needs;
* ``caa/``: CAA run by its own protocol (Rimsky et al. 2023, "Steering Llama 2 via Contrastive
  Activation Addition"; :func:`caa_check`): the vector is the mean difference of the residual
  stream at the answer letter (each train item's A/B prompt with the matching vs the other
  letter appended, read at that letter), added after the instruction (``after_instruction``)
  at raw multipliers −1 / 0 / +1 (their equivalent strengths are printed) at the audit's layer,
  on every item of the behaviour's A/B test split; the metric is CAA's, p(matching letter) /
  (p(A) + p(B)). A model whose answer-letter mass p(A) + p(B) is below 0.8 at any multiplier
  gets *not measurable* (the masses are the reason), with the audit's open-answer effect shown
  beside it, never used as the CAA verdict; the verdict also lists where the protocol differs
  from the paper's (model, chat template, layer choice, train pairs, items).

Validity warnings are never dropped: the audit's (``audit.json``) ride on every verdict its
numbers feed, CAA's own (letter mass, letter bias, base rate) on the CAA verdict, and both the
printed table and ``docs/RESULTS.md`` show them beside the verdicts.

Everything resumes (rerun the command); the per-model verdicts go to ``<model>/verdicts.json``
and the cross-model size verdict to ``OUT/verdicts.json``, so ``steerlab report OUT`` shows
them (the command writes ``OUT/report.html``); ``docs/RESULTS.md`` (``--results``) gets the
finding × model table with the numbers, sizes and wall times.

Each finished model also leaves its row beside the table, ``docs/results/<model>.json``: its
verdicts with their numbers, the sizes it ran at, its seconds, and when, where and by which
version it was measured. A later run at the same sizes keeps that row instead of measuring the
model again, so the table can be completed a model at a time, on other machines or in later
sessions, and still be written by this one command; a row at other sizes is measured again, and
``remeasure`` measures every model again.

Example:
    >>> cfg = ReproduceConfig(out="runs/repro", models=("smollm2-135m",), data="caa:refusal")
    >>> run(cfg)                                                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval import verdicts as rules
from steerlab.eval.configs.audit import AuditConfig
from steerlab.eval.protocols.reproduce_caa import (
    CAA_MULTIPLIERS,
    CAA_PAPER,
    CAA_POSITIONS,
    CAAResult,
    answer_pair,
    caa_records,
    print_caa,
)
from steerlab.eval.protocols.reproduce_table import ModelResult, markdown, print_verdicts
from steerlab.eval.store import cell_id, read_results
from steerlab.eval.tables import console
from steerlab.util.io import atomic_write, write_json
from steerlab.util.machine import describe
from steerlab.version import __version__

DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
ACTADD_PAIR = (" love", " hate")  # one token each on SmolLM2; "Hate" is "H" + "ate"
ACTADD_DEPTH = 0.2
ACTADD_COEFFICIENT = 5.0


@dataclass
class ReproduceConfig:
    """The models, the behaviour, the audit's sizes (shared by every model) and the outputs."""

    out: str | Path
    models: Sequence[str] = DEFAULT_MODELS
    data: str = "caa:refusal"
    audit: AuditConfig | None = None  # sizes; out/model/data are set per model
    sentiment_limit: int = 100  # prompts per set: ±0.06 on a shift (ActAdd's check)
    results: Path | None = Path("docs/RESULTS.md")
    seed: int = 0
    remeasure: bool = False  # measure every model again even where its row is kept
    actadd_pair: tuple[str, str] = ACTADD_PAIR  # must line up token for token on every model
    caa_limit: int = 0  # CAA test items (0: every item of the test split, as the paper)
    caa_train_limit: int = 0  # CAA train pairs (0: the whole train split)

    def audit_for(self, model: str) -> AuditConfig:
        base = self.audit or AuditConfig(out=".", data=self.data)
        studies = [s for s in base.studies if s != "size"]  # judged across models here
        return replace(base, out=Path(self.out) / _safe(model), data=self.data, model=model,
                       models=(), studies=studies, seed=self.seed)

    def row_path(self, model: str) -> Path | None:
        """Where ``model``'s kept row goes: ``results/<model>.json`` beside the table."""
        return None if self.results is None else self.results.parent / "results" / (
            _safe(model) + ".json")

    def sizes(self, model: str) -> dict[str, Any]:
        """Everything a model's numbers depend on (JSON-normal), compared before a row is kept.

        Example:
            >>> ReproduceConfig("x").sizes("m")["limit"]
            40
        """
        audit = asdict(self.audit_for(model))
        for key in ("out", "model", "models", "batch_size"):
            audit.pop(key)
        audit.update(sentiment_limit=self.sentiment_limit, actadd_pair=list(self.actadd_pair),
                     actadd_depth=ACTADD_DEPTH, actadd_coefficient=ACTADD_COEFFICIENT,
                     caa={"protocol": "answer-letter mean difference", "positions": CAA_POSITIONS,
                          "multipliers": list(CAA_MULTIPLIERS), "limit": self.caa_limit,
                          "train_limit": self.caa_train_limit})
        normal: dict[str, Any] = json.loads(json.dumps(audit, default=str))
        return normal

    def size_lines(self, model: str) -> list[str]:
        """The sizes every model runs at (the audit's as for ``model``), as the Markdown
        bullets of ``docs/RESULTS.md``.

        Example:
            >>> ReproduceConfig("x").size_lines("m")[-1].startswith("- CAA (Rimsky")
            True
        """
        audit = self.audit_for(model)
        return [f"- sweep: depths 0.3-0.7 × strengths "
                f"{', '.join(f'{v:g}' for v in audit.strengths)}; {audit.limit} val + "
                f"{audit.limit} test items; {audit.train_limit} train pairs",
                f"- samples: pair counts {', '.join(map(str, audit.pair_counts))} × "
                f"{audit.draws} draws",
                f"- ood: {audit.ood_limit} AEP prompts per set ({', '.join(audit.ood_lengths)}),"
                f" {audit.max_new_tokens} new tokens, judge `{audit.judge}`",
                f"- adversarial: {audit.adversarial_limit} items, EPO {audit.iterations} "
                f"iterations × {audit.population}×{audit.children} candidates, "
                f"{audit.suffix_length}-token suffixes",
                f"- perplexity: {audit.windows} WikiText-2 windows of 256 tokens",
                f"- ActAdd: \"{self.actadd_pair[0]}\"−\"{self.actadd_pair[1]}\" at depth "
                f"{ACTADD_DEPTH:g}, coefficient {ACTADD_COEFFICIENT:g}, front positions, "
                f"{self.sentiment_limit} negative + {self.sentiment_limit} neutral prompts, 24 "
                "new tokens, the MiniLM classifier (VADER beside it), steering words masked "
                "as a control, perplexity ratio ≤ 1.5",
                f"- CAA ({CAA_PAPER}'s protocol): mean difference of the residual stream at "
                f"the answer letter over "
                f"{self.caa_train_limit or 'all'} train pairs, at the audit's layer, added "
                f"{CAA_POSITIONS.replace('_', ' ')} at multipliers "
                f"{', '.join(map(rules.signed, CAA_MULTIPLIERS))} (raw; the equivalent "
                f"strengths are in the numbers), scored by p(matching letter) on "
                f"{self.caa_limit or 'all'} items of the A/B test split; not measurable when "
                f"p(A)+p(B) < {rules.MIN_LETTER_MASS:g} at any multiplier"]


def _safe(model: str) -> str:
    return model.replace("/", "_")


def run(cfg: ReproduceConfig) -> list[ModelResult]:
    """Audit every model (resumable), add the two seed results, judge size, write the table."""
    names = [m.strip() for m in cfg.models if m.strip()]
    if not names:
        raise SteerlabError("--models: give at least one model")
    results = []
    for index, name in enumerate(names, 1):
        console.rule(f"[bold]model {index}/{len(names)}: {name}")
        results.append(_kept(cfg, name) or _measured(cfg, name))
    size = rules.judge_size([(r.model, float(r.params), r.verdicts["perplexity"].numbers["ratio"])
                             for r in results if r.params and "perplexity" in r.verdicts
                             and r.verdicts["perplexity"].numbers.get("ratio") is not None])
    root = Path(cfg.out)
    write_json(root / "verdicts.json", [size.as_dict()], what="verdicts")
    for r in results:
        r.verdicts["size"] = size
    print_verdicts(results)
    if cfg.results is not None:
        table = markdown(results, cfg.data, cfg.size_lines(results[0].model))
        atomic_write(cfg.results, table, what="results table")
        console.print(f"table: {cfg.results}")
    return results


def _kept(cfg: ReproduceConfig, name: str) -> ModelResult | None:
    """``name``'s row from an earlier run at the same sizes (``None``: measure it)."""
    path = cfg.row_path(name)
    if cfg.remeasure or path is None or not path.is_file():
        return None
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
        sizes = row["sizes"]
        verdicts = {v["finding"]: rules.Verdict.from_dict(v) for v in row["verdicts"]
                    if v["finding"] != "size"}  # judged across the models, not kept
        result = ModelResult(name, row.get("params"), row.get("layer"), float(row["strength"]),
                             verdicts, {str(k): float(v) for k, v in row["seconds"].items()},
                             str(row.get("measured", "")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SteerlabError(f"{path}: not a reproduce row ({type(exc).__name__}: {exc}); "
                            "delete it to measure the model again") from exc
    want = cfg.sizes(name)
    differ = sorted(k for k in {*want, *sizes} if want.get(k) != sizes.get(k))
    if differ:
        console.print(f"{path}: measured at other sizes ({', '.join(differ)}); measuring again")
        return None
    console.print(f"kept {path} (measured {result.measured}); --remeasure measures it again")
    _write_verdicts(cfg.audit_for(name).root, result)  # so `steerlab report OUT` shows it
    return result


def _measured(cfg: ReproduceConfig, name: str) -> ModelResult:
    """Run (or resume) ``name``'s studies, then keep its row beside the table."""
    result = _one_model(cfg, name)
    result.measured = f"{datetime.now(UTC):%Y-%m-%d}, {describe()}, steerlab {__version__}"
    path = cfg.row_path(name)
    if path is not None:
        write_json(path, {"model": name, "params": result.params, "layer": result.layer,
                          "strength": result.strength, "measured": result.measured,
                          "seconds": result.seconds, "sizes": cfg.sizes(name),
                          "verdicts": _own_verdicts(result)}, what="reproduce row")
    return result


def _one_model(cfg: ReproduceConfig, name: str) -> ModelResult:
    from steerlab.eval.protocols.audit import earlier_seconds
    from steerlab.eval.protocols.audit import run as audit

    audit_cfg = cfg.audit_for(name)
    found = {v.finding: v for v in audit(audit_cfg)}
    summary = json.loads((audit_cfg.root / "audit.json").read_text(encoding="utf-8"))
    # the audit's validity warnings (base rate, letter bias, no significant layer) concern
    # every number it measured at that layer: none of its verdicts goes without them
    for key, verdict in found.items():
        if key != "size":
            verdict.carrying([str(w) for w in summary.get("warnings", [])])
    result = ModelResult(name, summary.get("params"), summary.get("layer"),
                         float(summary["strength"]), found, dict(summary.get("seconds", {})))
    spent = audit_cfg.root / "reproduce.json"  # seconds over every run, as audit.json keeps
    before = earlier_seconds(spent)
    started = time.perf_counter()
    result.verdicts["actadd"] = _actadd(cfg, name, audit_cfg.root / "actadd")
    result.seconds["actadd"] = round(before.get("actadd", 0.0)
                                     + time.perf_counter() - started, 1)
    started = time.perf_counter()
    result.verdicts["caa"] = _caa(cfg, audit_cfg, result)
    result.seconds["caa"] = round(before.get("caa", 0.0) + time.perf_counter() - started, 1)
    write_json(spent, {"seconds": {k: result.seconds[k] for k in ("actadd", "caa")}},
               what="reproduce seconds")
    _write_verdicts(audit_cfg.root, result)
    return result


def _own_verdicts(result: ModelResult) -> list[dict[str, Any]]:
    """The model's own verdicts as saved (size is judged across the models, in OUT)."""
    return [v.as_dict() for k, v in result.verdicts.items() if k != "size"]


def _write_verdicts(model_dir: Path, result: ModelResult) -> None:
    write_json(model_dir / "verdicts.json", _own_verdicts(result), what="verdicts")


def _actadd(cfg: ReproduceConfig, model: str, out: Path) -> rules.Verdict:
    """ActAdd's row: front positions, negative and neutral prompts, the learned classifier
    (VADER beside it), judged on the negative prompts (the paper's negative → positive) by
    :data:`~steerlab.eval.verdicts.SENTIMENT_RULE`: the shift must survive masking the steering
    words and the text must stay fluent; the neutral prompts' verdict is carried beside it."""
    from steerlab.eval.protocols.sentiment import reproduce_config
    from steerlab.eval.protocols.sentiment import run as sentiment
    from steerlab.eval.protocols.sentiment_scores import judge_run

    sentiment(reproduce_config(out, model, cfg.actadd_pair, str(ACTADD_DEPTH),
                               ACTADD_COEFFICIENT, limit=cfg.sentiment_limit, seed=cfg.seed))
    verdict = judge_run(out, "negative", ACTADD_COEFFICIENT)
    neutral = judge_run(out, "neutral", ACTADD_COEFFICIENT)
    verdict.numbers["neutral"] = {"verdict": neutral.verdict, "reason": neutral.reason,
                                  **neutral.numbers}
    verdict.reason = f"negative prompts: {verdict.reason}; neutral prompts: {neutral.verdict}"
    verdict.warnings = list(dict.fromkeys([*verdict.warnings, *neutral.warnings]))
    return verdict


def _caa(cfg: ReproduceConfig, audit_cfg: AuditConfig, result: ModelResult) -> rules.Verdict:
    """CAA's row: its own protocol (:func:`caa_check`) at the audit's layer, judged on its own
    letter score, with the audit's open-answer effect beside it."""
    from steerlab.data.loaders import load_dataset

    open_effect, open_what = _open_effect(audit_cfg.root / "sweep", result.layer)
    missing = ("the audit's sweep left no layer to steer at" if result.layer is None else
               f"{cfg.data} has no A/B items: CAA's letter score does not apply"
               if load_dataset(cfg.data, split="test", seed=cfg.seed).kind != "ab" else None)
    if missing or result.layer is None:
        verdict = rules.judge_caa(None, {}, what="p(matching letter)", open_effect=open_effect,
                                  open_what=open_what)
        verdict.reason = missing or verdict.reason
        return verdict
    found = caa_check(result.model, cfg.data, result.layer, audit_cfg.root / "caa",
                      limit=cfg.caa_limit, train_limit=cfg.caa_train_limit, seed=cfg.seed,
                      batch_size=audit_cfg.batch_size)
    return found.verdict(open_effect, open_what)


def _open_effect(sweep_dir: Path, layer: int | None) -> tuple[tuple[float, float, float] | None,
                                                                str]:
    """The audit's own test-split effect at its layer (its format, usually open answers)."""
    record = None
    if layer is not None and (sweep_dir / "results.jsonl").is_file():
        for r in read_results(sweep_dir / "results.jsonl").records:
            if r.get("metric") == "effect" and r.get("split") == "test" and r.get(
                    "layer") == layer:
                record = r
    if record is None or record.get("ci_low") is None:
        return None, "the audit's test effect (not measured)"
    form = "open-answer" if str(record.get("data", "")).endswith("/open") else "A/B"
    extra = record.get("extra") or {}
    unit = str(extra.get("unit", "strength"))
    low, high = extra.get("low_value"), extra.get("high_value")
    what = f"the audit's {form} effect"
    if isinstance(low, float | int) and isinstance(high, float | int):
        what += f", {unit} {high:g} vs {low:g}, {record.get('n')} test items"
    return (float(record["value"]), float(record["ci_low"]), float(record["ci_high"])), what


def caa_check(model: str, data: str, layer: int, out: str | Path, *,
              multipliers: Sequence[float] = CAA_MULTIPLIERS, limit: int = 0,
              train_limit: int = 0, seed: int = 0, batch_size: int = 16) -> CAAResult:
    """CAA by its own protocol on ``model`` at ``layer`` (Rimsky et al. 2023), into ``out``.

    The vector is the mean difference of the residual stream (block output) at the answer
    letter: each train item's A/B prompt, chat-formatted, with the matching and then the other
    letter appended, read at that letter (the whole train split, or ``train_limit`` pairs). It
    is added at raw ``multipliers`` from the end of the instruction on (``after_instruction``)
    while every test item (or ``limit`` of them) is scored by p(matching letter) / (p(A) +
    p(B)) at the answer position, with p(A) + p(B) beside it. Resumes: a rerun with the same
    settings reads the stored cell; other settings are refused by name.

    Example:
        >>> r = caa_check("smollm2-135m", "caa:refusal", 12, "runs/caa")     # doctest: +SKIP
        >>> r.letter_mass[0.0][0], r.verdict().verdict                      # doctest: +SKIP
        (0.63, 'not measurable')
    """
    from steerlab.data.loaders import load_dataset
    from steerlab.eval.protocols.prompting_inputs import item_id
    from steerlab.eval.run import EvalRun
    from steerlab.scoring.ab import ab_items

    values = sorted({float(m) for m in multipliers})
    if len(values) < 2:
        raise SteerlabError(f"CAA multipliers: at least two, got {list(multipliers)}")
    test = load_dataset(data, split="test", seed=seed)
    if test.kind != "ab":
        raise SteerlabError(f"{data}: CAA's letter score needs A/B items")
    items = ab_items(test.subset(limit, seed) if limit else test, "CAA")
    ids = [item_id(i) for i in items]
    answers = [i.matching.strip().upper() for i in items]
    lettered = bool(answers) and all(a.startswith("(") for a in answers)
    share = sum(a.startswith("(A") for a in answers) / len(answers) if lettered else None
    pair = ("A", "B") if lettered else answer_pair(items)
    settings = {"model": model, "data": data, "layer": layer, "multipliers": values,
                "positions": CAA_POSITIONS, "method": "mean_diff", "limit": limit,
                "train_limit": train_limit, "seed": seed, "data_sha256": test.sha256[:16]}
    run = EvalRun(out, "caa", settings)
    cell = cell_id("caa", model=model, data=data, layer=layer, positions=CAA_POSITIONS,
                   values=",".join(f"{v:g}" for v in values), limit=limit,
                   train_limit=train_limit, seed=seed)
    if run.todo([cell]):
        run.add(cell, caa_records(run, model, data, layer, values, items, ids, train_limit,
                                  seed, batch_size))
    found = CAAResult(model, data, layer, values, {}, {}, {}, None, ids, len(test), 0, 0,
                      "answer_token", share, True, None, pair).read(run.records())
    print_caa(found)
    return found
