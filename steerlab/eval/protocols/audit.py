"""``steerlab audit``: the CAE paper's five findings for one behaviour (and vector), one command.

Each study runs into its own sub-directory of ``--out`` at sizes that finish in about a quarter
of an hour for SmolLM2-135M on two CPU cores (every size is a flag; :func:`plan` prints them):

1. ``sweep/`` — layer × strength on val, the chosen layer scored on test (the vector is
   extracted from the train split unless given). The chosen layer and the largest positive
   strength ``s`` are what every later study steers with.
2. ``samples/`` — the effect and cosine vs the number of contrast pairs (plateau).
3. ``ood/`` — ID (the ``--limit`` test items, the audit's answer format) vs OOD (AEP prompts for
   the behaviour, judged) effect at ``s``.
4. ``adversarial/`` — suffix search that reverses the steering vs random suffixes, and the
   suffixes' cross-entropy vs natural text.
5. ``perplexity/`` — WikiText-2 perplexity ratio steered / unsteered at ``s``.
6. ``prompting/`` — steering against prompting (``eval prompting``): on the same ``--limit``
   test items, the vector at the chosen layer and ``s`` vs the behaviour asked for by
   instruction (system prompt, user-turn prefix, few-shot train examples) vs both, with each
   one's fluency cost; the verdict says which wins.
7. ``size/`` (with ``--models``) — the same behaviour on each model (``eval models``) and the
   perplexity ratio of each model's own vector at its chosen depth, at ``s``.

Then ``verdicts.json`` (one :class:`~steerlab.eval.verdicts.Verdict` per finding, from the rules
written in :mod:`steerlab.eval.verdicts`, with the numbers behind it and validity warnings) and
``audit.json`` (the chosen layer and strength, what each study took in seconds, what was
skipped and why). Every study resumes, so rerunning the command completes an interrupted audit;
changing a size is refused by the study it belongs to, by name.

Example:
    >>> cfg = AuditConfig(out="runs/audit", data="caa:refusal")
    >>> [step.name for step in plan(cfg)][:3]
    ['sweep', 'samples', 'ood']
    >>> run(cfg)                                                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval import verdicts as rules
from steerlab.eval.configs.audit import AuditConfig
from steerlab.eval.store import read_results
from steerlab.eval.studies import AUDIT_STEPS
from steerlab.eval.tables import console, print_table
from steerlab.util.io import write_json

STUDIES = AUDIT_STEPS  # the registry's (steerlab.eval.studies)
Interval = tuple[float, float, float]


@dataclass
class Step:
    """One study of the audit: its name, sub-directory and the sizes it runs at."""

    name: str
    sizes: str


@dataclass
class AuditState:
    """What the studies found so far (filled in order; later studies read earlier ones)."""

    cfg: AuditConfig
    vector: Path | None = None
    layer: int | None = None
    layer_chosen: bool = False
    strength: float = 0.0
    verdicts: dict[str, rules.Verdict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    base_rate: float | None = None
    params: int | None = None


def plan(cfg: AuditConfig) -> list[Step]:
    """The studies the audit will run, with their sizes (printed before anything runs)."""
    s = cfg.strength()
    layers = cfg.layers or ("the vector's layers" if cfg.vector else "depths 0.3-0.7")
    steps = {
        "sweep": f"layers {layers} × strengths {','.join(f'{v:g}' for v in cfg.strengths)}; "
                 f"{cfg.limit} val + {cfg.limit} test items (--limit), {cfg.train_limit} train "
                 "pairs (--train-limit)",
        "samples": f"pair counts {','.join(map(str, cfg.pair_counts))} (--n) × {cfg.draws} draws "
                   f"(--seeds), ±{s:g} at the chosen layer, {cfg.limit} test items",
        "ood": f"AEP prompts ({','.join(cfg.ood_lengths)}; {cfg.ood_limit} per set, "
               f"--ood-limit), {cfg.max_new_tokens} new tokens, judge {cfg.judge}; ID on "
               f"{cfg.limit or 'all'} test items ({cfg.form} format, --limit)",
        "adversarial": f"{cfg.adversarial_limit} test items (--adversarial-limit), EPO "
                       f"{cfg.iterations} iterations (--iterations) × {cfg.population}×"
                       f"{cfg.children} candidates, {cfg.suffix_length}-token suffixes",
        "perplexity": f"{cfg.windows} WikiText-2 windows of 256 tokens (--perplexity-limit) at "
                      f"{s:g}",
        "prompting": f"the vector at {s:g} vs system prompt + prefix + {cfg.shots} train "
                     f"examples (--shots) vs both, on the {cfg.limit or 'all'} test items "
                     "(--limit); "
                     f"{cfg.max_new_tokens}-token answers to {cfg.fluency_limit or 'all'} of "
                     "them for the fluency cost (--fluency-limit)",
        "size": ("models " + ",".join(cfg.models) + f": depth sweep + perplexity at {s:g}")
                if cfg.models else "skipped (give --models)",
    }
    unknown = [x for x in cfg.studies if x not in STUDIES]
    if unknown:
        raise SteerlabError(f"--only: unknown studies {unknown}; known: {', '.join(STUDIES)}")
    if "sweep" not in cfg.studies:
        raise SteerlabError("--only: the sweep is needed (it chooses the layer every other "
                            "study steers at)")
    return [Step(name, steps[name]) for name in STUDIES if name in cfg.studies]


def run(cfg: AuditConfig) -> list[rules.Verdict]:
    """Run (or resume) every study, judge the five findings, write verdicts.json."""
    steps = plan(cfg)
    _check_inputs(cfg)
    print_table(f"audit of {cfg.data} on {cfg.model} into {cfg.root}", ["study", "sizes"],
                [[s.name, s.sizes] for s in steps],
                caption="every study resumes; grow a size with its flag")
    state = AuditState(cfg, strength=cfg.strength())
    before = earlier_seconds(cfg.root / "audit.json")
    runners: dict[str, Callable[[AuditState], None]] = {
        "sweep": _sweep, "samples": _samples, "ood": _ood, "adversarial": _adversarial,
        "perplexity": _perplexity, "prompting": _prompting, "size": _size}
    for index, step in enumerate(steps, 1):
        console.rule(f"[{index}/{len(steps)}] {step.name}")
        started = time.perf_counter()
        runners[step.name](state)
        # seconds over every run into this directory: a resumed study adds only its load time
        state.seconds[step.name] = round(before.get(step.name, 0.0)
                                         + time.perf_counter() - started, 1)
        _write_state(state)
    for name in rules.FINDINGS:
        state.verdicts.setdefault(name, rules.Verdict(
            name, rules.UNSURE, state.skipped.get(name, "not run (--only)")))
    found = [state.verdicts[name] for name in rules.FINDINGS]
    _write_state(state)
    _print_verdicts(found, state)
    return found


def _check_inputs(cfg: AuditConfig) -> None:
    """Fail on a bad data spec, vector or judge before any model loads."""
    from steerlab.data.loaders import load_dataset
    from steerlab.eval.judges import split_judge_spec

    load_dataset(cfg.data, split="test", seed=cfg.seed)
    if cfg.vector is not None and not Path(cfg.vector).is_file():
        raise SteerlabError(f"--vector {cfg.vector}: no such file")
    if "ood" in cfg.studies:
        split_judge_spec(cfg.judge)


def _sweep(state: AuditState) -> None:
    from steerlab.eval.protocols.sweep import SweepConfig
    from steerlab.eval.protocols.sweep import run as sweep

    cfg = state.cfg
    layers = cfg.layers or "0.3,0.4,0.5,0.6,0.7"
    if cfg.layers is None and cfg.vector is not None:
        from steerlab.vector import SteeringVector

        layers = ",".join(map(str, SteeringVector.load(cfg.vector).layers))
    result = sweep(SweepConfig(
        out=cfg.root / "sweep", data=cfg.data, unit="strength",
        values=[float(v) for v in cfg.strengths], model=cfg.model, layers=layers,
        vector=cfg.vector, train_limit=cfg.train_limit, form=cfg.form, limit=cfg.limit,
        seed=cfg.seed, batch_size=cfg.batch_size))
    state.vector = Path(cfg.vector) if cfg.vector else cfg.root / "sweep" / "vector.safetensors"
    state.layer, state.layer_chosen = result.tested_layer, result.choice.chosen
    if state.layer is None:
        raise SteerlabError(f"{cfg.data}: no layer has a measured effect; nothing to audit")
    if not result.choice.chosen:
        state.warnings.append(f"no layer's effect is distinguishable from zero on val; the "
                              f"audit steers at layer {state.layer} (largest effect) anyway")
    zero = result.test.get(0.0)
    if zero is not None:
        state.base_rate = zero[0]
    from steerlab.model.load import load_model

    lm = load_model(cfg.model)
    state.params = sum(p.numel() for p in lm.model.parameters())
    # letter mass and letter position bias only say something about the A/B letter score
    checks = _ab_checks(state, lm) if cfg.form == "ab" else {}
    state.warnings += rules.validity_warnings(base_rate=state.base_rate, **checks)


def _ab_checks(state: AuditState, lm: Any) -> dict[str, float | None]:
    """Answer-letter mass (unsteered, A/B test items) and the share of (A)-matching items."""
    from steerlab.data.loaders import load_dataset
    from steerlab.scoring.ab import score_ab

    cfg = state.cfg
    data = load_dataset(cfg.data, split="test", seed=cfg.seed)
    if data.kind != "ab":
        return {}
    items = data.subset(cfg.limit, cfg.seed) if cfg.limit else data
    answers = [str(getattr(i, "matching", "")).strip().upper() for i in items.items]
    lettered = all(a.startswith("(") for a in answers)  # CAA's (A)/(B), not Yes/No items
    result = score_ab(lm, items, batch_size=cfg.batch_size)
    mass = [a + b for a, b in zip(result.p_matching, result.p_not_matching, strict=True)]
    share = sum(a.startswith("(A") for a in answers) / len(answers) if lettered else None
    return {"letter_mass": sum(mass) / len(mass), "matching_a_share": share}


def _samples(state: AuditState) -> None:
    from steerlab.data.loaders import load_dataset
    from steerlab.eval.protocols.samples import SamplesConfig
    from steerlab.eval.protocols.samples import run as samples

    cfg = state.cfg
    assert state.layer is not None
    n_train = len(load_dataset(cfg.data, split="train", seed=cfg.seed))
    n_train = min(n_train, cfg.train_limit) if cfg.train_limit else n_train
    counts = [k for k in cfg.pair_counts if k <= n_train]
    if not counts:
        state.skipped["samples"] = f"no pair count fits the {n_train} train pairs"
        return
    result = samples(SamplesConfig(
        out=cfg.root / "samples", data=cfg.data, layer=state.layer,
        values=(-state.strength, state.strength), sizes=counts, seeds=cfg.draws,
        model=cfg.model, train_limit=cfg.train_limit, form=cfg.form, limit=cfg.limit,
        seed=cfg.seed, batch_size=cfg.batch_size))
    verdict = rules.judge_samples(result.plateau, result.sizes, result.full_effect, n_train)
    state.verdicts["samples"] = _with(verdict, state.warnings)


def _trait(data: str) -> str | None:
    from steerlab.data.benchmarks import ood_traits

    name = data.split(":", 1)[1] if ":" in data else Path(data).stem
    return name if name in ood_traits() else None


def _ood(state: AuditState) -> None:
    from steerlab.eval.protocols.ood import OODConfig
    from steerlab.eval.protocols.ood import run as ood

    cfg = state.cfg
    trait = _trait(cfg.data)
    if trait is None:
        state.skipped["ood"] = (f"no AEP out-of-distribution prompts for {cfg.data} (traits "
                                "with prompts: steerlab eval ood --help)")
        return
    id_data = cfg.data if cfg.data.startswith(("caa:", "mwe:")) else None
    effects = ood(OODConfig(
        out=cfg.root / "ood", vector=_vector(state), trait=trait, values=(0.0, state.strength),
        layers=str(state.layer), model=cfg.model, judge=cfg.judge, lengths=cfg.ood_lengths,
        id_data=id_data or "none", id_format=cfg.form, max_new_tokens=cfg.max_new_tokens,
        limit=cfg.ood_limit, id_limit=cfg.limit,
        seed=cfg.seed, batch_size=cfg.batch_size))

    def scaled(kind: str, group: str | None) -> Interval | None:
        for e in effects:
            if e.kind == kind and e.value == state.strength and (group is None
                                                                  or e.group == group):
                return (e.mean * e.scale, e.low * e.scale, e.high * e.scale)
        return None

    # the pooled open-ended effect; else any format's pooled one; else the only OOD set measured
    groups = [e.group for e in effects if e.kind == "ood" and e.value == state.strength]
    pooled = scaled("ood", "open-ended/all") or next(
        (scaled("ood", g) for g in groups if g.endswith("/all")), None) or (
        scaled("ood", groups[0]) if len(groups) == 1 else None)
    verdict = rules.judge_ood(scaled("id", None), pooled)
    state.verdicts["ood"] = _with(verdict, state.warnings)


def _adversarial(state: AuditState) -> None:
    from steerlab.data.loaders import load_dataset
    from steerlab.eval.protocols.adversarial import AdversarialConfig
    from steerlab.eval.protocols.adversarial import run as adversarial

    cfg = state.cfg
    if load_dataset(cfg.data, split="test", seed=cfg.seed).kind != "ab":
        state.skipped["adversarial"] = f"{cfg.data} has no A/B items to reverse"
        return
    summary = adversarial(AdversarialConfig(
        out=cfg.root / "adversarial", vector=_vector(state), layers=str(state.layer),
        value=state.strength, data=cfg.data, model=cfg.model,
        objective="answer" if cfg.form == "open" else "ab_flip", method="epo",
        suffix_length=cfg.suffix_length, iterations=cfg.iterations,
        population=cfg.population, children=cfg.children, limit=cfg.adversarial_limit,
        seed=cfg.seed))
    n = _count(cfg.root / "adversarial", "adv_success")
    verdict = rules.judge_adversarial(summary["success"], summary["random_success"],
                                      summary["suffix_xent"], summary["natural_xent"], n)
    state.verdicts["adversarial"] = _with(verdict, state.warnings)


def _perplexity(state: AuditState) -> None:
    from steerlab.eval.protocols.perplexity import PerplexityConfig
    from steerlab.eval.protocols.perplexity import run as perplexity

    cfg = state.cfg
    ratios = perplexity(PerplexityConfig(
        out=cfg.root / "perplexity", vector=_vector(state), layers=str(state.layer),
        unit="strength", values=[state.strength], model=cfg.model, limit=cfg.windows,
        seed=cfg.seed))
    ratio = ratios.get((state.layer, state.strength)) if state.layer is not None else None
    state.verdicts["perplexity"] = rules.judge_perplexity(ratio, state.strength)


def _prompting(state: AuditState) -> None:
    from steerlab.eval.protocols.prompting import PromptingConfig
    from steerlab.eval.protocols.prompting import run as prompting

    cfg = state.cfg
    result = prompting(PromptingConfig(
        out=cfg.root / "prompting", data=cfg.data, vector=_vector(state),
        layers=str(state.layer), unit="strength", value=state.strength, model=cfg.model,
        instruction=cfg.instruction, shots=cfg.shots, form=cfg.form, limit=cfg.limit,
        fluency_limit=cfg.fluency_limit, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
        batch_size=cfg.batch_size, write_verdict=False))
    state.verdicts["prompting"] = _with(result.verdict, state.warnings)


def _size(state: AuditState) -> None:
    from steerlab.eval.protocols.models import ModelsConfig
    from steerlab.eval.protocols.models import run as models
    from steerlab.eval.protocols.perplexity import PerplexityConfig
    from steerlab.eval.protocols.perplexity import run as perplexity

    cfg = state.cfg
    names = list(dict.fromkeys([cfg.model, *cfg.models]))
    if len(names) < 2:
        state.skipped["size"] = "needs --models (at least one more model)"
        return
    s = state.strength
    rows = models(ModelsConfig(out=cfg.root / "size" / "models", models=names, data=cfg.data,
                               values=(-s, 0.0, s), train_limit=cfg.train_limit, form=cfg.form,
                               limit=cfg.limit, seed=cfg.seed, batch_size=cfg.batch_size))
    ratios: list[tuple[str, float, Interval]] = []
    for row in rows:
        if row.layer is None:
            continue
        safe = row.model.replace("/", "_")
        got = perplexity(PerplexityConfig(
            out=cfg.root / "size" / f"perplexity_{safe}",
            vector=cfg.root / "size" / "models" / f"vector_{safe}.safetensors",
            layers=str(row.layer), unit="strength", values=[s], model=row.model,
            limit=cfg.windows, seed=cfg.seed))
        ratio = got.get((row.layer, s))
        if ratio is not None:
            ratios.append((row.model, row.params_m * 1e6, ratio))
    state.verdicts["size"] = rules.judge_size(ratios)


def _vector(state: AuditState) -> Path:
    if state.vector is None or not state.vector.is_file():
        raise SteerlabError(f"{state.cfg.root / 'sweep'}: the sweep left no vector")
    return state.vector


def _count(run_dir: Path, metric: str) -> int:
    return sum(1 for record in read_results(run_dir / "results.jsonl").records
               if record.get("metric") == metric)


def _with(verdict: rules.Verdict, warnings: Sequence[str]) -> rules.Verdict:
    verdict.warnings = [*verdict.warnings, *(w for w in warnings if w not in verdict.warnings)]
    return verdict


def earlier_seconds(path: Path, dirs: dict[str, str] | None = None) -> dict[str, float]:
    """Per-study seconds an earlier run into this directory recorded (none if unreadable).

    Only studies whose directory (``dirs.get(name, name)`` beside ``path``) is still there
    count: a study removed to be measured again starts from zero, not from the old run's time.
    """
    try:
        seconds = json.loads(path.read_text(encoding="utf-8")).get("seconds", {})
        found = {str(k): float(v) for k, v in seconds.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}
    return {k: v for k, v in found.items() if (path.parent / (dirs or {}).get(k, k)).is_dir()}


def _write_state(state: AuditState) -> None:
    cfg = state.cfg
    state.cfg.root.mkdir(parents=True, exist_ok=True)
    audit = {"data": cfg.data, "model": cfg.model, "models": list(cfg.models),
             "layer": state.layer, "layer_chosen": state.layer_chosen,
             "strength": state.strength, "params": state.params,
             "vector": str(state.vector) if state.vector else None,
             "seconds": state.seconds, "total_seconds": round(sum(state.seconds.values()), 1),
             "skipped": state.skipped, "warnings": state.warnings}
    write_json(cfg.root / "audit.json", audit, what="audit summary")
    if state.verdicts:
        found = [state.verdicts[k].as_dict() for k in rules.FINDINGS if k in state.verdicts]
        write_json(cfg.root / "verdicts.json", found, what="verdicts")


def _print_verdicts(found: Sequence[rules.Verdict], state: AuditState) -> None:
    total = sum(state.seconds.values())
    rows = [[v.title, v.verdict, v.reason] for v in found]
    print_table(f"{state.cfg.data} on {state.cfg.model}: layer {state.layer}, strength "
                f"{state.strength:g}", ["finding", "verdict", "why"], rows,
                caption=f"rules: steerlab.eval.verdicts (docs/evaluation/verdicts.md); "
                        f"{total / 60:.1f} min of studies this run")
    for warning in dict.fromkeys(w for v in found for w in v.warnings):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"verdicts: {state.cfg.root / 'verdicts.json'}; page: steerlab report "
                  f"{state.cfg.root} -o audit.html")
