"""``steerlab doctor``: does steering work on *this* model? The checks of
:mod:`steerlab.testing.checks`, at the layers the user cares about, with a verdict.

On the user's own model (any alias, Hugging Face id or directory): the blocks steerlab found,
the width and the final norm; MoE routers, sliding windows and hybrid (state-space /
linear-attention) blocks named; then at each chosen layer: steering moves the logits (Δ vs
unsteered), is exactly ``h + v`` at the block output (against ``output_hidden_states``) and
equals a hand-written hook, and ``prompt`` / ``generation`` positions are right under
``generate`` with the KV cache. Without a vector, a random unit direction scaled to the mean
residual norm at each layer is used.

Example:
    >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
    >>> from steerlab.model.load import as_loaded
    >>> result = doctor(as_loaded(tiny_model("llama", n_layers=2), tiny_tokenizer()), layers="1")
    >>> result.exact, result.layers
    (True, [1])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlab.errors import SteerlabError
from steerlab.model.arch import find_blocks, unsteerable_reason
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.testing.anatomy import describe
from steerlab.testing.checks import check_model
from steerlab.testing.findings import Finding, ModelReport
from steerlab.util.parse import LayerSpec, resolve_layers
from steerlab.vector import SteeringVector

__all__ = ["DoctorResult", "default_layers", "doctor"]

PROMPT = "The weather today is sunny and warm. Tell me what you would like to do this afternoon"


@dataclass
class DoctorResult:
    """What ``steerlab doctor`` found: the model report, per-layer summaries and a verdict."""

    model_id: str
    report: ModelReport
    layers: list[int]
    vector_source: str
    seconds: float = 0.0
    per_layer: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.report.verdict == "exact"

    @property
    def verdict(self) -> str:
        """The one-line verdict."""
        r = self.report
        layers = ",".join(map(str, self.layers))
        if r.verdict == "exact":
            moved = min((v["delta"] for v in self.per_layer.values()
                         if v.get("delta") is not None), default=0.0)
            return (f"exact: at layer(s) {layers} steering is exactly h + v at the block output, "
                    f"moves the logits (min max|Δ| {moved:.3g}) and is right under generate "
                    "with the KV cache")
        if r.verdict == "refused":
            return f"refused: {r.refusal}"
        bad = r.failures[0]
        return f"NOT exact ({r.verdict}): {bad.name}: {bad.detail}"


def default_layers(n: int) -> list[int]:
    """A few layers across the depth (a quarter, half and three quarters down).

    Example:
        >>> default_layers(30)
        [7, 15, 22]
    """
    return sorted({max(0, min(n - 1, int(n * f))) for f in (0.25, 0.5, 0.75)})


def _per_layer(findings: list[Finding], layers: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {k: {} for k in layers}
    for f in findings:
        for k in layers:
            if f.name == f"block {k} output":
                out[k]["delta"], out[k]["error"] = f.delta, f.error
            elif f.name == f"block {k} h+v":
                out[k]["h+v"] = f.error
            elif f.name == f"block {k} hidden_states":
                out[k]["hidden_states"] = f.error if not f.detail.startswith("note") else None
            elif f.name.endswith(f" @ {k}") and f.name.startswith("generate "):
                out[k][f.name.split(" @ ")[0]] = f.error
    return out


def doctor(model: LoadedModel | Any, layers: LayerSpec | list[LayerSpec] | None = None,
           vector: SteeringVector | None = None, prompt: str = PROMPT,
           generation: bool = True) -> DoctorResult:
    """Check steering on ``model`` at ``layers`` (default: :func:`default_layers`, or the
    vector's layers) with ``vector`` (default: random, scaled to the residual norm).

    Example:
        >>> doctor(lm, layers="14").verdict                          # doctest: +SKIP
        'exact: at layer(s) 14 steering is exactly h + v at the block output, ...'
    """
    start = time.perf_counter()
    lm = as_loaded(model)
    module = lm.model
    reason = unsteerable_reason(module)
    if reason is not None:
        report = ModelReport(str(getattr(module.config, "model_type", "?")))
        report.findings.append(Finding("blocks", False, f"steerlab refuses: "
                                       f"{report.model_type}: {reason}", refused=True))
        return DoctorResult(lm.model_id, report, [], "none", time.perf_counter() - start)
    n = len(find_blocks(module)[1])
    if layers is None:
        chosen = ([k for k in vector.layers if k < n] if vector is not None
                  else default_layers(n))
    else:
        chosen = resolve_layers(layers, n)
    if not chosen:
        raise SteerlabError("no layers to check")
    vectors = None
    source = "random unit direction × mean residual norm at each layer"
    if vector is not None:
        missing = [k for k in chosen if k not in vector.layers]
        if missing:
            raise SteerlabError(f"the vector has no direction for layer(s) {missing}; it has "
                                f"{vector.layers}")
        width = describe(module).width
        if width is not None and vector.hidden_size != width:
            raise SteerlabError(f"vector hidden size {vector.hidden_size} does not match the "
                                f"model's {width}")
        vectors = {k: vector.directions[k].float() for k in chosen}
        if any(v.ndim != 1 for v in vectors.values()):
            raise SteerlabError("doctor checks [d] vectors (not position-resolved ActAdd ones)")
        source = "the given vector, coefficient 1"
    ids = None
    if lm.tokenizer is not None:
        encoded = lm.tokenizer(prompt, return_tensors="pt").input_ids
        if encoded.shape[1] >= 2:
            ids = encoded
    with torch.no_grad():
        report = check_model(module, layers=chosen, vectors=vectors, prompt=ids,
                             generation=generation, every_layer=True)
    result = DoctorResult(lm.model_id, report, chosen, source, time.perf_counter() - start)
    result.per_layer = _per_layer(report.findings, chosen)
    return result
