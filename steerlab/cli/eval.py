"""``steerlab eval ...``: the studies (thin wrappers: options → a protocol's config → run).

Every study writes ``results.jsonl`` and plots into ``--out`` and resumes when rerun with the
same settings. The protocols themselves are plain Python in :mod:`steerlab.eval.protocols`.

Example:
    $ steerlab eval sweep --data caa:refusal --layers 2-26:4 --strengths=-0.4,0,0.4 -o runs/r
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import options as opt
from steerlab.cli.common import generation_engine, values
from steerlab.errors import SteerlabError

HELP = ("Evaluate steering vectors: layer × strength sweeps, sample counts, OOD, perplexity, "
        "capabilities, sentiment/toxicity, model size, steering vs prompting. Each writes "
        "results.jsonl + plots into --out and resumes.")


def sweep(
    data: str = opt.data(),
    model: str = opt.model(),
    layers: str = opt.layers("all"),
    coefficients: str = opt.coefficients(),
    strengths: str = opt.strengths(help="Default -0.4,-0.2,0,0.2,0.4. Multiples of the mean "
                                        "residual-stream norm at the layer, "),
    vector: Path = opt.vector(),
    method: str = opt.method(),
    positions: str = opt.positions(),
    train_limit: int = opt.train_limit(),
    form: str = opt.answer_format(),
    out: Path = opt.out_dir(),
    limit: int = opt.limit(),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
) -> None:
    """Layer × strength sweep on val; the chosen layer reported on test (never chosen there)."""
    from steerlab.eval.protocols.sweep import SweepConfig, run

    unit, vals = values(coefficients, strengths, default="-0.4,-0.2,0,0.2,0.4")
    run(SweepConfig(out=out, data=data, unit=unit, values=vals, model=model, layers=layers,
                    vector=vector, method=method, positions=positions, train_limit=train_limit,
                    form=form, limit=limit, seed=seed, batch_size=batch_size))


def samples(
    data: str = opt.data(),
    layers: str = opt.layers(help="The one layer to extract and steer at, e.g. 14."),
    model: str = opt.model(),
    n: str = typer.Option("1,2,5,10,20,40,80,160,320", "--n", help="Pair counts to try."),
    seeds: int = typer.Option(5, "--seeds",
                              callback=opt.at_least(1, "a count"),
                              help="Random draws per pair count."),
    coefficients: str = opt.coefficients(),
    strengths: str = opt.strengths(help="Default -0.4,0.4. "),
    method: str = opt.method(),
    split: str = opt.split("test"),
    train_limit: int = opt.train_limit(),
    form: str = opt.answer_format(),
    out: Path = opt.out_dir(),
    limit: int = opt.limit(),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
) -> None:
    """Effect and cosine to the full-data vector vs the number of contrast pairs (plateau)."""
    from steerlab.eval.protocols.samples import SamplesConfig, run
    from steerlab.util.parse import parse_counts

    if layers is None or not layers.strip().lstrip("-").isdigit():
        raise SteerlabError(f"--layers: samples extracts at one layer (an index), got {layers!r}")
    unit, vals = values(coefficients, strengths, default="-0.4,0.4")
    run(SamplesConfig(out=out, data=data, layer=int(layers), unit=unit, values=vals,
                      sizes=parse_counts(n, "--n"), seeds=seeds, model=model, method=method,
                      split=split, train_limit=train_limit, form=form, limit=limit, seed=seed,
                      batch_size=batch_size))


def ood(
    vector: Path = opt.vector(required=True),
    trait: str = typer.Option(..., "--trait", help="AEP trait, e.g. agreeableness."),
    out: Path = opt.out_dir(),
    model: str = opt.model(),
    engine: str = opt.engine(),
    judge: str = opt.judge(),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Default: the vector's only layer."),
    coefficients: str = opt.coefficients(),
    strengths: str = opt.strengths(help="Default -0.5,0,0.5; 0 is always added. "),
    formats: str = typer.Option("choice-qa,open-ended", "--formats",
                                help="choice-qa,open-ended"),
    lengths: str = typer.Option("short,medium,long", "--lengths", help="short,medium,long"),
    id_data: str = typer.Option(None, "--id-data",
                                help="A/B data for the in-distribution comparison (default "
                                     "mwe:TRAIT or caa:TRAIT; 'none' to skip)."),
    form: str = opt.answer_format("ab"),
    max_new_tokens: int = opt.max_new_tokens(64),
    limit: int = opt.limit(),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
) -> None:
    """Steered answers to the AEP OOD prompts, judged 1..10, vs the in-distribution A/B effect.

    --format sets the in-distribution score (ab: letters, the only one persona Yes/No data has;
    open: whole replies, for CAA data on small models)."""
    from steerlab.data.benchmarks import FORMATS, LENGTHS
    from steerlab.eval.protocols.ood import OODConfig, run
    from steerlab.util.parse import parse_choices

    unit, vals = values(coefficients, strengths, default="-0.5,0,0.5")
    with generation_engine(engine, model):
        run(OODConfig(out=out, vector=vector, trait=trait, unit=unit, values=vals,
                      layers=layers, model=model, judge=judge,
                      formats=parse_choices(formats, FORMATS, "--formats"),
                      lengths=parse_choices(lengths, LENGTHS, "--lengths"), id_data=id_data,
                      id_format=form, max_new_tokens=max_new_tokens, limit=limit, seed=seed,
                      batch_size=batch_size))


def perplexity(
    vector: Path = opt.vector(required=True),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Each layer is measured on its own."),
    coefficients: str = opt.coefficients(),
    strengths: str = opt.strengths(help="Default 0,0.1,0.2,0.4. "),
    positions: str = typer.Option("all", "--positions",
                                  help="all: steer every token; generation: steer from "
                                       "--prompt-tokens on and score only those tokens."),
    window: int = typer.Option(256, "--window",
                               callback=opt.at_least(2, "a token count"),
                               help="Tokens per window (W)."),
    stride: int = typer.Option(0, "--stride", callback=opt.at_least(0, "a token count"),
                               help="Window start spacing S (0 = W). S < W scores only each "
                                    "window's last S tokens."),
    prompt_tokens: int = typer.Option(0, "--prompt-tokens",
                                      callback=opt.at_least(0, "a token count"),
                                      help="K for --positions generation (0 = W/2)."),
    model: str = opt.model(),
    out: Path = opt.out_dir(),
    limit: int = opt.limit(32),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(4),
) -> None:
    """Perplexity ratio (steered / unsteered) on WikiText-2 test vs strength, with intervals.

    --limit is the number of windows (a seeded choice among all that fit; 0 = all).
    """
    from steerlab.eval.protocols.perplexity import PerplexityConfig, run

    if layers is None:
        raise SteerlabError("give --layers (e.g. --layers 12)")
    unit, vals = values(coefficients, strengths, default="0,0.1,0.2,0.4")
    run(PerplexityConfig(out=out, vector=vector, layers=layers, unit=unit, values=vals,
                         model=model, positions=positions, window=window, stride=stride,
                         limit=limit, prompt_tokens=prompt_tokens, seed=seed,
                         batch_size=batch_size))


def capabilities(
    vector: Path = opt.vector(required=True),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Each layer is measured on its own."),
    coefficients: str = opt.coefficients(),
    strengths: str = opt.strengths(help="Default -0.4,0,0.4. "),
    benchmarks: str = typer.Option("mmlu,truthfulqa", "--benchmarks", help="mmlu,truthfulqa"),
    positions: str = opt.positions(),
    model: str = opt.model(),
    out: Path = opt.out_dir(),
    limit: int = opt.limit(),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
) -> None:
    """MMLU / TruthfulQA A/B accuracy vs strength (Wilson CIs), with the letters' mass."""
    from steerlab.eval.protocols.capabilities import BENCHMARKS, CapabilitiesConfig, run
    from steerlab.util.parse import parse_choices

    if layers is None:
        raise SteerlabError("give --layers (e.g. --layers 12)")
    unit, vals = values(coefficients, strengths, default="-0.4,0,0.4")
    run(CapabilitiesConfig(out=out, vector=vector, layers=layers, unit=unit, values=vals,
                           model=model,
                           benchmarks=parse_choices(benchmarks, BENCHMARKS, "--benchmarks"),
                           positions=positions, limit=limit, seed=seed, batch_size=batch_size))


def sentiment(
    pair: tuple[str, str] = typer.Option(None, "--pair",
                                         help="ActAdd prompt pair POS NEG, e.g. --pair ' love' "
                                              "' hate' (they must line up token for token)."),
    pad: str = opt.pad(),
    vector: Path = opt.vector(),
    layers: str = opt.layers("6"),
    coefficients: str = opt.coefficients(),
    strengths: str = opt.strengths(help="Default: --coefficients=0,2,5,10 (ActAdd's raw "
                                        "convention; their strengths are printed). "),
    task: str = typer.Option("sentiment", "--task",
                             help="sentiment (--scorer) or toxicity (alt-profanity-check)."),
    scorer: str = typer.Option("classifier", "--scorer",
                               help="Sentiment scorer: classifier (MiniLM + logistic regression "
                                    "on human labels; VADER beside it) or vader alone."),
    mask: str = typer.Option(None, "--mask",
                             help="Comma-separated words whose families are masked for the "
                                  "control score. Default: the --pair words (or an ActAdd "
                                  "vector's); '' for none."),
    prompt_sets: str = typer.Option("neutral,negative", "--prompt-sets",
                                    help="Sentiment prompt sets: neutral,negative."),
    target: str = typer.Option("positive", "--target", help="The sentiment a success moves to."),
    positions: str = typer.Option(None, "--positions",
                                  help="Default: front for position-resolved (ActAdd) vectors, "
                                       "else all. " + opt.POSITIONS_HELP),
    max_new_tokens: int = opt.max_new_tokens(40),
    samples: int = typer.Option(1, "--samples",
                                callback=opt.at_least(1, "a count"),
                                help="Completions per prompt."),
    temperature: float = typer.Option(1.0, "--temperature",
                                      callback=opt.at_least(0, "a temperature"),
                                      help="0 = greedy; > 0 samples (seeded with --seed)."),
    top_p: float = typer.Option(0.9, "--top-p",
                                help="Nucleus sampling mass (0, 1]."),
    model: str = opt.model(),
    engine: str = opt.engine(),
    out: Path = opt.out_dir(),
    limit: int = opt.limit(40),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(8),
) -> None:
    """Sentiment or toxicity of steered completions vs coefficient, with fluency and a verdict.

    --limit is the number of prompts per set (a seeded subset; 0 = all ~3,000; ±0.1 on a shift
    needs ~100). Each shift is also measured with the steering words masked; the verdict asks
    for that masked shift above 0 and a fluency perplexity ratio <= 1.5. Raw coefficients are
    printed with their equivalent strengths.
    """
    from steerlab.eval.protocols.sentiment import SentimentConfig, run

    if coefficients is None and strengths is None:
        coefficients = "0,2,5,10"  # ActAdd's own convention: raw coefficients (Turner et al.)
    unit, vals = values(coefficients, strengths)
    with generation_engine(engine, model):
        run(SentimentConfig(out=out, layers=layers, unit=unit, values=vals, pair=pair,
                            vector=vector, pad=pad, model=model, task=task,
                            prompt_sets=[p.strip() for p in prompt_sets.split(",") if p.strip()],
                            target=target, positions=positions, max_new_tokens=max_new_tokens,
                            samples=samples, temperature=temperature, top_p=top_p, limit=limit,
                            seed=seed, batch_size=batch_size, scorer=scorer,
                            mask=None if mask is None else
                            [w.strip() for w in mask.split(",") if w.strip()]))


def models(
    models: str = typer.Option(..., "--models", help="Comma-separated aliases / ids."),
    data: str = opt.data(),
    depths: str = typer.Option("0.3,0.4,0.5,0.6,0.7", "--depths",
                               help="Relative depths to sweep, e.g. 0.3,0.5 or 0.2:0.8:0.1."),
    strengths: str = opt.strengths(help="Default -0.5,0,0.5. "),
    train_limit: int = opt.train_limit(),
    form: str = opt.answer_format(),
    out: Path = opt.out_dir(),
    limit: int = opt.limit(),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
) -> None:
    """One protocol across model sizes: layer chosen per model on val, reported on test."""
    from steerlab.eval.protocols.models import ModelsConfig, run

    _, vals = values(None, strengths, default="-0.5,0,0.5")
    run(ModelsConfig(out=out, models=[m.strip() for m in models.split(",")], data=data,
                     depths=depths, values=vals, train_limit=train_limit, form=form, limit=limit,
                     seed=seed, batch_size=batch_size))


def defence(
    vector: Path = opt.vector(required=True),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Steered together."),
    strengths: str = opt.strengths(help="Default 0.2,0.4 (0 = unsteered is always measured). "),
    coefficients: str = opt.coefficients(),
    condition: Path = typer.Option(None, "--condition",
                                   help="A condition vector from 'steerlab cast fit': also "
                                        "measure conditional steering."),
    condition_layer: int = typer.Option(None, "--condition-layer",
                                        help="Override the fitted condition layer."),
    threshold: str = typer.Option("auto", "--threshold",
                                  help="The condition's threshold: auto (the fitted one) or a "
                                       "number."),
    suffixes: int = typer.Option(13, "--suffixes",
                                 callback=opt.at_least(0, "a count"),
                                 help="How many of the 13 published GCG suffixes (0 = none)."),
    judge: str = typer.Option("local:qwen2.5-coder-0.5b", "--judge",
                              help="Second-opinion refusal judge (local:ALIAS or "
                                   "http:URL#MODEL), or none."),
    model: str = opt.model(),
    engine: str = opt.engine(),
    max_new_tokens: int = opt.max_new_tokens(48),
    out: Path = opt.out_dir(),
    limit: int = opt.limit(20),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
) -> None:
    """Refusal of AdvBench (plain and with GCG suffixes) vs over-refusal of XSTest's safe
    prompts: unsteered, steered and conditionally steered.

    --limit is the number of AdvBench behaviours and of XSTest prompts (seeded subsets).
    """
    from steerlab.eval.protocols.defence import DefenceConfig, run

    if layers is None:
        raise SteerlabError("give --layers (the refusal vector's layers to steer)")
    unit, vals = values(coefficients, strengths, default="0.2,0.4")
    try:
        chosen = None if threshold.strip().lower() == "auto" else float(threshold)
    except ValueError:
        raise SteerlabError(f"--threshold: expected auto or a number, got {threshold!r}") from None
    with generation_engine(engine, model):
        run(DefenceConfig(out=out, vector=vector, layers=layers, values=vals, unit=unit,
                          model=model, condition=condition, condition_layer=condition_layer,
                          threshold=chosen, suffixes=suffixes, limit=limit,
                          max_new_tokens=max_new_tokens, judge=judge, seed=seed,
                          batch_size=batch_size))


def adversarial(
    vector: Path = opt.vector(required=True),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Steered together."),
    strengths: str = opt.strengths(help="One value, e.g. 0.4. "),
    coefficients: str = opt.coefficients(),
    data: str = opt.data(required=False, default="caa:refusal"),
    objective: str = typer.Option("ab_flip", "--objective",
                                  help="ab_flip (push the A/B answer back to the other letter), "
                                       "answer (log-probability of the not-steered-for answer "
                                       "text) or projection (push the activation's projection "
                                       "on the vector back down)."),
    search: str = typer.Option("epo", "--search",
                               help="epo (a population trading objective against the suffix's "
                                    "cross-entropy) or gcg (objective only)."),
    suffix_length: int = typer.Option(12, "--suffix-length", callback=opt.at_least(1, "a count"),
                                      help="Suffix length in tokens."),
    iterations: int = typer.Option(30, "--iterations", callback=opt.at_least(1, "a count"),
                                   help="Search iterations per item."),
    population: int = typer.Option(4, "--population", callback=opt.at_least(1, "a count"),
                                   help="EPO population size (GCG: multiplies --children)."),
    children: int = typer.Option(16, "--children", callback=opt.at_least(1, "a count"),
                                 help="Candidates per member per iteration."),
    projection_layer: int = typer.Option(None, "--projection-layer",
                                         help="Where the projection objective reads (default: "
                                              "two blocks after the last steered layer)."),
    model: str = opt.model(),
    positions: str = opt.positions(),
    out: Path = opt.out_dir(),
    limit: int = opt.limit(10),
    seed: int = opt.seed(),
) -> None:
    """Search suffixes that reverse the steering on held-out items (EPO or GCG), against the
    same budget of random suffixes; success rates and the suffixes' cross-entropy vs natural
    text."""
    from steerlab.cli.common import one_value
    from steerlab.eval.protocols.adversarial import AdversarialConfig, run

    if layers is None:
        raise SteerlabError("give --layers (the layers the vector steers)")
    unit, vals = values(coefficients, strengths, default="0.4")
    run(AdversarialConfig(out=out, vector=vector, layers=layers,
                          value=one_value(f"--{unit}s", vals), unit=unit, data=data, model=model,
                          objective=objective, method=search, suffix_length=suffix_length,
                          iterations=iterations, population=population, children=children,
                          projection_layer=projection_layer, positions=positions, limit=limit,
                          seed=seed))


def prompting(
    data: str = opt.data(),
    vector: Path = opt.vector(required=True),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " One layer. Default: the layer 'eval "
                                                     "sweep' recommended in the vector's "
                                                     "manifest, else its only layer."),
    coefficients: str = opt.coefficients(),
    strengths: str = opt.strengths(help="One value. Default: the strength 'eval sweep' "
                                        "recommended in the vector's manifest. "),
    instruction: str = typer.Option(None, "--instruction",
                                    help="The behaviour asked for in words (used as the "
                                         "system prompt and the user-turn prefix). Default: "
                                         "made from the behaviour's description (caa:/mwe: "
                                         "names)."),
    prompt_parts: str = typer.Option("system,prefix,fewshot", "--prompt-parts",
                                     help="How the prompt asks: system (system prompt), prefix "
                                          "(before the question), fewshot (train examples)."),
    shots: int = typer.Option(3, "--shots", callback=opt.at_least(0, "a count"),
                              help="Few-shot examples (question → matching answer) drawn from "
                                   "the train split."),
    form: str = opt.answer_format(),
    positions: str = opt.positions(),
    max_new_tokens: int = opt.max_new_tokens(32),
    fluency_limit: int = typer.Option(0, "--fluency-limit",
                                      callback=opt.at_least(0, "an item count (0 = all)"),
                                      help="Answers generated per condition for the fluency "
                                           "cost: a seeded subset of the scored items (0 = "
                                           "all)."),
    judge: str = typer.Option(None, "--judge",
                              help="Also rate every answer: local:ALIAS_OR_PATH, "
                                   "http:BASE_URL#MODEL, or axbench: before either (AxBench's "
                                   "concept/instruction/fluency aggregate, 0..2)."),
    model: str = opt.model(),
    engine: str = opt.engine(),
    out: Path = opt.out_dir(),
    limit: int = opt.limit(40),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
) -> None:
    """Is steering worth it? The vector vs the behaviour asked for by instruction (and both),
    on the same test items with the same scorer, with each one's fluency cost and a verdict.

    --limit is the number of test items (a seeded subset, the one eval sweep scores).
    """
    from steerlab.cli.common import one_value
    from steerlab.eval.protocols.prompting import PromptingConfig, run
    from steerlab.eval.protocols.prompting_inputs import PARTS
    from steerlab.util.parse import parse_choices

    unit, value = None, None
    if coefficients is not None or strengths is not None:
        unit, vals = values(coefficients, strengths)
        value = one_value(f"--{unit}s", vals)
    with generation_engine(engine, model):
        run(PromptingConfig(out=out, data=data, vector=vector, layers=layers, unit=unit,
                            value=value, model=model, instruction=instruction,
                            parts=parse_choices(prompt_parts, PARTS, "--prompt-parts"),
                            shots=shots, form=form, positions=positions,
                            max_new_tokens=max_new_tokens, limit=limit,
                            fluency_limit=fluency_limit, judge=judge, seed=seed,
                            batch_size=batch_size))


COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("sweep", sweep, "steerlab eval sweep --data caa:refusal --layers 2-26:4 "
                     "--strengths=-0.4,0,0.4 --train-limit 160 -o runs/refusal"),
    ("samples", samples, "steerlab eval samples --data caa:refusal --layers 14 --n 1,5,20,80 "
                         "--seeds 3 -o runs/refusal-n"),
    ("ood", ood, "steerlab eval ood --vector agree.safetensors --layers 12 --trait "
                 "agreeableness --strengths=-0.5,0,0.5 --limit 4 -o runs/agree-ood"),
    ("perplexity", perplexity, "steerlab eval perplexity --vector v.safetensors --layers 12 "
                               "--strengths=0,0.1,0.2 -o runs/ppl"),
    ("capabilities", capabilities, "steerlab eval capabilities --vector v.safetensors "
                                   "--layers 12 --limit 100 -o runs/cap"),
    ("sentiment", sentiment, 'steerlab eval sentiment --pair " love" " hate" --layers 6 '
                             "--coefficients=0,2,5,10 -o runs/love"),
    ("models", models, "steerlab eval models --models smollm2-135m,qwen2.5-coder-0.5b "
                       "--data caa:sycophancy -o runs/size"),
    ("defence", defence, "steerlab eval defence --model qwen2.5-coder-0.5b --vector "
                         "refusal.safetensors --layers 12 --strengths=0.2,0.4 --condition "
                         "harm.safetensors -o runs/def"),
    ("adversarial", adversarial, "steerlab eval adversarial --vector refusal.safetensors "
                                 "--layers 12 --strengths 0.4 --data caa:refusal --limit 5 "
                                 "-o runs/adv"),
    ("prompting", prompting, "steerlab eval prompting --data caa:refusal --vector "
                             "runs/refusal/vector.safetensors --layers 14 --strengths 0.4 "
                             "-o runs/refusal-prompting"),
]
