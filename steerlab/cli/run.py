"""``steerlab generate | score | demo``: apply a vector and look at what it does.

Example:
    $ steerlab generate --vector opt.safetensors --layers 10 --strengths=-0.3,0,0.3 "Mondays?"
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from steerlab.cli import options as opt
from steerlab.cli.common import console, one_value, read_prompts, values
from steerlab.errors import SteerlabError


def _layers_for(vec: Any, layers: str | None, n_layers: int, path: Path) -> list[int]:
    """The layers to steer: as given, else the vector's recommended layer, else its only one."""
    from steerlab.util.parse import resolve_layers

    if layers is not None:
        chosen = resolve_layers(layers, n_layers)
        missing = [k for k in chosen if k not in vec.layers]
        if missing:
            raise SteerlabError(f"{path}: no direction for layer(s) {missing}; it has "
                                f"{vec.layers}")
        return chosen
    recommended = (vec.manifest.get("recommended") or {}).get("layer")
    if isinstance(recommended, int) and recommended in vec.layers:
        console.print(f"steering layer {recommended}: the vector's recommended layer "
                      f"({escape(str(vec.manifest['recommended'].get('chosen_by', '')))})")
        return [recommended]
    if len(vec.layers) == 1:
        return list(vec.layers)
    raise SteerlabError(f"{path}: the vector has {len(vec.layers)} layers ({vec.layers[0]}.."
                        f"{vec.layers[-1]}); choose with --layers (steering all of them at once "
                        "rarely works; 'steerlab eval sweep' finds a good one)")


def generate(
    prompts: list[str] = typer.Argument(None, help="One or more prompts."),
    prompts_file: Path = opt.prompts_file(),
    model: str = opt.model(),
    vector: Path = opt.vector(),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Default: the vector's recommended (or "
                             "only) layer. Several layers × several values make a grid."),
    coefficients: str = opt.coefficients(),
    strengths: str = opt.strengths(),
    positions: str = opt.positions(),
    operator: str = opt.operator(),
    max_new_tokens: int = opt.max_new_tokens(),
    chat: bool = typer.Option(True, "--chat/--no-chat",
                              help="Chat-format the prompts (--no-chat: raw text)."),
    system: str = opt.system(),
    temperature: float = opt.temperature(),
    top_p: float = opt.top_p(),
    top_k: int = opt.top_k(),
    seed: int = opt.seed(),
    compare: bool = typer.Option(True, "--compare/--no-compare",
                                 help="Also show the unsteered output."),
    batch_size: int = opt.batch_size(8),
) -> None:
    """Generate with and without steering; several layers or values give a side-by-side grid."""
    import steerlab
    from steerlab.scoring.generate import Sampling
    from steerlab.util.vocabulary import Unit, parse_operator

    texts: list[Any] = list(prompts or [])
    if prompts_file is not None:
        texts += read_prompts(prompts_file)
    if not texts:
        raise SteerlabError("give prompts as arguments or with --prompts FILE")
    sampling = Sampling(temperature, top_p, top_k, seed)  # bad sampling values fail before load
    op = parse_operator(operator)  # and a bad operator
    lm = steerlab.load_model(model)
    cells: list[tuple[int | None, float]] = [(None, 0.0)]
    unit: Unit = "strength"
    if vector is not None:
        vec = steerlab.SteeringVector.load(vector, model=lm)
        if coefficients is None and strengths is None and operator == "add":
            raise SteerlabError("give --strengths (e.g. --strengths=0.3, multiples of the "
                                "residual norm) or --coefficients")
        unit, amounts = values(coefficients, strengths, default="1" if operator != "add"
                               else None)
        chosen = _layers_for(vec, layers, lm.n_layers, vector)
        cells = ([(None, 0.0)] if compare else []) + [(k, v) for k in chosen for v in amounts]
        from steerlab.eval.behaviour import explain_values

        explain_values(vec, chosen, unit, amounts)
    elif layers or coefficients or strengths:
        raise SteerlabError("--layers/--strengths/--coefficients need --vector")
    rows, specs = [], []
    for prompt in texts:
        for layer, value in cells:
            rows.append(prompt)
            specs.append([] if layer is None else [steerlab.SteeringSpec.at(
                vec, [layer], value, unit=unit, positions=positions, operator=op)])
    outputs = steerlab.generate(lm, rows, row_steering=specs, max_new_tokens=max_new_tokens,
                                chat=chat, system=system, batch_size=batch_size,
                                do_sample=not sampling.greedy, temperature=temperature,
                                top_p=top_p, top_k=top_k, seed=seed, progress=True)
    short = "c" if unit == "coefficient" else "s"
    for i, prompt in enumerate(texts):
        shown = prompt if isinstance(prompt, str) else str(prompt[-1].get("content", prompt))
        mine = outputs[i * len(cells):(i + 1) * len(cells)]
        if len(cells) <= 2:
            console.rule(escape(shown[:120]))
            for (layer, value), text in zip(cells, mine, strict=True):
                label = "unsteered" if layer is None else f"layer {layer}, {short}={value:+g}"
                console.print(f"[bold]{label}:[/bold] {escape(text)}")
            continue
        table = Table(title=escape(shown[:120]), show_lines=True)
        table.add_column("steering", no_wrap=True)
        table.add_column("output", overflow="fold")
        for (layer, value), text in zip(cells, mine, strict=True):
            table.add_row("unsteered" if layer is None else f"L{layer} {short}={value:+g}",
                          escape(text))
        console.print(table)


def score(
    vector: Path = opt.vector(required=True),
    data: str = opt.data(),
    model: str = opt.model(),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Default: the vector's recommended (or "
                             "only) layer; several layers are steered together."),
    split: str = opt.split("test"),
    coefficients: str = opt.coefficients(),
    strengths: str = opt.strengths(),
    positions: str = opt.positions(),
    form: str = opt.answer_format(),
    limit: int = opt.limit(),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
    out: Path = opt.out_file("the results as JSON (optional)", required=False),
) -> None:
    """Behaviour score (p(matching) / (p(matching) + p(other))) at several values, with 95 % CIs."""
    import math

    import steerlab
    from steerlab.eval.behaviour import check_format, explain_values

    unit, amounts = values(coefficients, strengths, default="-0.4,0,0.4")
    check_format(form)
    if out is not None:
        from steerlab.util.io import check_writable

        check_writable(out, what="JSON file")
    dataset = steerlab.load_dataset(data, split=split, seed=seed)
    if dataset.kind == "pairs":
        if form == "ab":
            raise SteerlabError(f"{data}: plain contrast pairs have no A/B letters; use "
                                "--format open (their two texts are scored as replies)")
        dataset = dataset.as_answers()
    elif form == "open":
        dataset = dataset.open_answers()
        if not len(dataset):
            raise SteerlabError(f"{data}: no item has parseable 'Choices: (A) ... (B) ...' "
                                "options for --format open; use --format ab")
    total = len(dataset)
    if limit:
        dataset = dataset.subset(limit, seed)
    console.print(f"scoring {len(dataset)} of {total} {split} items of {escape(data)} "
                  f"({form} format)")
    lm = steerlab.load_model(model)
    vec = steerlab.SteeringVector.load(vector, model=lm)
    chosen = _layers_for(vec, layers, lm.n_layers, vector)
    explain_values(vec, chosen, unit, amounts)
    sweep = steerlab.sweep_ab if form == "ab" else steerlab.sweep_answers
    results = sweep(lm, dataset, vec, [tuple(chosen)], amounts, unit=unit, positions=positions,
                    batch_size=batch_size, progress=True)
    key = chosen[0] if len(chosen) == 1 else tuple(chosen)
    table = Table(title=escape(f"{data} ({split}, {form}), layer(s) {','.join(map(str, chosen))}, "
                               f"{vec.method}"),
                  caption="95 % Student-t interval over items (clipped to [0, 1])")
    for col in (unit, "score [95% CI]", "mean propensity", "n"):
        table.add_column(col, justify="right")
    rows = []
    for value in amounts:
        res = results[(key, float(value))]
        low, high = res.ci95
        table.add_row(f"{value:+g}", escape(str(res).rsplit(" (n=", 1)[0]),
                      f"{res.mean_propensity:+.3f}", str(res.n))
        rows.append({unit: value, "score": res.mean,
                     "ci_low": None if math.isnan(low) else low,
                     "ci_high": None if math.isnan(high) else high,
                     "propensity": res.mean_propensity, "n": res.n})
    console.print(table)
    if out is not None:
        from steerlab.util.io import write_json

        write_json(out, rows, what="JSON")
        console.print(f"wrote {escape(str(out))}")


def demo(
    model: str = opt.model(),
    layers: str = opt.layers("10"),
    strengths: str = opt.strengths(help="One strength s: the demo compares −s, 0 and +s, "),
) -> None:
    """Optimism steering on the built-in data: generations side by side and held-out scores."""
    from steerlab.eval.protocols.demo import run_demo
    from steerlab.util.parse import parse_values

    strength = one_value("--strengths", parse_values(strengths or "0.3", "--strengths"))
    try:
        layer = int(layers)
    except ValueError:
        raise SteerlabError(f"--layers: the demo steers one layer (an index), got "
                            f"{layers!r}") from None
    run_demo(model=model, layer=layer, strength=strength, console=console)


COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("generate", generate, 'steerlab generate --vector opt.safetensors --layers 10 '
                           '--strengths=-0.3,0.3 "What do you think about Mondays?"'),
    ("score", score, "steerlab score --vector refusal.safetensors --layers 14 --data caa:refusal "
                     "--strengths=-0.4,0,0.4"),
    ("demo", demo, "steerlab demo --layers 10 --strengths=0.3"),
]
