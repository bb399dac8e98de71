"""What a steering vector is and what it separates, as numbers: the maths under the report's
insight views (:mod:`steerlab.report.insight` draws them).

Without a model (from the vector alone): :func:`direction` (one [d] direction per layer),
:func:`norms` (the vector's and the residual stream's norm per layer), :func:`layer_cosines`,
:func:`vector_cosines` and :func:`common_layers`.

With a model (one recorded forward, no steering):

* :func:`token_projections` — per token of each prompt, the residual stream at the vector's
  site and layer projected onto the unit direction: token i's value is read at position i
  (the block output *at* that token, never the next one);
* :func:`pair_activations` + :func:`separation` — the answer-token activations of contrast
  data at one layer, their PCA (:func:`pca`) and how strongly PC1 and the vector's projection
  follow the behaviour (matching / not) versus the answer letter ((A) / (B)).

Example:
    >>> import torch
    >>> v = SteeringVector.from_directions({1: torch.ones(4), 2: -torch.ones(4)})
    >>> layer_cosines(v)[1]
    [[1.0, -1.0], [-1.0, 1.0]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerlab.util.vocabulary import Site
from steerlab.vector import SteeringVector, cosine


def direction(vector: SteeringVector, layer: int) -> torch.Tensor:
    """The vector's [d] direction at ``layer`` (a position-resolved vector: its row mean).

    Example:
        >>> v = SteeringVector.from_directions({0: torch.tensor([[1.0, 0.0], [3.0, 0.0]])})
        >>> direction(v, 0).tolist()
        [2.0, 0.0]
    """
    tensor = vector.directions[layer].double()
    return tensor.mean(0) if tensor.ndim == 2 else tensor


def norms(vector: SteeringVector) -> tuple[list[int], list[float], list[float | None]]:
    """Layers, the vector's norm at each, and the mean residual norm there (None if unknown).

    Example:
        >>> v = SteeringVector.from_directions({3: torch.ones(4)}, resid_norms={"3": 8.0})
        >>> norms(v)
        ([3], [2.0], [8.0])
    """
    layers = vector.layers
    return (layers, [float(vector.directions[k].norm(dim=-1).mean()) for k in layers],
            [vector.resid_norm(k) for k in layers])


def layer_cosines(vector: SteeringVector) -> tuple[list[int], list[list[float]]]:
    """The vector's layers and the cosine matrix of its directions across them."""
    layers = vector.layers
    dirs = [direction(vector, k) for k in layers]
    return layers, [[round(cosine(a, b), 6) for b in dirs] for a in dirs]


def vector_cosines(vectors: Sequence[SteeringVector], layer: int) -> list[list[float]]:
    """Cosine matrix of several vectors at one layer they all have.

    Example:
        >>> a = SteeringVector.from_directions({1: torch.tensor([1.0, 0.0])})
        >>> b = SteeringVector.from_directions({1: torch.tensor([1.0, 1.0])})
        >>> [[round(x, 3) for x in row] for row in vector_cosines([a, b], 1)]
        [[1.0, 0.707], [0.707, 1.0]]
    """
    dirs = [direction(v, layer) for v in vectors]
    return [[cosine(a, b) for b in dirs] for a in dirs]


def common_layers(vectors: Sequence[SteeringVector]) -> list[int]:
    """Layers every vector has (and the same width at)."""
    if not vectors or len({v.hidden_size for v in vectors}) != 1:
        return []
    shared = set(vectors[0].layers)
    for v in vectors[1:]:
        shared &= set(v.layers)
    return sorted(shared)


@dataclass
class TokenRow:
    """One prompt: its token ids, each token's display text, and each token's own value."""

    label: str
    ids: list[int]
    texts: list[str]
    raw: list[str]
    values: list[float]


def _token_text(tokenizer: Any, token_id: int) -> tuple[str, str]:
    raw = tokenizer.convert_ids_to_tokens(int(token_id))
    text = tokenizer.decode([int(token_id)], skip_special_tokens=False,
                            clean_up_tokenization_spaces=False)
    return (text if text else str(raw)), str(raw)


def token_projections(lm: Any, vector: SteeringVector, layer: int, prompts: Sequence[Any], *,
                      chat: bool = True, system: str | None = None) -> list[TokenRow]:
    """Per token of each prompt: the residual stream at the vector's site and ``layer``,
    projected onto the vector's unit direction (``h_i · v̂``), read at that very token.

    Example:
        >>> rows = token_projections(lm, vec, 1, ["I love it"], chat=False)  # doctest: +SKIP
        >>> len(rows[0].values) == len(rows[0].ids)                         # doctest: +SKIP
        True
    """
    from steerlab.extraction.record import record
    from steerlab.model.prompts import prompt_ids

    d = direction(vector, layer)
    if float(d.norm()) == 0.0:
        raise ValueError(f"the vector is zero at layer {layer}")
    unit = (d / d.norm()).float()
    rows = []
    for index, prompt in enumerate(prompts):
        ids, _ = prompt_ids(lm.tokenizer, prompt, chat=chat, system=system)
        batch = next(iter(record(lm.model, [ids], [layer], site=vector.site, read="all",
                                 batch_size=1, pad_id=lm.pad_id)))
        acts = batch.acts[layer][0]  # [T, d]: row i is the stream at token i
        values = [float(x) for x in (acts.float() @ unit).tolist()]
        texts, raws = zip(*(_token_text(lm.tokenizer, t) for t in ids), strict=True)
        label = prompt if isinstance(prompt, str) else " / ".join(
            str(m.get("content", "")) for m in prompt)
        rows.append(TokenRow(f"{index + 1}. {label[:80]}", list(ids), list(texts), list(raws),
                             values))
    return rows


@dataclass
class PairActivations:
    """Answer-token activations of contrast data at one layer (rows: pos, neg, pos, ...)."""

    layer: int
    acts: torch.Tensor
    matching: list[bool]
    letters: list[str | None]
    read: str


def _letter(tokenizer: Any, token_id: int) -> str | None:
    text = tokenizer.decode([int(token_id)]).strip().strip("()").strip()
    return text.upper() if len(text) == 1 and text.isalpha() else None


def pair_activations(lm: Any, items: Sequence[Any], layer: int, *, site: Site = "block_output",
                     batch_size: int = 16, system: str | None = None) -> PairActivations:
    """The activations extraction reads (the answer token of A/B items, the last token of
    plain pairs) for every positive and negative, with each row's answer letter."""
    from steerlab.extraction import pair_sequences
    from steerlab.extraction.record import record

    sequences, read = pair_sequences(lm, list(items), system=system)
    acts = torch.cat([b.acts[layer] for b in record(lm.model, sequences, [layer], site=site,
                                                    read="last", batch_size=batch_size,
                                                    pad_id=lm.pad_id)])
    letters: list[str | None] = [_letter(lm.tokenizer, s[-1]) if read == "answer_token"
                                 else None for s in sequences]
    return PairActivations(layer, acts, [i % 2 == 0 for i in range(len(sequences))], letters,
                           read)


def _corr(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    if n < 3:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    if sx == 0 or sy == 0:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (sx * sy)


def pca(acts: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, list[float]]:
    """The first ``k`` principal-component coordinates of the rows and their variance shares.

    Example:
        >>> coords, share = pca(torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 0.1]]))
        >>> coords.shape, round(share[0], 2)
        (torch.Size([3, 2]), 1.0)
    """
    x = acts.double() - acts.double().mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    total = float((s ** 2).sum()) or 1.0
    k = min(k, vh.shape[0])
    coords = x @ vh[:k].T
    if coords.shape[1] < 2:
        coords = torch.cat([coords, torch.zeros(coords.shape[0], 2 - coords.shape[1],
                                                dtype=coords.dtype)], 1)
    return coords, [float(v ** 2) / total for v in s[:k]]


def separation(pairs: PairActivations, vector: SteeringVector | None) -> dict[str, float]:
    """How strongly PC1 (and the projection onto the vector) follow behaviour vs letter:
    Pearson r of each with a ±1 label."""
    coords, share = pca(pairs.acts)
    behaviour = [1.0 if m else -1.0 for m in pairs.matching]
    out = {"pc1_share": share[0] if share else math.nan,
           "pc1_behaviour": _corr(coords[:, 0].tolist(), behaviour)}
    if all(x is not None for x in pairs.letters) and len(set(pairs.letters)) == 2:
        first = sorted({x for x in pairs.letters if x is not None})[0]
        letter = [1.0 if x == first else -1.0 for x in pairs.letters]
        out["pc1_letter"] = _corr(coords[:, 0].tolist(), letter)
        matching_a = [x for x, m in zip(pairs.letters, pairs.matching, strict=True) if m]
        out["matching_share_" + first] = matching_a.count(first) / max(1, len(matching_a))
        if vector is not None and pairs.layer in vector.directions:
            proj = (pairs.acts.double() @ direction(vector, pairs.layer)).tolist()
            out["vector_behaviour"] = _corr(proj, behaviour)
            out["vector_letter"] = _corr(proj, letter)
    return out
