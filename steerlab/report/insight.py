"""Insight views of a steering vector: what it is, where it lights up, what it separates.

The numbers come from :mod:`steerlab.eval.insight` (vector geometry, the recorded forwards,
PCA and separation); this module draws them. Its names are re-exported here.

Without a model (from the vector file alone):

* :func:`norm_figure` — the vector's norm per layer against the mean residual-stream norm
  there (from the manifest's ``layer_norms`` / ``resid_norms``) and their ratio;
* :func:`layer_cosines` — cosine between the vector's directions at each pair of its layers;
* :func:`vector_cosines` — cosine between several vectors at the layers they share.

With a model:

* :func:`token_projections` — per token of each prompt, the residual stream at the vector's
  site and layer projected onto the unit direction: token i's value is read at position i
  (the block output *at* that token, never the next one); :func:`token_block` puts all prompts
  on one shared diverging scale;
* :func:`pair_activations` + :func:`pca_figure` — the answer-token activations of contrast
  data at one layer, PCA'd and marked by behaviour (matching / not) and by answer letter
  ((A) / (B)): when the first component follows the letter rather than the behaviour, the
  vector has learnt the letter (the A/B confound).

Example:
    >>> import torch
    >>> from steerlab.vector import SteeringVector
    >>> v = SteeringVector.from_directions({1: torch.ones(4), 2: -torch.ones(4)})
    >>> layer_cosines(v)[1]
    [[1.0, -1.0], [-1.0, 1.0]]
"""


from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlab.eval import figures as fg
from steerlab.eval.insight import (
    PairActivations,
    TokenRow,
    common_layers,
    direction,
    layer_cosines,
    norms,
    pair_activations,
    pca,
    separation,
    token_projections,
    vector_cosines,
)
from steerlab.report.page import Figure, Section, Table, Token, TokenBlock, TokenLine, text_of
from steerlab.vector import SteeringVector, cosine

__all__ = ["MIN_PAIRS", "PairActivations", "TokenRow", "common_layers", "cross_vector_section",
           "direction", "layer_cosines", "norm_figure", "norms", "pair_activations", "pca",
           "pca_figure", "scale_limit", "separation", "short_name", "token_block",
           "token_projections", "vector_cosines", "vector_provenance", "vector_section",
           "vector_warnings"]

MIN_PAIRS = 80


def short_name(name: str, width: int = 28) -> str:
    """A vector's label for an axis: no ``.safetensors``, at most ``width`` characters.

    Example:
        >>> short_name("runs/a/vector.safetensors"), short_name("x" * 40, 10)
        ('runs/a/vector', 'xxxxxxxxx…')
    """
    name = name.removesuffix(".safetensors")
    return name if len(name) <= width else name[: width - 1] + "…"


def _figure(prefix: str, count: list[int], title: str, panels: Sequence[fg.Panel], *, n: str,
            band: str, model: str, layer: str, note: str = "") -> Figure:
    count[0] += 1
    fid = f"{prefix}-f{count[0]}"
    return Figure(fid, title, fg.draw(panels, salt=fid), n=n, band=band, model=model,
                  layer=layer, note=note)


def _pairs_of(vector: SteeringVector) -> Any:
    dataset = vector.manifest.get("dataset") or {}
    return dataset.get("n_pairs") if isinstance(dataset, dict) else None


def vector_provenance(vector: SteeringVector, path: Path | None = None) -> list[tuple[str, str]]:
    """Where a vector came from: file + sha, model + revision, data + sha + pairs, method."""
    from steerlab.eval.run import file_sha256

    m = vector.manifest
    dataset = m.get("dataset") if isinstance(m.get("dataset"), dict) else {}
    out: list[tuple[str, str]] = []
    if path is not None:
        out.append(("file", str(path)))
        if path.is_file():
            out.append(("sha256", file_sha256(path)))
    out += [("model", f"{text_of(m.get('model_id'))} (revision "
                      f"{text_of(m.get('model_revision'))})"),
            ("method", f"{vector.method}, site {vector.site}, read at "
                       f"{text_of(m.get('read_position'))}"),
            ("layers", f"{len(vector.layers)} of {text_of(m.get('n_layers'))}: "
                       f"{text_of(vector.layers)}"),
            ("hidden size", str(vector.hidden_size))]
    if dataset:
        out.append(("data", f"{text_of(dataset.get('name'))} ({text_of(dataset.get('split'))}, "
                            f"{text_of(dataset.get('n_pairs'))} pairs, sha256 "
                            f"{str(dataset.get('sha256') or '–')[:16]})"))
    for parent in vector.parents() if m.get("parents") else []:
        data = parent.get("dataset") if isinstance(parent.get("dataset"), dict) else {}
        out.append(("part", f"{parent.get('weight', 1.0):+g} × {text_of(parent.get('method'))} "
                            f"of {text_of((data or {}).get('name'))}"))
    if m.get("recommended"):
        out.append(("recommended", text_of(m.get("recommended"))))
    out.append(("created", f"{text_of(m.get('created'))} by steerlab "
                           f"{text_of(m.get('steerlab_version'))}"))
    return out


def vector_section(vector: SteeringVector, *, name: str, prefix: str,
                   path: Path | None = None) -> Section:
    """The geometry section of one vector: provenance, norms vs residual norm, cross-layer
    cosine, and its warnings (few pairs, no calibration, a vector longer than the stream)."""
    count = [0]
    model = text_of(vector.manifest.get("model_id"))
    pairs = _pairs_of(vector)
    section = Section(prefix, f"vector · {name}", "vector",
                      summary=f"{vector.method} vector at {len(vector.layers)} layer(s), site "
                              f"{vector.site}", provenance=vector_provenance(vector, path))
    section.figures.append(norm_figure(vector, prefix, count))
    layers, matrix = layer_cosines(vector)
    if len(layers) >= 2:
        section.figures.append(_figure(
            prefix, count, "cosine between the vector's layers",
            [fg.Heat("cross-layer cosine", matrix, [str(k) for k in layers],
                     [str(k) for k in layers], xlabel="layer", ylabel="layer", cbar="cosine",
                     vmin=-1.0, vmax=1.0, digits=2)],
            n=f"{text_of(pairs)} pairs (one direction per layer)",
            band="none (exact cosines)", model=model, layer=text_of(layers)))
    else:
        section.notes.append("one layer only: no cross-layer cosine map")
    section.tables.append(_layer_table(vector))
    section.warnings += vector_warnings(vector)
    return section


def norm_figure(vector: SteeringVector, prefix: str, count: list[int]) -> Figure:
    """Vector norm and mean residual norm per layer (log axis), and their ratio."""
    layers, vnorm, resid = norms(vector)
    xs = [float(k) for k in layers]
    lines = [fg.Line("vector norm", xs, vnorm)]
    panels: list[fg.Panel] = []
    if any(r is not None for r in resid):
        lines.append(fg.Line("mean residual norm", xs, resid, dashed=True))
    panels.append(fg.Curves("norm per layer", "layer", "L2 norm (log scale)", lines,
                            logy=all(v > 0 for v in vnorm), integer_x=True))
    if any(r is not None for r in resid):
        ratio = [None if r is None or not r else v / r for v, r in zip(vnorm, resid,
                                                                        strict=True)]
        panels.append(fg.Curves("vector / residual norm", "layer", "ratio (strength of "
                                "coefficient 1)", [fg.Line("ratio", xs, ratio)], hline=1.0,
                                integer_x=True))
    return _figure(prefix, count, "vector norm vs the residual stream's", panels,
                   n=f"{text_of(_pairs_of(vector))} pairs; residual norm: mean over the "
                     "extraction tokens", band="none (exact norms)",
                   model=text_of(vector.manifest.get("model_id")), layer=text_of(layers))


def _layer_table(vector: SteeringVector) -> Table:
    layers, vnorm, resid = norms(vector)
    stats = vector.manifest.get("stats") or {}
    names = sorted({k for s in stats.values() if isinstance(s, dict) for k in s
                    if isinstance(s[k], int | float)} - {"n_pairs", "norm"})[:4]
    rows = []
    for k, v, r in zip(layers, vnorm, resid, strict=True):
        own = stats.get(str(k), {}) if isinstance(stats, dict) else {}
        rows.append([str(k), f"{v:.4g}", text_of(r), "–" if not r else f"{v / r:.3f}",
                     *(text_of(own.get(n)) if isinstance(own, dict) else "–" for n in names)])
    return Table("per layer", ["layer", "norm", "resid norm", "norm / resid", *names], rows)


def vector_warnings(vector: SteeringVector) -> list[str]:
    """What a reader should know before steering with this vector.

    Example:
        >>> import torch
        >>> v = SteeringVector.from_directions({3: torch.ones(4)}, resid_norms={"3": 1.0},
        ...                                    dataset={"n_pairs": 12})
        >>> [w.split(":")[0] for w in vector_warnings(v)]
        ['few pairs', 'norm blow-up']
    """
    out = []
    pairs = _pairs_of(vector)
    if isinstance(pairs, int) and pairs < MIN_PAIRS and vector.method != "actadd":
        out.append(f"few pairs: extracted from {pairs} contrast pairs, fewer than the ~"
                   f"{MIN_PAIRS} where effects plateau (CAE finding 2)")
    layers, vnorm, resid = norms(vector)
    over = [(k, v / r) for k, v, r in zip(layers, vnorm, resid, strict=True) if r and v > r]
    if over:
        k, ratio = max(over, key=lambda x: x[1])
        out.append(f"norm blow-up: the vector is longer than the mean residual stream at "
                   f"{len(over)} layer(s) (layer {k}: {ratio:.2f}×), so even coefficient 1 "
                   "overwhelms the activations there")
    if all(r is None for r in resid):
        out.append("no calibration: the manifest has no residual norms, so strengths (the "
                   "unit that transfers across layers and models) are not available")
    return out


def cross_vector_section(vectors: Sequence[SteeringVector], names: Sequence[str], *,
                         prefix: str, layer: int | None = None) -> Section:
    """Cosine between several vectors: the matrix at one shared layer, and each pair across
    the shared layers."""
    section = Section(prefix, "cosine between vectors", "vectors",
                      summary=f"{len(vectors)} vectors: {', '.join(names)}")
    shared = common_layers(vectors)
    if not shared:
        section.warnings.append("the vectors share no layer (or differ in width): no "
                                "cosine to compute")
        return section
    at = layer if layer is not None and layer in shared else shared[len(shared) // 2]
    names = [short_name(n) for n in names]
    count = [0]
    panels: list[fg.Panel] = [fg.Heat(f"at layer {at}", vector_cosines(vectors, at),
                                      list(names), list(names), cbar="cosine", vmin=-1.0,
                                      vmax=1.0)]
    if len(shared) > 1:
        pairs = [(i, j) for i in range(len(vectors)) for j in range(i + 1, len(vectors))]
        grid = [[cosine(direction(vectors[i], k), direction(vectors[j], k)) for k in shared]
                for i, j in pairs]
        panels.append(fg.Heat("each pair across layers", grid,
                              [f"{names[i]} · {names[j]}" for i, j in pairs],
                              [str(k) for k in shared], xlabel="layer", cbar="cosine",
                              vmin=-1.0, vmax=1.0))
    models = sorted({text_of(v.manifest.get("model_id")) for v in vectors})
    section.figures.append(_figure(
        prefix, count, "cross-vector cosine", panels, n=f"{len(vectors)} vectors",
        band="none (exact cosines)", model=", ".join(models),
        layer=f"{at} (matrix); {text_of(shared)} (pairs)"))
    return section


# ---------------------------------------------------------------------------------------------
# per-token projections (the numbers: steerlab.eval.insight.token_projections)


def scale_limit(rows: Sequence[TokenRow]) -> float:
    """The shared scale's limit: the largest |value| over every token except each prompt's
    first (its stream is an outlier in most models; it still shows its own value on hover and
    takes the end colour if it is beyond the limit).

    Example:
        >>> scale_limit([TokenRow("a", [1, 2], ["x", "y"], ["x", "y"], [50.0, -2.0])])
        2.0
    """
    rest = [abs(v) for r in rows for v in (r.values[1:] if len(r.values) > 1 else r.values)
            if math.isfinite(v)]
    limit = max(rest, default=0.0)
    return limit if limit > 0 else 1.0


def token_block(rows: Sequence[TokenRow], *, layer: int, title: str = "",
                limit: float | None = None) -> TokenBlock:
    """All prompts on one diverging scale: token i coloured by its own value.

    Example:
        >>> block = token_block([TokenRow("p", [5, 6], ["a", "b"], ["a", "b"], [0.0, 2.0])],
        ...                     layer=1)
        >>> [t.colour == fg.diverging_colour(t.value, block.limit) for t in block.lines[0].tokens]
        [True, True]
    """
    lim = scale_limit(rows) if limit is None else limit
    lines = []
    for row in rows:
        tokens = [Token(text, value, fg.diverging_colour(value, lim), fg.text_colour(value, lim),
                        f"token {i}: {raw!r} · projection {value:+.4g}")
                  for i, (text, raw, value) in enumerate(zip(row.texts, row.raw, row.values,
                                                             strict=True))]
        lines.append(TokenLine(row.label, tokens))
    stops = [(fg.diverging_colour(f * lim, lim), f"{f * lim:+.3g}")
             for f in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    return TokenBlock(title or f"projection onto the vector at layer {layer}", layer, lim,
                      lines, legend=stops,
                      note=f"h·v̂ at each token (block output {layer}); one scale for all "
                           f"tokens and prompts, ±{lim:.3g} = the largest |value| past each "
                           "prompt's first token; hover a token for its value")


# ---------------------------------------------------------------------------------------------
# PCA of contrast activations (the numbers: steerlab.eval.insight.pair_activations, separation)


def pca_figure(pairs: PairActivations, vector: SteeringVector | None, *, prefix: str,
               count: list[int], data: str, model: str) -> tuple[Figure, list[str]]:
    """PCA of positive/negative activations marked by answer letter, and the projection onto
    the vector per group; with the warnings it raises (the letter confound)."""
    coords, share = pca(pairs.acts)
    proj = ((pairs.acts.double() @ (direction(vector, pairs.layer) /
                                     direction(vector, pairs.layer).norm())).tolist()
            if vector is not None and pairs.layer in vector.directions else None)
    groups: dict[tuple[bool, str | None], list[int]] = {}
    for i, (m, letter) in enumerate(zip(pairs.matching, pairs.letters, strict=True)):
        groups.setdefault((m, letter), []).append(i)
    markers = {"A": "o", "B": "^"}
    scatter, strip, ticks = [], [], []
    order = sorted(groups, key=lambda g: (not g[0], str(g[1])))
    for row, (m, letter) in enumerate(order):
        idx = groups[(m, letter)]
        name = ("matching" if m else "not matching") if pairs.read == "answer_token" else (
            "positive" if m else "negative")
        label = f"{name} ({letter})" if letter else name
        colour = fg.PALETTE[3] if m else fg.PALETTE[0]
        marker = markers.get(letter or "", "s" if letter else "o")
        scatter.append(fg.Points(label, [float(coords[i, 0]) for i in idx],
                                 [float(coords[i, 1]) for i in idx], colour, marker))
        if proj is not None:
            ticks.append((float(row), label))
            strip.append(fg.Points(label, [proj[i] for i in idx],
                                   [row + 0.25 * ((j % 5) - 2) / 2 for j in range(len(idx))],
                                   colour, marker))
    panels: list[fg.Panel] = [fg.Scatter(
        f"PCA at layer {pairs.layer}", f"PC1 ({share[0]:.0%} of variance)",
        f"PC2 ({share[1]:.0%})" if len(share) > 1 else "PC2", scatter)]
    if strip:
        panels.append(fg.Scatter("projection onto the vector", "h · v̂ (unit direction)",
                                 "", strip, yticks=ticks))
    sep = separation(pairs, vector)
    warnings = []
    note = f"PC1 follows behaviour with |r| = {abs(sep['pc1_behaviour']):.2f}"
    if "pc1_letter" in sep:
        note += f" and the answer letter with |r| = {abs(sep['pc1_letter']):.2f}"
        if abs(sep["pc1_letter"]) > abs(sep["pc1_behaviour"]):
            warnings.append(f"letter confound: at layer {pairs.layer} the first principal "
                            "component of the answer-token activations follows the answer "
                            f"letter (|r| = {abs(sep['pc1_letter']):.2f}) more than the "
                            f"behaviour (|r| = {abs(sep['pc1_behaviour']):.2f})")
        if "vector_letter" in sep:
            note += (f"; the vector's projection: behaviour |r| = "
                     f"{abs(sep['vector_behaviour']):.2f}, letter |r| = "
                     f"{abs(sep['vector_letter']):.2f}")
            if abs(sep["vector_letter"]) > abs(sep["vector_behaviour"]):
                warnings.append("letter confound: the vector's projection separates the "
                                "answer letters better than the behaviour")
        share_key = next((k for k in sep if k.startswith("matching_share_")), None)
        if share_key and not 0.3 <= sep[share_key] <= 0.7:
            warnings.append(f"letter bias: the matching answer is ({share_key[-1]}) in "
                            f"{sep[share_key]:.0%} of items, so a mean difference also "
                            "learns the letter")
    n_items = len(pairs.matching) // 2
    figure = _figure(prefix, count, f"activations of {data} at layer {pairs.layer}", panels,
                     n=f"{n_items} items ({2 * n_items} activations)",
                     band="none (one point per activation)", model=model,
                     layer=str(pairs.layer), note=note)
    return figure, warnings
