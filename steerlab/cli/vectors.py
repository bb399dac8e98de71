"""``steerlab extract | pair | info``: make vectors and look inside them.

Example:
    $ steerlab extract --data caa:refusal --layers 8-20 -o refusal.safetensors
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from steerlab.cli import options as opt
from steerlab.cli.common import console


def extract(
    model: str = opt.model(),
    data: str = opt.data(),
    method: str = opt.method(),
    layers: str = opt.layers("all"),
    site: str = typer.Option(None, "--site",
                             help="block_output (default) or block_input (ActAdd's resid_pre)."),
    split: str = typer.Option(None, "--split",
                              help="train | val | test | all (default: train for caa:/mwe: "
                                   "data, whose val/test stay held out; all of anything else)."),
    limit: int = opt.limit(),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
    system: str = opt.system(),
    out: Path = opt.out_file("the vector (.safetensors)"),
) -> None:
    """Extract a steering vector from contrast data (A/B items or positive/negative pairs)."""
    import steerlab
    from steerlab.data.loaders import default_split
    from steerlab.util.io import check_writable
    from steerlab.util.vocabulary import parse_site

    check_writable(out, what="vector")
    chosen = split or default_split(data)
    dataset = steerlab.load_dataset(data, split=chosen, seed=seed)  # bad data fails first
    total = len(dataset)
    if limit:
        dataset = dataset.subset(limit, seed)
    if split is None and chosen == "train":
        why = ("its train split: the default for caa:/mwe: data, whose val/test items stay "
               "held out (--split all for everything)")
    elif split is None:
        why = "all its items (the default for your own files and builtin: data)"
    else:
        why = f"the {chosen} split (--split {chosen})"
    console.print(f"using {len(dataset)} of {total} items of {escape(data)}: {why}"
                  f"{f'; a seeded subset (--limit {limit})' if limit and limit < total else ''}")
    where = None if site is None else parse_site(site, "--site")  # before the model loads
    lm = steerlab.load_model(model)
    vec = steerlab.extract(lm, dataset, method=method, layers=layers, site=where,
                           batch_size=batch_size, system=system)
    vec.save(out)
    console.print(f"wrote {escape(str(out))}: {escape(repr(vec))} ({len(dataset)} pairs, "
                  f"{vec.manifest['extract_seconds']:.1f} s)")


def pair(
    positive: str = typer.Argument(..., help="The positive prompt, e.g. ' love'."),
    negative: str = typer.Argument(..., help="The negative prompt, e.g. ' hate'."),
    model: str = opt.model(),
    layers: str = opt.layers("6"),
    pad: str = opt.pad(),
    out: Path = opt.out_file("the vector (.safetensors)"),
) -> None:
    """ActAdd: a position-resolved vector from one prompt pair (applied with --positions front).

    The prompts must line up token for token (identical or empty ones are refused); the
    tokenizer's document-start token goes in front of both, so row 0 is its (zero) difference
    and generation with --positions front puts the same token in front of each prompt."""
    import steerlab
    from steerlab.data.formats import ContrastPair, check_pair
    from steerlab.extraction import check_pad
    from steerlab.util.io import check_writable

    check_pair(ContrastPair(positive, negative), "pair")  # before loading the model
    check_pad(pad)
    check_writable(out, what="vector")
    lm = steerlab.load_model(model)
    vec = steerlab.extract(lm, (positive, negative), method="actadd", layers=layers, pad=pad)
    vec.save(out)
    console.print(f"wrote {escape(str(out))}: {escape(repr(vec))}")
    _print_rows(vec.manifest)


def _print_rows(manifest: Mapping[str, Any]) -> None:
    """ActAdd's token rows (row 0 first), as recorded at extraction."""
    rows = manifest.get("pair_tokens") or []
    for name, tokens in zip(("positive", "negative"), rows, strict=False):
        console.print(f"{name} rows: {escape(' | '.join(repr(t) for t in tokens))}")


def info(
    vector: Path = typer.Argument(..., help="A steering vector (.safetensors)."),
    model: str = typer.Option(None, "--model", help="Also check the vector fits this model."),
) -> None:
    """The vector's provenance and a per-layer table (norms, calibration, extraction stats)."""
    import json

    from steerlab.vector import SteeringVector

    vec = SteeringVector.load(vector)
    if model:
        import steerlab

        vec.check_model(steerlab.load_model(model), source=str(vector))
    m = vec.manifest
    dataset = m.get("dataset") or {}
    console.print(f"[bold]{escape(str(vector))}[/bold]: {escape(vec.method)} vector, site "
                  f"{vec.site}, d={vec.hidden_size}, {len(vec.layers)} layer(s) of "
                  f"{m.get('n_layers', '?')}; model {escape(str(m.get('model_id')))} "
                  f"(revision {escape(str(m.get('model_revision') or '?'))[:16]})")
    if dataset:
        console.print(f"data: {escape(str(dataset.get('name')))} ({dataset.get('split')}, "
                      f"{dataset.get('n_pairs')} pairs, sha256 "
                      f"{str(dataset.get('sha256') or '?')[:16]}), read at "
                      f"{m.get('read_position')}")
    parents = m.get("parents")
    if isinstance(parents, list) and parents:
        for p in vec.parents():
            name = (p.get("dataset") or {}).get("name") if isinstance(p.get("dataset"),
                                                                      dict) else None
            console.print(f"  part: {p.get('weight', 1.0):+g} × {escape(str(p.get('method')))} "
                          f"of {escape(str(name))}")
    _print_rows(m)
    if m.get("recommended"):
        console.print(f"recommended: {escape(json.dumps(m['recommended']))}")
    stats = m.get("stats") or {}
    stat_names = sorted({k for s in stats.values() if isinstance(s, dict) for k in s} -
                        {"n_pairs", "norm"})
    table = Table(title="per layer (vector norm vs the mean residual-stream norm there)",
                  box=box.SIMPLE_HEAD)
    for col in ("layer", "norm", "resid norm", "norm / resid", *stat_names):
        table.add_column(col, justify="right")
    for layer in sorted(vec.layers):
        norm = float(vec.directions[layer].norm(dim=-1).mean())
        resid = vec.resid_norm(layer)
        layer_stats = stats.get(str(layer), {}) if isinstance(stats, dict) else {}
        table.add_row(str(layer), f"{norm:.3g}", "–" if resid is None else f"{resid:.3g}",
                      "–" if not resid else f"{norm / resid:.3f}",
                      *(f"{layer_stats[k]:.3g}" if isinstance(layer_stats.get(k), int | float)
                        else "–" for k in stat_names))
    console.print(table)
    console.print(f"created {m.get('created')} by steerlab {m.get('steerlab_version')}; "
                  f"format {m.get('format_version')}")


COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("extract", extract,
     "steerlab extract --data caa:refusal --layers 8-20 -o refusal.safetensors"),
    ("pair", pair, 'steerlab pair " love" " hate" --layers 6 -o love.safetensors'),
    ("info", info, "steerlab info refusal.safetensors"),
]
