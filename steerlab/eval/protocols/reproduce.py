"""``steerlab reproduce``: the seeds' findings on several models, one table.

Per model (``--out/<model>/``): the :mod:`audit <steerlab.eval.protocols.audit>` of one
behaviour (the five findings; the size finding is judged once across all models from each
model's perplexity ratio at the same strength), plus two seed results —

* ``actadd/``: ActAdd's Love−Hate prompt-pair vector at 20 % depth, applied at the front
  positions, shifting the VADER sentiment of completions of neutral prompts (coefficient 5 vs
  0, paired per prompt). The pair is ``" love"``/``" hate"``: with the leading space each is
  one token on SmolLM2 (where ``"Hate"`` splits into ``"H"`` + ``"ate"``), so the two prompts
  line up token for token, as ActAdd needs;
* ``caa_ab/``: CAA's A/B behaviour score at −s / 0 / +s at the audit's layer with the audit's
  vector (A/B format, test split).

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
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval import verdicts as rules
from steerlab.eval.protocols.audit import AuditConfig
from steerlab.eval.store import read_results
from steerlab.eval.tables import console, print_table
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
    sentiment_limit: int = 20
    results: Path | None = Path("docs/RESULTS.md")
    seed: int = 0
    remeasure: bool = False  # measure every model again even where its row is kept
    actadd_pair: tuple[str, str] = ACTADD_PAIR  # must line up token for token on every model

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
                     actadd_depth=ACTADD_DEPTH, actadd_coefficient=ACTADD_COEFFICIENT)
        normal: dict[str, Any] = json.loads(json.dumps(audit, default=str))
        return normal


@dataclass
class ModelResult:
    """One model's verdicts and what they cost."""

    model: str
    params: int | None
    layer: int | None
    strength: float
    verdicts: dict[str, rules.Verdict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    measured: str = ""  # when and where: "2026-12-03, 2 CPUs x86_64 AVX2, steerlab 0.1.0"


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
    _print(results)
    if cfg.results is not None:
        atomic_write(cfg.results, markdown(results, cfg), what="results table")
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
    result = ModelResult(name, summary.get("params"), summary.get("layer"),
                         float(summary["strength"]), found, dict(summary.get("seconds", {})))
    spent = audit_cfg.root / "reproduce.json"  # seconds over every run, as audit.json keeps
    before = earlier_seconds(spent, {"caa": "caa_ab"})
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
    from steerlab.eval.protocols.sentiment import SentimentConfig
    from steerlab.eval.protocols.sentiment import run as sentiment

    sentiment(SentimentConfig(out=out, layers=str(ACTADD_DEPTH), unit="coefficient",
                              values=(0.0, ACTADD_COEFFICIENT), pair=cfg.actadd_pair, model=model,
                              prompt_sets=("neutral",), max_new_tokens=24,
                              limit=cfg.sentiment_limit, seed=cfg.seed))
    shift = _last(out, "shift", coefficient=ACTADD_COEFFICIENT)
    return rules.judge_shift("actadd", shift, f"VADER compound at coefficient "
                                               f"{ACTADD_COEFFICIENT:g} vs 0")


def _caa(cfg: ReproduceConfig, audit_cfg: AuditConfig, result: ModelResult) -> rules.Verdict:
    from steerlab.eval.protocols.sweep import SweepConfig
    from steerlab.eval.protocols.sweep import run as sweep

    vector = audit_cfg.root / "sweep" / "vector.safetensors"
    if result.layer is None or not vector.is_file():
        return rules.Verdict("caa", rules.UNSURE, "the audit's sweep left no layer or vector")
    s = result.strength
    out = audit_cfg.root / "caa_ab"
    sweep(SweepConfig(out=out, data=cfg.data, unit="strength", values=[-s, 0.0, s],
                      model=result.model, layers=str(result.layer), vector=vector, form="ab",
                      limit=audit_cfg.limit, seed=cfg.seed, batch_size=audit_cfg.batch_size))
    effect = _last(out, "effect", split="test", layer=result.layer)
    return rules.judge_shift("caa", effect, f"A/B behaviour score at {s:+g} vs {-s:+g}")


def _last(run_dir: Path, metric: str, **match: Any) -> tuple[float, float, float] | None:
    """The last record of ``metric`` matching ``match`` as (value, low, high)."""
    found = None
    for record in read_results(run_dir / "results.jsonl").records:
        if record.get("metric") == metric and all(record.get(k) == v for k, v in match.items()):
            found = record
    if found is None or found.get("ci_low") is None:
        return None
    return float(found["value"]), float(found["ci_low"]), float(found["ci_high"])




ORDER = (*rules.FINDINGS, *rules.REPLICATIONS)


def _print(results: Sequence[ModelResult]) -> None:
    rows = [[rules.Verdict(k, "", "").title,
             *(r.verdicts[k].verdict if k in r.verdicts else "–" for r in results)]
            for k in ORDER]
    print_table("reproduce: verdicts by model", ["finding", *(r.model for r in results)], rows)


def markdown(results: Sequence[ModelResult], cfg: ReproduceConfig) -> str:
    """``docs/RESULTS.md``: the finding × model verdicts, the numbers, sizes and wall times.

    Example:
        >>> r = ModelResult("m", 135_000_000, 12, 0.4, {"perplexity": rules.judge_perplexity(
        ...     (1.05, 1.01, 1.1), 0.4)}, {"sweep": 60.0})
        >>> "| Steering costs perplexity | **holds**" in markdown([r], ReproduceConfig("x"))
        True
    """
    audit = cfg.audit_for(results[0].model) if results else None
    lines = ["# Results: the seeds' findings on small models", "",
             f"Written by `steerlab reproduce` (behaviour `{cfg.data}`; rerun it to refresh). "
             "Each verdict comes from a rule written in `steerlab/eval/verdicts.py` (README, "
             "\"audit\"): *holds*, *does not hold* or *inconclusive* when the 95 % intervals do "
             "not decide. Numbers: value [95 % interval].", "",
             "| finding | " + " | ".join(r.model for r in results) + " |",
             "|---|" + "---|" * len(results)]
    for key in ORDER:
        cells = []
        for r in results:
            v = r.verdicts.get(key)
            cells.append("–" if v is None else f"**{v.verdict}**: {_escape(v.reason)}")
        lines.append(f"| {rules.Verdict(key, '', '').title} | " + " | ".join(cells) + " |")
    lines += ["", "## Per model", "",
              "| model | parameters | layer | strength | wall time | per study (s) | measured |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        params = f"{r.params / 1e6:.0f} M" if r.params else "?"
        total = sum(r.seconds.values())
        per = ", ".join(f"{k} {v:.0f}" for k, v in r.seconds.items())
        lines.append(f"| {r.model} | {params} | {r.layer} | {r.strength:g} | "
                     f"{total / 60:.1f} min | {per} | {r.measured or '?'} |")
    if audit is not None:
        lines += ["", "## Sizes (the same for every model)", "",
                  f"- sweep: depths 0.3-0.7 × strengths "
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
                  f"- ActAdd: \"{cfg.actadd_pair[0]}\"−\"{cfg.actadd_pair[1]}\" at depth "
                  f"{ACTADD_DEPTH:g}, coefficient {ACTADD_COEFFICIENT:g}, front positions, "
                  f"{cfg.sentiment_limit} neutral prompts, 24 new tokens",
                  "- CAA: the audit's vector and layer, A/B format, test split"]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")
