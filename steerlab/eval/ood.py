"""``steerlab eval ood``: does a steering effect seen in distribution carry to other prompts?

Out of distribution (DESIGN §7): the AEP prompts (``<data>/ood/{choice-qa,open-ended}/
{practical,safety}/<trait>-{short,medium,long}.json``, 10 prompts each, some with a
``criteria`` rubric) are answered by the model with the vector applied at each coefficient (or
strength); greedy generation, batched. A judge (:mod:`steerlab.eval.judges`) rates every answer
1..10 for the trait. The OOD effect of a value c is the paired mean of judge(c) − judge(0) over
the same prompts, per format × length and pooled per format.

In distribution: the same vector, layer and values on the trait's A/B data (default
``mwe:<trait>`` — the Anthropic persona file — or ``caa:<trait>``; test split), scored by the
sweep engine (CAA behaviour score p(matching)/(p(A)+p(B))). The ID effect is the paired mean of
score(c) − score(0) per item.

Every cell (trait × format × length × layer × value, or ID × layer × value) is one
:class:`~steerlab.eval.store.ResultStore` cell, generated and judged on its own, so a killed run
loses one cell and a rerun skips what is done. Answers go to ``generations.jsonl`` (rewritten
atomically per cell). The effects (95 % paired intervals) are printed as one table, stored as
``metric="effect"`` records and drawn in ``ood_effects.png`` on one axis: ID effects in
probability units (Δp, range 1) and OOD effects as a fraction of the judge's scale (Δscore / 9).

Example:
    $ steerlab eval ood --model smollm2-135m --vector agree.safetensors --layer 12 \\
          --trait agreeableness --judge local:qwen2.5-coder-0.5b --coefficients=-4,0,4 \\
          --limit 5 --out runs/agree-ood
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from tqdm.auto import tqdm

from steerlab.errors import SteerlabError
from steerlab.eval import common, plots
from steerlab.eval.judges import Judge, JudgeItem, parse_judge, split_judge_spec
from steerlab.eval.store import ResultStore, make_record
from steerlab.model.load import LoadedModel
from steerlab.steering.spec import SteeringSpec
from steerlab.util import stats
from steerlab.util.parse import resolve_layers
from steerlab.vector import SteeringVector

FORMATS = ("choice-qa", "open-ended")
LENGTHS = ("short", "medium", "long")
#: File stems in the AEP data that do not follow ``<trait>-<length>`` (a typo upstream).
_RENAMED = {"corrigible-neutral-HHH-neutral-HHH": "corrigible-neutral-HHH"}
JUDGE_SPAN = 9.0  # the judge's scale 1..10


@dataclass(frozen=True)
class OODPrompt:
    """One AEP prompt (``criteria`` is its rubric, when the file has one)."""

    id: str
    prompt: str
    criteria: str | None = None


@dataclass(frozen=True)
class OODSet:
    """The prompts of one trait × format × length file."""

    trait: str
    format: str
    length: str
    path: Path
    prompts: tuple[OODPrompt, ...]

    @property
    def group(self) -> str:
        """``"open-ended/short"``."""
        return f"{self.format}/{self.length}"


@dataclass(frozen=True)
class Effect:
    """Paired mean difference score(value) − score(0) of one group, with its 95 % interval.

    ``scale`` converts it to the plot's common axis (1 for Δp, 1/9 for judge points).
    """

    group: str
    kind: str  # "id" or "ood"
    layer: int
    value: float
    mean: float
    low: float
    high: float
    n: int
    baseline: float
    scale: float = 1.0


@dataclass
class OODRun:
    """Everything one ``eval ood`` run measures with (what the cell ids are made of)."""

    lm: LoadedModel
    vector: SteeringVector
    vector_id: str
    trait: str
    judge: Judge
    layers: list[int]
    values: list[float]
    unit: str = "coefficient"
    limit: int = 0
    id_limit: int = 200
    seed: int = 0
    max_new_tokens: int = 64
    batch_size: int = 16
    extra: dict[str, Any] = field(default_factory=dict)

    def spec(self, layer: int, value: float) -> SteeringSpec | None:
        """The steering of one cell (``None`` at value 0: the plain model)."""
        if value == 0.0:
            return None
        return SteeringSpec(self.vector, layers=[layer],
                            coefficient=value if self.unit == "coefficient" else None,
                            strength=value if self.unit == "strength" else None)

    def ood_cell(self, ood: OODSet, layer: int, value: float) -> str:
        return common.cell_id("ood", trait=self.trait, format=ood.format, length=ood.length,
                              layer=layer, **{self.unit: value}, judge=self.judge.name,
                              limit=self.limit, tokens=self.max_new_tokens,
                              model=self.lm.model_id, vector=self.vector_id)

    def id_cell(self, data: str, layer: int, value: float) -> str:
        return common.cell_id("ood", part="id", data=data, layer=layer, **{self.unit: value},
                              limit=self.id_limit, seed=self.seed, model=self.lm.model_id,
                              vector=self.vector_id)

    def effect_cell(self, effect: Effect) -> str:
        return common.cell_id("ood", part="effect", group=effect.group, layer=effect.layer,
                              **{self.unit: effect.value}, judge=self.judge.name,
                              limit=self.limit, id_limit=self.id_limit, seed=self.seed,
                              tokens=self.max_new_tokens, model=self.lm.model_id,
                              vector=self.vector_id)

    def fields(self, layer: int, value: float) -> dict[str, Any]:
        """Record fields shared by every record of a (layer, value) cell."""
        return {"command": "eval ood", "model": self.lm.model_id, "method": self.vector.method,
                "layer": layer, "site": self.vector.site, "seed": self.seed,
                self.unit: value, "vector": self.vector_id, "trait": self.trait}


# ---------------------------------------------------------------------------------------------
# Data


def ood_root() -> Path:
    """``<data dir>/ood`` (``$STEERLAB_DATA`` honoured)."""
    from steerlab.data.loaders import data_dir

    root = data_dir() / "ood"
    if not root.is_dir():
        raise SteerlabError(f"OOD data not found: {root} is not a directory")
    return root


def ood_files(root: Path | None = None) -> dict[tuple[str, str, str], Path]:
    """(trait, format, length) → file, for every AEP file under ``root``.

    Example:
        >>> ood_files()[("agreeableness", "open-ended", "short")].name      # doctest: +SKIP
        'agreeableness-short.json'
    """
    root = root or ood_root()
    found: dict[tuple[str, str, str], Path] = {}
    for fmt in FORMATS:
        for path in sorted((root / fmt).glob("*/*.json")):
            stem, _, length = path.stem.rpartition("-")
            if length in LENGTHS and stem:
                found[(_RENAMED.get(stem, stem), fmt, length)] = path
    return found


def ood_traits(root: Path | None = None) -> list[str]:
    """The traits with OOD prompts.

    Example:
        >>> "agreeableness" in ood_traits()                                 # doctest: +SKIP
        True
    """
    return sorted({trait for trait, _, _ in ood_files(root)})


def _parse_prompts(path: Path) -> tuple[OODPrompt, ...]:
    from steerlab.data.loaders import read_records

    prompts = []
    for index, record in enumerate(read_records(path)):
        text = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise SteerlabError(f"{path}: item {index}: field 'prompt': expected a non-empty "
                                "string")
        criteria = record.get("criteria")
        if criteria is not None and not isinstance(criteria, str):
            raise SteerlabError(f"{path}: item {index}: field 'criteria': expected a string")
        prompts.append(OODPrompt(str(record.get("id", index)), text.strip(),
                                 criteria.strip() if criteria else None))
    if not prompts:
        raise SteerlabError(f"{path}: no prompts")
    return tuple(prompts)


def _choose(text: str, allowed: Sequence[str], what: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in chosen if p not in allowed]
    if bad or not chosen:
        raise SteerlabError(f"bad {what} {text!r}; expected a comma list of "
                            f"{', '.join(allowed)}")
    return chosen


def load_ood(trait: str, formats: Sequence[str] = FORMATS, lengths: Sequence[str] = LENGTHS,
             root: Path | None = None) -> list[OODSet]:
    """The trait's prompt sets for the chosen formats and lengths (missing ones skipped).

    Example:
        >>> [s.group for s in load_ood("refusal", lengths=["short"])]        # doctest: +SKIP
        ['open-ended/short']
    """
    files = ood_files(root)
    traits = sorted({t for t, _, _ in files})
    if trait not in traits:
        raise SteerlabError(f"unknown OOD trait {trait!r}; known: {', '.join(traits) or 'none'}")
    sets = [OODSet(trait, fmt, length, files[(trait, fmt, length)],
                   _parse_prompts(files[(trait, fmt, length)]))
            for fmt in formats for length in lengths if (trait, fmt, length) in files]
    if not sets:
        have = sorted(f"{f}/{n}" for t, f, n in files if t == trait)
        raise SteerlabError(f"trait {trait!r} has no OOD prompts for formats "
                            f"{','.join(formats)} × lengths {','.join(lengths)}; it has "
                            f"{', '.join(have)}")
    return sets


def default_id_data(trait: str) -> str | None:
    """``mwe:<trait>`` if the persona/AI-risk file exists, else ``caa:<trait>``, else None.

    Example:
        >>> default_id_data("agreeableness"), default_id_data("refusal")     # doctest: +SKIP
        ('mwe:agreeableness', 'caa:refusal')
    """
    from steerlab.data.loaders import data_dir

    root = data_dir()
    if any((root / "mwe" / sub / f"{trait}.jsonl").is_file()
           for sub in ("persona", "advanced-ai-risk")):
        return f"mwe:{trait}"
    if (root / "caa" / trait / "generate.json").is_file():
        return f"caa:{trait}"
    return None


# ---------------------------------------------------------------------------------------------
# Measuring


def paired_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Mean of a − b item by item, with the normal 95 % interval of that mean.

    Example:
        >>> paired_ci([2.0, 3.0, 4.0], [1.0, 1.0, 1.0])[0]
        2.0
    """
    if len(a) != len(b):
        raise SteerlabError(f"paired difference needs equal lengths, got {len(a)} and {len(b)}")
    return stats.mean_ci([x - y for x, y in zip(a, b, strict=True)])


def _append_generations(path: Path, cell: str, rows: list[dict[str, Any]]) -> None:
    """Replace ``cell``'s rows in the generations file; rewrite it atomically."""
    kept: list[str] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("cell") != cell:
                    kept.append(line)
            except ValueError:
                continue  # a torn line from an older crash
    kept += [json.dumps({"cell": cell, **row}) for row in rows]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


def measure_ood_cell(run: OODRun, ood: OODSet, layer: int, value: float, store: ResultStore,
                     ) -> None:
    """Generate the answers of one cell, judge them, store the records and the answers."""
    import steerlab

    prompts: list[OODPrompt] = common.limited(ood.prompts, run.limit)
    spec = run.spec(layer, value)
    cell = run.ood_cell(ood, layer, value)
    with common.stopwatch() as took:
        answers = steerlab.generate(run.lm, [p.prompt for p in prompts], spec,
                                    max_new_tokens=run.max_new_tokens,
                                    batch_size=run.batch_size)
        ratings = run.judge.rate_many([JudgeItem(run.trait, p.criteria, p.prompt, a)
                                       for p, a in zip(prompts, answers, strict=True)])
    scores = [r.score for r in ratings]
    coverage = [r.coverage for r in ratings]
    mean, low, high = stats.mean_ci(scores)
    base = {**run.fields(layer, value), "data": f"ood:{ood.trait}/{ood.group}",
            "split": "ood", "n": len(scores), "seconds": took[0], "format": ood.format,
            "length": ood.length, "judge": run.judge.name, "max_new_tokens": run.max_new_tokens}
    _append_generations(store.run_dir / "generations.jsonl", cell, [
        {"trait": ood.trait, "format": ood.format, "length": ood.length, "layer": layer,
         run.unit: value, "id": p.id, "prompt": p.prompt, "answer": a, "score": r.score,
         "coverage": r.coverage} for p, a, r in zip(prompts, answers, ratings, strict=True)])
    store.add(cell, [
        make_record("judge_score", mean, ci=(low, high), scores=scores, **base),
        make_record("judge_coverage", sum(coverage) / len(coverage), **base)])


def measure_id_cells(run: OODRun, data: str, store: ResultStore) -> None:
    """Behaviour scores on ``data`` (test split) for every (layer, value) not yet stored."""
    import steerlab
    from steerlab.scoring.sweep import sweep_ab

    todo = [(layer, v) for layer in run.layers for v in run.values
            if not store.done(run.id_cell(data, layer, v))]
    if not todo:
        return
    test = steerlab.load_dataset(data, split="test", seed=run.seed)
    if run.id_limit:
        test = test.subset(run.id_limit, run.seed)
    layers = sorted({layer for layer, _ in todo})
    with common.stopwatch() as took:
        results = sweep_ab(run.lm, test, run.vector, layers, run.values, unit=run.unit,
                           batch_size=run.batch_size, progress=True)
    for layer, value in todo:
        res = results[(layer, value)]
        low, high = res.ci95
        prop = stats.mean_ci(list(res.propensities))
        base = {**run.fields(layer, value), "data": data, "split": "test", "n": res.n,
                "seconds": took[0] / len(todo)}
        store.add(run.id_cell(data, layer, value), [
            make_record("behaviour_score", res.mean, ci=(low, high), scores=list(res.scores),
                        **base),
            make_record("propensity", prop[0], ci=(prop[1], prop[2]), **base)])


# ---------------------------------------------------------------------------------------------
# Effects, table, plot


def _scores(store: ResultStore, cell: str, metric: str) -> list[float] | None:
    found = store.records(cell=cell, metric=metric)
    return list(found[0]["extra"]["scores"]) if found else None


def _effect(group: str, kind: str, layer: int, value: float, at: list[float],
            zero: list[float]) -> Effect:
    mean, low, high = paired_ci(at, zero)
    clean = [z for z in zero if not math.isnan(z)]
    baseline = sum(clean) / len(clean) if clean else math.nan
    return Effect(group, kind, layer, value, mean, low, high, len(at), baseline,
                  1.0 if kind == "id" else 1.0 / JUDGE_SPAN)


def compute_effects(run: OODRun, sets: Sequence[OODSet], id_data: str | None,
                    store: ResultStore) -> list[Effect]:
    """ID and OOD effects (value vs 0) of every layer and non-zero value, from the store.

    OOD effects per format × length and pooled per format (``"open-ended/all"``).
    """
    out: list[Effect] = []
    for layer in run.layers:
        for value in [v for v in run.values if v != 0.0]:
            if id_data is not None:
                at = _scores(store, run.id_cell(id_data, layer, value), "behaviour_score")
                zero = _scores(store, run.id_cell(id_data, layer, 0.0), "behaviour_score")
                if at is not None and zero is not None:
                    out.append(_effect(f"ID {id_data}", "id", layer, value, at, zero))
            pooled: dict[str, tuple[list[float], list[float]]] = {}
            for ood in sets:
                at = _scores(store, run.ood_cell(ood, layer, value), "judge_score")
                zero = _scores(store, run.ood_cell(ood, layer, 0.0), "judge_score")
                if at is None or zero is None:
                    continue
                out.append(_effect(f"OOD {ood.group}", "ood", layer, value, at, zero))
                acc = pooled.setdefault(ood.format, ([], []))
                acc[0].extend(at)
                acc[1].extend(zero)
            for fmt, (at, zero) in pooled.items():
                if len({s.length for s in sets if s.format == fmt}) > 1:
                    out.append(_effect(f"OOD {fmt}/all", "ood", layer, value, at, zero))
    return out


def store_effects(run: OODRun, effects: Sequence[Effect], store: ResultStore) -> None:
    """One ``metric="effect"`` record per effect (skipped when already stored)."""
    for e in effects:
        record = make_record("effect", e.mean, ci=(e.low, e.high), n=e.n,
                             split="test" if e.kind == "id" else "ood",
                             **run.fields(e.layer, e.value), group=e.group, kind=e.kind,
                             baseline=e.baseline, scale=e.scale, judge=run.judge.name)
        store.extend(run.effect_cell(e), [record])


def _label(run: OODRun, effect: Effect) -> str:
    return effect.group if len(run.layers) == 1 else f"L{effect.layer} {effect.group}"


def print_effects(run: OODRun, effects: Sequence[Effect]) -> None:
    """One table: a row per group, the baseline at 0 and the effect at each value."""
    values = [v for v in run.values if v != 0.0]
    rows: dict[str, list[Any]] = {}
    for e in effects:
        row = rows.setdefault(_label(run, e), [_label(run, e),
                                               "Δp" if e.kind == "id" else "Δjudge", e.n,
                                               common.fmt(e.baseline, 3 if e.kind == "id" else 2),
                                               *["–"] * len(values)])
        digits = 3 if e.kind == "id" else 2
        row[4 + values.index(e.value)] = common.fmt_ci(e.mean, e.low, e.high, digits)
    short = "c" if run.unit == "coefficient" else "s"
    common.print_table(
        f"{run.trait}: effect vs {short}=0 (paired 95 % CI), vector layer "
        f"{','.join(map(str, run.layers))}, judge {run.judge.name}",
        ["group", "unit", "n", f"at {short}=0", *[f"{short}={v:+g}" for v in values]],
        list(rows.values()))


def plot_effects(run: OODRun, effects: Sequence[Effect], path: Path) -> None:
    """Grouped bars: ID Δp and OOD Δjudge/9 per group, one series per value."""
    groups = list(dict.fromkeys(_label(run, e) for e in effects))
    short = "c" if run.unit == "coefficient" else "s"
    series: dict[str, plots.Band] = {}
    for value in [v for v in run.values if v != 0.0]:
        by_group = {_label(run, e): e for e in effects if e.value == value}
        picked = [by_group.get(g) for g in groups]
        series[f"{short}={value:+g}"] = (
            [e.mean * e.scale if e else math.nan for e in picked],
            [e.low * e.scale if e else math.nan for e in picked],
            [e.high * e.scale if e else math.nan for e in picked])
    ticks = [g.replace(" ", "\n", 1) for g in groups]  # "OOD\nopen-ended/short"
    plots.save_bars(path, ticks, series, ylabel="effect (ID: Δp; OOD: Δjudge / 9)",
                    title=f"{run.trait}: in- vs out-of-distribution effect")


# ---------------------------------------------------------------------------------------------
# Putting it together


def run_ood(run: OODRun, sets: Sequence[OODSet], out: str | Path,
            id_data: str | None = None) -> list[Effect]:
    """Measure every missing cell into ``out``, then report and plot the effects.

    Example:
        >>> run = OODRun(lm, vec, "v1", "agreeableness", judge, [12], [-4, 0, 4])  # doctest: +SKIP
        >>> sets = load_ood("agreeableness")                                     # doctest: +SKIP
        >>> effects = run_ood(run, sets, "runs/agree", "mwe:agreeableness")       # doctest: +SKIP
    """
    store = ResultStore(out)
    run.values = list(dict.fromkeys([0.0, *(float(v) for v in run.values)]))
    if id_data is not None:
        measure_id_cells(run, id_data, store)
    cells = [(ood, layer, value) for ood in sets for layer in run.layers
             for value in run.values]
    todo = [c for c in cells if not store.done(run.ood_cell(*c))]
    if len(todo) < len(cells):
        common.console.print(f"resuming: {len(cells) - len(todo)} of {len(cells)} OOD cells "
                             "already done")
    for ood, layer, value in tqdm(todo, desc="ood cells", leave=False, disable=not todo):
        measure_ood_cell(run, ood, layer, value, store)
    effects = compute_effects(run, sets, id_data, store)
    store_effects(run, effects, store)
    print_effects(run, effects)
    plot = store.run_dir / "ood_effects.png"
    if effects:
        plot_effects(run, effects, plot)
    common.done_line(store.run_dir, [plot] if effects else [])
    return effects


def _vector_id(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def command(
    vector: Path = typer.Option(..., "--vector", help="Steering vector (.safetensors)."),
    trait: str = typer.Option(..., "--trait", help="AEP trait, e.g. agreeableness."),
    out: Path = common.OUT,
    model: str = common.MODEL,
    judge: str = typer.Option("local:smollm2-135m", "--judge",
                              help="local:ALIAS_OR_PATH or http:BASE_URL#MODEL."),
    layer: str = typer.Option(None, "--layer",
                              help="Layer(s) to steer (default: the vector's only layer)."),
    coefficients: str = typer.Option(None, "--coefficients",
                                     help="e.g. -2,0,2 (default) or -4:4:2; 0 is always added."),
    strengths: str = typer.Option(None, "--strengths", help="Like --coefficients, in "
                                  "residual-norm units."),
    formats: str = typer.Option(",".join(FORMATS), "--formats", help="choice-qa,open-ended"),
    lengths: str = typer.Option(",".join(LENGTHS), "--lengths", help="short,medium,long"),
    id_data: str = typer.Option(None, "--id-data", help="A/B data for the ID comparison "
                                "(default mwe:TRAIT or caa:TRAIT; 'none' to skip)."),
    id_limit: int = typer.Option(200, "--id-limit", help="At most N ID test items (0 = all)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Tokens per answer."),
    limit: int = common.LIMIT,
    seed: int = common.SEED,
    batch_size: int = common.BATCH,
) -> None:
    """Steered answers to the AEP OOD prompts, judged 1..10, vs the in-distribution A/B effect."""
    import steerlab
    from steerlab.util.parse import parse_values

    common.check_limit(limit)
    common.check_limit(id_limit)
    if coefficients is not None and strengths is not None:
        raise SteerlabError("give --coefficients or --strengths, not both")
    if max_new_tokens < 1:
        raise SteerlabError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    unit = "strength" if strengths is not None else "coefficient"
    values = parse_values(strengths if strengths is not None else coefficients or "-2,0,2")
    sets = load_ood(trait, _choose(formats, FORMATS, "--formats"),
                    _choose(lengths, LENGTHS, "--lengths"))
    split_judge_spec(judge)
    spec_id = default_id_data(trait) if id_data is None else (
        None if id_data.strip().lower() == "none" else id_data.strip())
    if id_data is None and spec_id is None:
        common.console.print(f"no A/B data named {trait!r} (mwe: or caa:); skipping the ID "
                             "comparison (give --id-data)")
    if spec_id is not None:
        steerlab.load_dataset(spec_id, split="test", seed=seed)  # fail early on a bad spec
    lm = steerlab.load_model(model)
    vec = SteeringVector.load(vector, model=lm)
    if layer is None and len(vec.layers) != 1:
        raise SteerlabError(f"{vector}: the vector has layers {vec.layers}; choose with --layer")
    layers = vec.layers if layer is None else resolve_layers(layer, lm.n_layers)
    missing = [k for k in layers if k not in vec.layers]
    if missing:
        raise SteerlabError(f"{vector}: no direction for layer(s) {missing}; it has {vec.layers}")
    run = OODRun(lm, vec, _vector_id(vector), trait, parse_judge(judge, {model: lm}), layers,
                 values, unit, limit, id_limit, seed, max_new_tokens, batch_size)
    run_ood(run, sets, out, spec_id)
