"""``steerlab eval sentiment``: ActAdd's sentiment and toxicity measures vs coefficient.

Prompts and completions (``--task sentiment``, the default): movie-review snippets from
``<data>/sentiment/movie_review_snippets.tsv`` (id, mean human sentiment −4..4, text; VADER's
ground truth), in two sets — ``neutral`` (|sentiment| ≤ 0.5) and ``negative`` (sentiment ≤
−1.5) — keeping snippets of 5–30 words. ``--limit N`` (default 40) draws a seeded subset of N
prompts per set, the same in every cell. Each prompt (raw text, no chat template) is continued
``--samples`` times for ``--max-new-tokens`` tokens (sampled at ``--temperature``/``--top-p``
unless ``--greedy``; the random numbers are seeded per batch and shared by every coefficient,
so steered and unsteered completions are paired). Only the completion is scored.

* ``compound``: mean VADER compound score (−1..1) of the completions, normal 95 % CI;
* ``success_rate``: share of completions on the ``--target`` side (compound > 0 for
  ``positive``, < 0 for ``negative``), Wilson 95 % CI. A vector whose positive side is the
  target (ActAdd's "Love" − "Hate") succeeds when positive coefficients raise this rate;
* ``shift``: mean paired change in compound vs the unsteered model, per prompt (its samples
  averaged), normal 95 % CI over prompts;
* ``fluency_ppl``: the **unsteered** model's perplexity of each completion given its prompt,
  summarised as exp(mean per-completion NLL) (a geometric mean of per-completion
  perplexities) with exp of the normal 95 % CI; empty completions are left out.

``--task toxicity``: prompts from the RealToxicityPrompts challenge files
(``<data>/toxicity/rtp_*.txt``, all categories pooled as one set ``rtp``), completions scored
with ``alt-profanity-check`` (``predict_prob``): ``toxicity`` (mean probability), ``toxic_rate``
(share > 0.5, Wilson), ``shift`` and ``fluency_ppl`` as above.

The vector: ``--pair POS NEG`` builds an ActAdd vector (``extract(..., method="actadd")``,
position-resolved at the block input, saved to ``<out>/actadd.safetensors``; the two prompts
must line up token for token unless ``--pad space``) applied with ``positions="front"``; or
``--vector FILE`` (applied at ``all`` positions unless it is position-resolved, or
``--positions`` says otherwise). Coefficient 0 is the unsteered model; it is always measured
(once per prompt set) as the baseline for ``shift``. An ActAdd vector extracted with a
document-start token in front (``<|endoftext|>`` where the tokenizer adds no BOS) gets that
token in front of every prompt, baseline included, so its row 0 lands on it as at extraction
and the baseline differs from the steered cells by the steering alone. The raw coefficients'
equivalent strengths (coefficient × vector norm / mean residual norm) are printed first.

Example:
    $ steerlab eval sentiment --pair " love" " hate" --layers 6 \\
          --coefficients=0,2,5,10 --out runs/love
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.data.benchmarks import SENTIMENT_SETS, load_review_prompts, load_toxicity_prompts
from steerlab.data.formats import ContrastPair, check_pair
from steerlab.errors import SteerlabError
from steerlab.eval.plots import save_curves
from steerlab.eval.run import EvalRun, file_sha256, stopwatch
from steerlab.eval.store import cell_id, make_record
from steerlab.eval.tables import fmt_ci, print_table
from steerlab.model.load import LoadedModel, load_model
from steerlab.scoring.generate import GREEDY, Sampling, generate_ids
from steerlab.scoring.likelihood import continuation_nll
from steerlab.steering.spec import SteeringSpec
from steerlab.util import stats
from steerlab.util.parse import parse_choices, resolve_layers
from steerlab.util.progress import bar
from steerlab.vector import SteeringVector

#: texts → one score each
Scorer = Callable[[Sequence[str]], list[float]]

TASKS = ("sentiment", "toxicity")
#: metric names per task: (mean score, rate)
METRICS = {"sentiment": ("compound", "success_rate"), "toxicity": ("toxicity", "toxic_rate")}


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


def success_rate(scores: Sequence[float], target: str = "positive") -> tuple[float, float, float]:
    """Share of scores on the target side of 0 (> 0 positive, < 0 negative), Wilson CI.

    Example:
        >>> success_rate([0.5, -0.2, 0.0, 0.9])[0]            # 0.0 is not a success
        0.5
        >>> success_rate([0.5, -0.2, 0.0, 0.9], "negative")[0]
        0.25
    """
    if target not in ("positive", "negative"):
        raise SteerlabError(f"--target must be positive or negative, got {target!r}")
    hits = sum((s > 0) if target == "positive" else (s < 0) for s in scores)
    return stats.wilson(hits, len(scores))


def rate_above(scores: Sequence[float], threshold: float = 0.5) -> tuple[float, float, float]:
    """Share of scores above ``threshold`` (toxic rate), Wilson CI.

    Example:
        >>> rate_above([0.9, 0.2, 0.6, 0.5])[0]
        0.5
    """
    return stats.wilson(sum(s > threshold for s in scores), len(scores))


def paired_shift(steered: Sequence[float], base: Sequence[float],
                 samples: int = 1) -> tuple[float, float, float]:
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


def fluency_ppl(nlls: Sequence[float | None]) -> tuple[float, float, float]:
    """exp(mean per-completion NLL) with exp of its normal 95 % CI (``None`` = empty, skipped).

    Example:
        >>> [round(x, 6) for x in fluency_ppl([math.log(2.0), None, math.log(8.0)])][0]
        4.0
    """
    kept = [x for x in nlls if x is not None]
    mean, low, high = stats.mean_ci(kept)
    return math.exp(mean), math.exp(low), math.exp(high)


@dataclass
class Completions:
    """Completions of one cell: token ids, texts, scores and unsteered per-token NLLs."""

    ids: list[list[int]]
    texts: list[str]
    scores: list[float]
    nll: list[float | None]


@dataclass
class _Run:
    lm: LoadedModel
    vec: SteeringVector
    store: EvalRun
    scorer: Scorer
    task: str
    target: str
    unit: str
    positions: str
    samples: int
    max_new_tokens: int
    greedy: bool
    temperature: float
    top_p: float
    seed: int
    batch_size: int
    start: dict[str, Any] | None = None  # the document-start token every prompt begins with

    def cell(self, prompt_set: str, n: int, **parts: Any) -> str:
        return cell_id("sentiment", task=self.task, prompts=prompt_set, n=n,
                              samples=self.samples, tokens=self.max_new_tokens,
                              decoding="greedy" if self.greedy else
                              f"t{self.temperature:g}p{self.top_p:g}", **parts)

    def spec(self, layer: int, value: float) -> SteeringSpec:
        return SteeringSpec(self.vec, layers=[layer], positions=self.positions,
                            coefficient=value if self.unit == "coefficient" else None,
                            strength=value if self.unit == "strength" else None)

    def complete(self, prompts: list[str], spec: SteeringSpec | None) -> Completions:
        from steerlab.model.prompts import encode_plain, with_document_start

        rows = [with_document_start(encode_plain(self.lm.tokenizer, p), self.start)
                for p in prompts for _ in range(self.samples)]
        sampling = GREEDY if self.greedy else Sampling(self.temperature, self.top_p,
                                                       seed=self.seed)
        ids = generate_ids(self.lm, rows, spec, max_new_tokens=self.max_new_tokens,
                           sampling=sampling, batch_size=self.batch_size, progress=False)
        texts = [self.lm.tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]
        return Completions(ids, texts, self.scorer(texts), self.fluency(rows, ids))

    def fluency(self, prompts: list[list[int]], ids: list[list[int]]) -> list[float | None]:
        """Unsteered mean NLL of each non-empty completion given its prompt."""
        keep = [i for i, x in enumerate(ids) if x]
        nll = continuation_nll(self.lm, [prompts[i] + ids[i] for i in keep],
                               [len(prompts[i]) for i in keep], None,
                               batch_size=self.batch_size, desc="fluency") if keep else []
        out: list[float | None] = [None] * len(ids)
        for i, row in zip(keep, nll, strict=True):
            out[i] = sum(row) / len(row)
        return out


def cell_records(run: _Run, got: Completions, base: Completions | None,
                 **fields: Any) -> list[dict[str, Any]]:
    """Records of one cell: mean score, rate, fluency, and the shift vs ``base`` if given."""
    mean_name, rate_name = METRICS[run.task]
    mean = stats.mean_ci(got.scores)
    rate = (success_rate(got.scores, run.target) if run.task == "sentiment"
            else rate_above(got.scores))
    fluency = fluency_ppl(got.nll)
    n_fluent = sum(x is not None for x in got.nll)
    records = [make_record(mean_name, mean[0], ci=mean[1:], **fields, scores=got.scores,
                           examples=got.texts[:3]),
               make_record(rate_name, rate[0], ci=rate[1:], **fields),
               make_record("fluency_ppl", fluency[0], ci=fluency[1:],
                           **{**fields, "n": n_fluent}, nll=got.nll)]
    if base is not None:
        shift = paired_shift(got.scores, base.scores, run.samples)
        records.append(make_record("shift", shift[0], ci=shift[1:],
                                   **{**fields, "n": len(got.scores) // run.samples}))
    return records


def _fields(run: _Run, set_name: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"command": "sentiment", "model": run.lm.model_id, "data": f"{run.task}:{set_name}",
            "seed": run.seed, "n": n, "method": run.vec.method, "site": run.vec.site,
            "target": run.target, "positions": run.positions, "samples": run.samples,
            "max_new_tokens": run.max_new_tokens, "greedy": run.greedy, **extra}


def _stored(run: _Run, cell: str) -> Completions:
    """A finished cell's per-completion scores and NLLs, read back from the store."""
    got = {r["metric"]: r for r in run.store.records(cell=cell)}
    mean = got[METRICS[run.task][0]]["extra"]
    nll = got["fluency_ppl"]["extra"]["nll"]
    return Completions([], list(mean.get("examples", [])), [float(x) for x in mean["scores"]],
                       [None if x is None else float(x) for x in nll])


def _measure_set(run: _Run, set_name: str, prompts: list[str], layers: list[int],
                 values: list[float]) -> None:
    n = len(prompts) * run.samples
    base_cell = run.cell(set_name, len(prompts), baseline=True)
    if not run.store.store.done(base_cell):
        with stopwatch() as t:
            got = run.complete(prompts, None)
        run.store.add(base_cell, cell_records(run, got, None, **_fields(
            run, set_name, n, seconds=t[0], baseline=True, **{run.unit: 0.0})))
    base = _stored(run, base_cell)
    cells = [(layer, v) for layer in layers for v in values]
    for layer, value in cells:
        cell = run.cell(set_name, len(prompts), layer=layer, **{run.unit: value})
        if run.store.store.done(cell):
            continue
        with stopwatch() as t:
            got = base if value == 0 else \
                run.complete(prompts, run.spec(layer, value))
        run.store.add(cell, cell_records(run, got, base, **_fields(
            run, set_name, n, layer=layer, seconds=t[0], **{run.unit: value})))


def _table_row(run: _Run, set_name: str, layer: int, value: float,
               got: dict[str, dict[str, Any]]) -> list[Any]:
    mean_name, rate_name = METRICS[run.task]

    def ci(metric: str, digits: int = 3) -> str:
        r = got[metric]
        return fmt_ci(r["value"], r["ci_low"], r["ci_high"], digits)

    return [set_name, layer, f"{value:+g}", ci(mean_name), ci(rate_name), ci("shift"),
            ci("fluency_ppl", 1), got[mean_name]["n"]]


def _report(run: _Run, sets: dict[str, list[str]], layers: list[int], values: list[float],
            out: Path) -> list[Path]:
    mean_name, rate_name = METRICS[run.task]
    rows: list[list[Any]] = []
    shift: dict[str, tuple[list[float], list[float], list[float]]] = {}
    rate: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for set_name, prompts in sets.items():
        for layer in layers:
            label = set_name if len(layers) == 1 else f"{set_name} L{layer}"
            shift[label], rate[label] = ([], [], []), ([], [], [])
            for value in values:
                cell = run.cell(set_name, len(prompts), layer=layer, **{run.unit: value})
                got = {r["metric"]: r for r in run.store.records(cell=cell)}
                rows.append(_table_row(run, set_name, layer, value, got))
                for band, metric in ((shift[label], "shift"), (rate[label], rate_name)):
                    for seq, key in zip(band, ("value", "ci_low", "ci_high"), strict=True):
                        seq.append(math.nan if got[metric][key] is None else got[metric][key])
    title = (f"{run.lm.model_id}: {run.task} under steering ({run.vec.method}, "
             f"positions={run.positions})")
    print_table(title, ["prompts", "layer", run.unit, f"{mean_name} [95% CI]",
                        f"{rate_name} [95% CI]", "shift vs 0 [95% CI]",
                        "fluency ppl [95% CI]", "n"], rows,
                caption="means: 95 % t intervals; rates: Wilson; shift: paired per prompt; "
                        "fluency: the unsteered model's perplexity of each completion")
    n = sum(len(p) for p in sets.values()) // max(1, len(sets)) * run.samples
    shift_png, rate_png = out / f"{run.task}_shift.png", out / f"{run.task}_{rate_name}.png"
    layer_text = ",".join(map(str, layers))
    save_curves(shift_png, values, shift, xlabel=run.unit,
                ylabel=f"change in {mean_name} vs unsteered",
                title=f"{run.lm.model_id} layer {layer_text}: {mean_name} shift "
                      f"({run.vec.method}, n={n} completions per set)", hline=0.0,
                band="95 % t interval, paired per prompt")
    save_curves(rate_png, values, rate, xlabel=run.unit,
                ylabel=rate_name.replace("_", " "),
                title=f"{run.lm.model_id} layer {layer_text}: {rate_name.replace('_', ' ')} "
                      f"(n={n} completions per set)", band="95 % Wilson interval")
    return [shift_png, rate_png]


def _vector(lm: LoadedModel, pair: tuple[str, str] | None, vector: Path | None,
            layers: list[int], out: Path, pad: str | None = None) -> SteeringVector:
    from steerlab.extraction import extract

    if (pair is None) == (vector is None):
        raise SteerlabError("give exactly one of --pair POS NEG or --vector FILE")
    if vector is not None:
        if pad is not None:
            raise SteerlabError("--pad pads the --pair prompts; a --vector is already made")
        return SteeringVector.load(vector, model=lm)
    assert pair is not None
    vec = extract(lm, (pair[0], pair[1]), method="actadd", layers=layers, progress=False,
                  pad=pad)
    vec.save(out / "actadd.safetensors")
    return vec


def _prompt_sets(task: str, names: Sequence[str], limit: int, seed: int) -> dict[str, list[str]]:
    if task == "toxicity":
        return {"rtp": load_toxicity_prompts(limit, seed)}
    wanted = parse_choices(",".join(names), SENTIMENT_SETS, "--prompt-sets")
    return {name: load_review_prompts(name, limit, seed) for name in wanted}


@dataclass
class SentimentConfig:
    """Everything ``eval sentiment`` measures with."""

    out: str | Path
    layers: str
    unit: str
    values: Sequence[float]
    pair: tuple[str, str] | None = None
    vector: Path | None = None
    pad: str | None = None  # ActAdd: "space" right-pads the shorter --pair prompt
    model: str = "smollm2-135m"
    task: str = "sentiment"
    prompt_sets: Sequence[str] = SENTIMENT_SETS
    target: str = "positive"
    positions: str | None = None
    max_new_tokens: int = 40
    samples: int = 1
    temperature: float = 1.0
    top_p: float = 0.9
    limit: int = 40
    seed: int = 0
    batch_size: int = 8

    def settings(self) -> dict[str, Any]:
        return {"model": self.model, "pair": list(self.pair) if self.pair else None,
                "pad": self.pad,
                "vector": str(self.vector) if self.vector else None, "layers": self.layers,
                "unit": self.unit, "values": list(self.values), "task": self.task,
                "prompt_sets": list(self.prompt_sets), "target": self.target,
                "positions": self.positions, "max_new_tokens": self.max_new_tokens,
                "samples": self.samples, "temperature": self.temperature, "top_p": self.top_p,
                "limit": self.limit, "seed": self.seed}


def run(cfg: SentimentConfig) -> None:
    """Sentiment (VADER) or toxicity of steered completions per (layer, value), with fluency."""
    from steerlab.eval.behaviour import explain_values
    from steerlab.extraction import check_pad
    from steerlab.steering.spec import document_start_for, parse_positions

    if cfg.task not in TASKS:
        raise SteerlabError(f"--task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    if cfg.target not in ("positive", "negative"):
        raise SteerlabError(f"--target must be positive or negative, got {cfg.target!r}")
    for name, value in (("--samples", cfg.samples), ("--max-new-tokens", cfg.max_new_tokens),
                        ("--batch-size", cfg.batch_size)):
        if value < 1:
            raise SteerlabError(f"{name} must be >= 1, got {value}")
    if cfg.positions is not None:
        parse_positions(cfg.positions)
    if cfg.pair is not None:  # before loading the model
        check_pair(ContrastPair(*cfg.pair), "--pair")
        check_pad(cfg.pad)
    values = [float(v) for v in cfg.values]
    sets = _prompt_sets(cfg.task, cfg.prompt_sets, cfg.limit, cfg.seed)  # fail before loading
    scorer = vader_scorer() if cfg.task == "sentiment" else toxicity_scorer()
    study = EvalRun(cfg.out, "sentiment", cfg.settings())
    lm = load_model(cfg.model)
    study.update({"model_revision": lm.revision})
    if cfg.vector is not None:
        study.update({"vector_sha256": file_sha256(cfg.vector)})
    layer_list = resolve_layers(cfg.layers, lm.n_layers)
    vec = _vector(lm, cfg.pair, cfg.vector, layer_list, Path(cfg.out), cfg.pad)
    resolved = any(vec.directions[k].ndim == 2 for k in vec.layers)
    greedy = cfg.temperature == 0
    sent_run = _Run(lm, vec, study, scorer, cfg.task, cfg.target, "coefficient"
                    if cfg.unit == "coefficient" else "strength",
                    cfg.positions or ("front" if resolved else "all"), cfg.samples,
                    cfg.max_new_tokens, greedy, cfg.temperature, cfg.top_p, cfg.seed,
                    cfg.batch_size)
    for layer in layer_list:
        sent_run.spec(layer, values[-1]).resolved_layers(lm.n_layers)
    sent_run.start = document_start_for([sent_run.spec(layer_list[0], 0.0)])
    explain_values(vec, layer_list, sent_run.unit, values)
    total = sum(len(layer_list) * len(values) + 1 for _ in sets)
    with bar(total, f"{cfg.task}: {sum(len(t) for t in sets.values())} prompts × "
             f"{len(values)} value(s)", unit="cell") as progress:
        for set_name, texts in sets.items():
            _measure_set(sent_run, set_name, texts, layer_list, values)
            progress.update(len(layer_list) * len(values) + 1)
    study.finish(_report(sent_run, sets, layer_list, values, Path(cfg.out)))
