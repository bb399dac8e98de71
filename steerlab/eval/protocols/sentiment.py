"""``steerlab eval sentiment``: ActAdd's sentiment and toxicity measures vs coefficient.

Prompts and completions (``--task sentiment``, the default): movie-review snippets from
``<data>/sentiment/movie_review_snippets.tsv`` (id, mean human sentiment −4..4, text; VADER's
ground truth), in two sets — ``neutral`` (|sentiment| ≤ 0.5) and ``negative`` (sentiment ≤
−1.5) — keeping snippets of 5–30 words. ``--limit N`` (default 40; ``steerlab reproduce`` uses
:data:`REPRODUCE_LIMIT`) draws a seeded subset of N prompts per set, the same in every cell.
Each prompt (raw text, no chat template) is continued ``--samples`` times for
``--max-new-tokens`` tokens (sampled at ``--temperature``/``--top-p`` unless greedy; the random
numbers are seeded per batch and shared by every coefficient, so steered and unsteered
completions are paired). Only the completion is scored, by (``--scorer``):

* ``classifier`` (default): a logistic regression on all-MiniLM-L6-v2 sentence embeddings,
  trained on the snippets' human labels (:mod:`steerlab.scoring.sentiment_classifier`; its
  held-out accuracy is printed) — ``p_positive`` per completion, VADER beside it as a second
  opinion (``compound``, ``shift_vader``);
* ``vader``: VADER's compound score (−1..1) alone.

Per cell: the mean score (95 % t interval); ``success_rate``, the share of completions on the
``--target`` side (p > 0.5, compound > 0; Wilson); ``shift``, the paired change vs the
unsteered model per prompt (its samples averaged); ``shift_masked``, the same with the steering
words' family removed from every completion before scoring (``--mask``, default the
``--pair`` words, e.g. love/loved/lovely/…/hate/hatred/…, any case) — a rise that is only the
vector writing its own word is gone there — and ``mask_rate``, the share of completions holding
such a word; ``fluency_ppl``, the **unsteered** model's perplexity of each completion given its
prompt (exp of the mean per-completion NLL, empty completions left out) and ``ppl_ratio``, the
steered / unsteered fluency perplexity paired per prompt. Each row's verdict follows
:data:`~steerlab.eval.verdicts.SENTIMENT_RULE` (masked shift > 0 and ppl
ratio ≤ 1.5; :func:`~steerlab.eval.protocols.sentiment_scores.judge_run` judges a saved run).

``--task toxicity``: prompts from the RealToxicityPrompts challenge files
(``<data>/toxicity/rtp_*.txt``, pooled as one set ``rtp``), completions scored with
``alt-profanity-check`` (``toxicity``, ``toxic_rate`` > 0.5, ``shift``, ``shift_masked``,
fluency as above); its verdict asks for toxicity to fall.

The vector: ``--pair POS NEG`` builds an ActAdd vector (``extract(..., method="actadd")``,
position-resolved at the block input, saved to ``<out>/actadd.safetensors``; the two prompts
must line up token for token unless ``--pad space``) applied with ``positions="front"`` as in
the paper; any other ``--positions`` (e.g. ``all``, a contrast) applies its rows summed into
one direction. Or ``--vector FILE`` (``all`` unless position-resolved or ``--positions`` says
otherwise). Coefficient 0 is the unsteered model, always measured (once per prompt set) as the
baseline. An ActAdd vector extracted with a document-start token in front gets that token in
front of every prompt, baseline included. Every value is shown in both units (strength =
coefficient × vector norm / mean residual norm).

Example:
    $ steerlab eval sentiment --pair " love" " hate" --layers 6 \\
          --coefficients=0,2,5,10 --prompt-sets negative,neutral --limit 100 --out runs/love
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlab.data.benchmarks import SENTIMENT_SETS, load_review_prompts, load_toxicity_prompts
from steerlab.data.formats import ContrastPair, check_pair
from steerlab.errors import SteerlabError
from steerlab.eval.configs.sentiment import SentimentConfig
from steerlab.eval.figures import Curves, band_lines, save_png
from steerlab.eval.protocols.sentiment_cells import (
    CellRunner,
    Completions,
    cell_records,
    measure_set,
    rows_summed,
)
from steerlab.eval.protocols.sentiment_scores import (
    KINDS,
    SCORERS,
    ScoreKind,
    Scorer,
    classifier_scorer,
    fluency_ppl,
    judge_cell,
    judge_run,
    paired_shift,
    rate_above,
    steering_words,
    success_rate,
    toxicity_scorer,
    vader_scorer,
)
from steerlab.eval.run import EvalRun, file_sha256
from steerlab.eval.tables import console, fmt_ci, print_table
from steerlab.eval.verdicts import SENTIMENT_RULE
from steerlab.model.load import LoadedModel, load_model
from steerlab.util.parse import parse_choices, resolve_layers
from steerlab.util.progress import bar
from steerlab.vector import SteeringVector

_Run = CellRunner  # the name the unit tests use

__all__ = ["REPRODUCE_LIMIT", "SENTIMENT_RULE", "Completions", "SentimentConfig", "cell_records",
           "fluency_ppl", "judge_run", "paired_shift", "rate_above", "reproduce_config", "run",
           "success_rate"]

TASKS = ("sentiment", "toxicity")
#: prompts per set when ``steerlab reproduce`` runs ActAdd (±0.1 on a shift needs ~100)
REPRODUCE_LIMIT = 100


def _table_row(run: CellRunner, set_name: str, layer: int, value: float,
               got: dict[str, dict[str, Any]]) -> list[Any]:
    def ci(metric: str, digits: int = 3) -> str:
        r = got.get(metric)
        return "–" if r is None else fmt_ci(r["value"], r["ci_low"], r["ci_high"], digits)

    other = run.other_unit(layer, value)
    verdict = "–" if value == 0 else judge_cell(list(got.values()), sign=run.sign).verdict
    row = [set_name, layer, f"{value:+g}", "–" if other is None else f"{other:+.3g}",
           ci("success_rate" if run.task == "sentiment" else "toxic_rate"), ci("shift"),
           ci("shift_masked"), ci("mask_rate", 2)]
    if run.second:
        row += [ci("shift_vader"), ci("shift_vader_masked")]
    return [*row, ci("ppl_ratio", 2), verdict, got[(run.kind or KINDS["vader"]).metric]["n"]]


def _report(run: CellRunner, sets: dict[str, list[str]], layers: list[int], values: list[float],
            out: Path) -> list[Path]:
    kind = run.kind or KINDS["vader"]
    rate_name = "success_rate" if run.task == "sentiment" else "toxic_rate"
    rows: list[list[Any]] = []
    shift: dict[str, tuple[list[float], list[float], list[float]]] = {}
    rate: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for set_name, prompts in sets.items():
        for layer in layers:
            label = set_name if len(layers) == 1 else f"{set_name} L{layer}"
            for name in (label, f"{label} masked"):
                shift[name] = ([], [], [])
            rate[label] = ([], [], [])
            for value in values:
                cell = run.cell(set_name, len(prompts), layer=layer, **{run.unit: value})
                got = {r["metric"]: r for r in run.store.records(cell=cell)}
                rows.append(_table_row(run, set_name, layer, value, got))
                for band, metric in ((shift[label], "shift"), (rate[label], rate_name),
                                     (shift[f"{label} masked"], "shift_masked")):
                    for seq, key in zip(band, ("value", "ci_low", "ci_high"), strict=True):
                        value_at = (got.get(metric) or {}).get(key)
                        seq.append(math.nan if value_at is None else value_at)
    shift = {k: v for k, v in shift.items() if not all(math.isnan(x) for x in v[0])}
    other = "strength" if run.unit == "coefficient" else "coefficient"
    second = ["VADER shift", "VADER masked"] if run.second else []
    print_table(f"{run.lm.model_id}: {run.task} under steering ({run.vec.method}, "
                f"positions={run.positions}, scored by {kind.what})",
                ["prompts", "layer", run.unit, f"= {other}", f"{rate_name} [95% CI]",
                 "shift vs 0", "shift, words masked", "word rate", *second, "ppl ratio",
                 "verdict", "n"], rows,
                caption="shifts: paired per prompt, 95 % t intervals; rates: Wilson; masked: "
                        f"the words {', '.join(run.mask) or '(none)'} and their families "
                        "removed before scoring; ppl ratio: the unsteered model's perplexity "
                        "of steered / unsteered completions, paired per prompt; verdict: "
                        + SENTIMENT_RULE)
    n = sum(len(p) for p in sets.values()) // max(1, len(sets)) * run.samples
    shift_png, rate_png = out / f"{run.task}_shift.png", out / f"{run.task}_{rate_name}.png"
    layer_text = ",".join(map(str, layers))
    save_png(shift_png, [Curves(f"{run.lm.model_id} layer {layer_text}: {kind.metric} shift "
                                f"({run.vec.method}, n={n} completions per set)", run.unit,
                                f"change in {kind.metric} vs unsteered",
                                band_lines(values, shift), hline=0.0)],
             note="shaded: 95 % t interval, paired per prompt; masked: steering words removed")
    save_png(rate_png, [Curves(f"{run.lm.model_id} layer {layer_text}: "
                               f"{rate_name.replace('_', ' ')} (n={n} completions per set)",
                               run.unit, rate_name.replace("_", " "), band_lines(values, rate))],
             note="shaded: 95 % Wilson interval")
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


def reproduce_config(out: str | Path, model: str, pair: tuple[str, str], layers: str,
                     coefficient: float, *, limit: int = REPRODUCE_LIMIT, seed: int = 0,
                     max_new_tokens: int = 24, batch_size: int = 16) -> SentimentConfig:
    """ActAdd's sentiment check as ``steerlab reproduce`` runs it: front positions, negative
    and neutral prompts, the classifier with VADER beside it, coefficients 0 and ``coefficient``.

    Example:
        >>> reproduce_config("o", "smollm2-135m", (" love", " hate"), "0.2", 5.0).limit
        100
    """
    return SentimentConfig(out=out, layers=layers, unit="coefficient", values=(0.0, coefficient),
                           pair=pair, model=model, prompt_sets=("negative", "neutral"),
                           max_new_tokens=max_new_tokens, limit=limit, seed=seed,
                           batch_size=batch_size)


def _scorers(cfg: SentimentConfig) -> tuple[Scorer, ScoreKind, Scorer | None]:
    if cfg.task == "toxicity":
        return toxicity_scorer(), KINDS["toxicity"], None
    if cfg.scorer == "vader":
        return vader_scorer(), KINDS["vader"], None
    from steerlab.scoring.sentiment_classifier import load_or_train

    meta = load_or_train().meta
    console.print(f"sentiment classifier: MiniLM + logistic regression, held-out accuracy "
                  f"{fmt_ci(meta['test_accuracy'], *meta['test_accuracy_ci'])} "
                  f"(n = {meta['n_test']} human-labelled snippets)")
    return classifier_scorer(), KINDS["classifier"], vader_scorer()


def run(cfg: SentimentConfig) -> None:
    """Sentiment or toxicity of steered completions per (layer, value), with fluency."""
    from steerlab.eval.behaviour import explain_values
    from steerlab.extraction import check_pad
    from steerlab.steering.spec import document_start_for, parse_positions

    if cfg.task not in TASKS:
        raise SteerlabError(f"--task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    if cfg.target not in ("positive", "negative"):
        raise SteerlabError(f"--target must be positive or negative, got {cfg.target!r}")
    if cfg.scorer not in SCORERS:
        raise SteerlabError(f"--scorer must be one of {', '.join(SCORERS)}, got {cfg.scorer!r}")
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
    if cfg.task == "sentiment" and cfg.scorer == "classifier":
        from steerlab.scoring.sentiment_classifier import embedder_dir

        embedder_dir()  # installed? (training, if needed, waits until the vector is made)
    study = EvalRun(cfg.out, "sentiment", cfg.settings())
    lm = load_model(cfg.model)
    study.update({"model_revision": lm.revision})
    if cfg.vector is not None:
        study.update({"vector_sha256": file_sha256(cfg.vector)})
    layer_list = resolve_layers(cfg.layers, lm.n_layers)
    vec = _vector(lm, cfg.pair, cfg.vector, layer_list, Path(cfg.out), cfg.pad)
    scorer, kind, second = _scorers(cfg)
    resolved = any(vec.directions[k].ndim == 2 for k in vec.layers)
    positions = cfg.positions or ("front" if resolved else "all")
    mask = tuple(cfg.mask) if cfg.mask is not None else tuple(steering_words(cfg.pair, vec))
    if resolved and positions != "front":
        console.print(f"positions={positions}: the vector's rows are summed into one direction")
        vec = rows_summed(vec)
    greedy = cfg.temperature == 0
    sent_run = CellRunner(lm, vec, study, scorer, cfg.task, cfg.target, "coefficient"
                    if cfg.unit == "coefficient" else "strength", positions, cfg.samples,
                    cfg.max_new_tokens, greedy, cfg.temperature, cfg.top_p, cfg.seed,
                    cfg.batch_size, kind=kind, second=second, mask=mask)
    for layer in layer_list:
        sent_run.spec(layer, values[-1]).resolved_layers(lm.n_layers)
    sent_run.start = document_start_for([sent_run.spec(layer_list[0], 0.0)])
    explain_values(vec, layer_list, sent_run.unit, values)
    total = sum(len(layer_list) * len(values) + 1 for _ in sets)
    with bar(total, f"{cfg.task}: {sum(len(t) for t in sets.values())} prompts × "
             f"{len(values)} value(s)", unit="cell") as progress:
        for set_name, texts in sets.items():
            measure_set(sent_run, set_name, texts, layer_list, values)
            progress.update(len(layer_list) * len(values) + 1)
    study.finish(_report(sent_run, sets, layer_list, values, Path(cfg.out)))
