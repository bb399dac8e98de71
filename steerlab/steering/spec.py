"""What to steer with: :class:`SteeringSpec` (a vector, its layers, amount, positions, operator).

Positions (per row): ``all``, ``prompt``, ``generation``, ``after_instruction`` (needs
instruction lengths), ``front`` (row i of a position-resolved ActAdd vector is added at real
position i; a plain ``[d]`` vector goes to the first real position only), ``last_prompt:k``,
``window:a:b`` (real positions a..b-1; ``window:a:`` is open).

An ActAdd vector's row 0 belongs on the document-start token it was extracted with (its
manifest's ``document_start``); :func:`document_start_for` says which token prompts steered at
``front`` must begin with, and the generation loop prefixes it. Hooks alone
(``steerlab.steer`` around your own forward) leave the input ids as you give them.

Operators: ``add`` (h + c·v), ``ablate`` (h − f·(h·v̂)v̂, f defaults to 1), ``clamp``
(h − (h·v̂)v̂ + t·v̂). ``preserve_norm`` rescales steered positions to their pre-steer norm.
The number each operator takes has its own name on a spec: :meth:`SteeringSpec.coefficient_at`
(add's c), :meth:`SteeringSpec.ablation_fraction` (ablate's f), :meth:`SteeringSpec.clamp_target`
(clamp's t); :meth:`SteeringSpec.operand` is whichever one the spec's operator takes.

Example:
    >>> import torch
    >>> from steerlab.vector import SteeringVector
    >>> vec = SteeringVector.from_directions({3: torch.ones(4)})
    >>> SteeringSpec.at(vec, 3, 0.5, unit="strength").strength
    0.5
    >>> parse_positions("window:2:5")
    Positions(kind='window', count=0, start=2, stop=5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.util.parse import LayerSpec, resolve_layers
from steerlab.util.vocabulary import (
    NAMED_POSITIONS,
    Aggregate,
    Comparator,
    ConditionMode,
    Operator,
    PositionKind,
    Site,
    Unit,
    one_of,
    parse_aggregate,
    parse_comparator,
    parse_condition_mode,
    parse_operator,
    parse_unit,
)
from steerlab.vector import SteeringVector

POSITIONS_HELP = (f"{', '.join(NAMED_POSITIONS)}, last_prompt:K or window:A:B (real token "
                  "positions A..B-1)")


@dataclass(frozen=True)
class Positions:
    """Where a vector applies in each row: a parsed positions string.

    ``kind`` is one of the named positions (``all``, ``prompt``, ``generation``,
    ``after_instruction``, ``front``), ``last_prompt`` (the last ``count`` prompt tokens) or
    ``window`` (real positions ``start`` .. ``stop - 1``; ``stop=None`` is open). ``str()`` gives
    its canonical text form (``window:2`` reads as ``window:2:``); specs, manifests and requests
    carry the text they were given.

    Example:
        >>> Positions.parse("window:2:5")
        Positions(kind='window', count=0, start=2, stop=5)
        >>> str(Positions("last_prompt", count=3)), str(Positions("window", start=4))
        ('last_prompt:3', 'window:4:')
        >>> Positions.parse("prompt") == Positions("prompt")
        True
    """

    kind: PositionKind
    count: int = 0
    start: int = 0
    stop: int | None = None

    def __post_init__(self) -> None:
        numbers = (self.count, self.start, *(() if self.stop is None else (self.stop,)))
        if any(type(n) is not int for n in numbers):  # bool and float are refused too
            ok = False
        elif one_of(self.kind, NAMED_POSITIONS) is not None:
            ok = (self.count, self.start, self.stop) == (0, 0, None)
        elif self.kind == "last_prompt":
            ok = self.count >= 1 and (self.start, self.stop) == (0, None)
        elif self.kind == "window":
            ok = self.count == 0 and self.start >= 0 and (self.stop is None
                                                          or self.stop > self.start)
        else:
            ok = False
        if not ok:
            raise SteerlabError(f"bad positions {self!r}; expected one of {POSITIONS_HELP}")

    @classmethod
    def parse(cls, text: str) -> Positions:
        """The positions a string names (one-line error if it names none)."""
        return parse_positions(text)

    def __str__(self) -> str:
        if self.kind == "last_prompt":
            return f"last_prompt:{self.count}"
        if self.kind == "window":
            return f"window:{self.start}:{'' if self.stop is None else self.stop}"
        return self.kind


def parse_positions(positions: str) -> Positions:
    """Validate a positions string; returns the :class:`Positions` it names.

    Example:
        >>> parse_positions("last_prompt:3")
        Positions(kind='last_prompt', count=3, start=0, stop=None)
    """
    if not isinstance(positions, str):
        raise SteerlabError(f"positions must be a string, got {type(positions).__name__}")
    named = one_of(positions, NAMED_POSITIONS)
    if named is not None:
        return Positions(named)
    kind, _, rest = positions.partition(":")
    try:  # the ranges are checked once, by Positions itself
        if kind == "last_prompt":
            return Positions("last_prompt", count=int(rest))
        if kind == "window":
            a_text, _, b_text = rest.partition(":")
            return Positions("window", start=int(a_text), stop=int(b_text) if b_text else None)
    except (ValueError, SteerlabError):
        pass
    raise SteerlabError(f"bad positions {positions!r}; expected one of {POSITIONS_HELP}")


@dataclass(frozen=True, eq=False)
class Condition:
    """When to steer: a condition direction at a layer, compared with a threshold per row.

    The similarity of row b is computed once, from that row's prompt tokens (pads excluded) at
    the input of block ``layer`` (``site="block_input"``, CAST's "layer input") or its output,
    and fixes the gate for the whole generation: the behaviour vector steers row b only when
    ``similarity > threshold`` (``comparator="greater"``) or ``< threshold`` (``"less"``).

    ``mode="cast"`` is CAST's similarity (Lee et al. 2024): cos(h, tanh(P h)) with the
    projector P = c cᵀ / (c·c), averaged over the prompt tokens (``aggregate="mean"``) or taken
    at the last one (``"last"``). ``mode="cosine"`` is cos(h, c): the same question without
    the tanh squashing, its sign telling which side of the condition a prompt is on.

    Example:
        >>> import torch
        >>> c = SteeringVector.from_directions({3: torch.ones(4)})
        >>> Condition(c, layer=3, threshold=0.1).comparator
        'greater'
    """

    vector: SteeringVector
    layer: int
    threshold: float
    comparator: Comparator = "greater"
    mode: ConditionMode = "cast"
    aggregate: Aggregate = "mean"
    site: Site = "block_input"

    def __post_init__(self) -> None:
        if not isinstance(self.vector, SteeringVector):
            raise SteerlabError(f"a condition needs a SteeringVector, got "
                                f"{type(self.vector).__name__}")
        if self.layer not in self.vector.directions:
            raise SteerlabError(f"condition vector has no direction for layer {self.layer}; it "
                                f"has layers {self.vector.layers}")
        if self.vector.directions[self.layer].ndim != 1:
            raise SteerlabError("a condition needs one [d] direction at its layer")
        parse_comparator(self.comparator, "condition comparator")
        parse_condition_mode(self.mode, "condition mode")
        parse_aggregate(self.aggregate, "condition aggregate")
        _condition_site(self.site)
        if isinstance(self.threshold, bool) or not math.isfinite(float(self.threshold)):
            raise SteerlabError(f"condition threshold must be a finite number, got "
                                f"{self.threshold!r}")

    @property
    def order(self) -> int:
        """Where the condition is read in the forward (block input before block output)."""
        return 2 * self.layer + (0 if self.site == "block_input" else 1)

    @classmethod
    def from_vector(cls, vector: SteeringVector, *, layer: int | None = None,
                    threshold: float | None = None, comparator: Comparator | None = None
                    ) -> Condition:
        """The condition a ``steerlab cast fit`` vector carries in its manifest (layer,
        threshold, comparator, mode, aggregate), each overridable.

        Example:
            >>> import torch
            >>> v = SteeringVector.from_directions({2: torch.ones(3)}, condition={
            ...     "layer": 2, "threshold": 0.1, "comparator": "greater"})
            >>> Condition.from_vector(v).threshold
            0.1
        """
        fitted = vector.manifest.get("condition") or {}
        if not isinstance(fitted, dict):
            raise SteerlabError("condition vector: manifest 'condition' must be an object")
        chosen_layer = layer if layer is not None else fitted.get("layer")
        per_layer = (fitted.get("per_layer") or {}).get(str(chosen_layer)) or {}
        if layer is not None and per_layer:  # another fitted layer: its own threshold
            fitted = {**fitted, **per_layer}
        elif layer is not None and layer != fitted.get("layer") and threshold is None:
            raise SteerlabError(f"the condition vector has no threshold fitted for layer "
                                f"{layer}; give one")
        chosen_threshold = threshold if threshold is not None else fitted.get("threshold")
        if chosen_layer is None or chosen_threshold is None:
            raise SteerlabError("the condition vector carries no fitted layer/threshold (make "
                                "it with 'steerlab cast fit', or give the layer and threshold)")
        return cls(vector, layer=int(chosen_layer), threshold=float(chosen_threshold),
                   comparator=comparator or parse_comparator(
                       fitted.get("comparator", "greater"), "condition comparator"),
                   mode=parse_condition_mode(fitted.get("mode", "cast"), "condition mode"),
                   aggregate=parse_aggregate(fitted.get("aggregate", "mean"),
                                             "condition aggregate"),
                   site=_condition_site(fitted.get("site", "block_input")))


@dataclass
class SteeringSpec:
    """One vector, where and how hard to apply it.

    Give ``coefficient`` (raw multiplier of the stored vector) or ``strength`` (multiple of the
    mean residual norm at the layer, from the vector's calibration) — not both. ``layers`` may be
    ints, negative ints, fractions ("0.5") or range strings ("8-12"); default: all of the
    vector's layers.

    Example:
        >>> import torch
        >>> spec = SteeringSpec(SteeringVector.from_directions({2: torch.ones(4)}), coefficient=3)
        >>> spec.operator, spec.positions
        ('add', 'all')
    """

    vector: SteeringVector
    layers: Sequence[LayerSpec] | LayerSpec | None = None
    coefficient: float | None = None
    strength: float | None = None
    positions: str = "all"
    operator: Operator = "add"
    preserve_norm: bool = False
    condition: Condition | None = None

    def __post_init__(self) -> None:
        if self.condition is not None and not isinstance(self.condition, Condition):
            raise SteerlabError(f"condition must be a Condition, got "
                                f"{type(self.condition).__name__}")
        if not isinstance(self.vector, SteeringVector):
            raise SteerlabError(f"SteeringSpec needs a SteeringVector, got "
                                f"{type(self.vector).__name__}")
        if self.coefficient is not None and self.strength is not None:
            raise SteerlabError("give coefficient or strength, not both")
        parse_operator(self.operator)
        if self.operator == "ablate" and self.strength is not None:
            raise SteerlabError("ablate takes coefficient= (the fraction of the component to "
                                "remove, default 1), not strength=")
        parse_positions(self.positions)
        for value in (self.coefficient, self.strength):
            if value is not None and (isinstance(value, bool) or not math.isfinite(float(value))):
                raise SteerlabError(f"coefficient/strength must be a finite number, got {value!r}")

    @classmethod
    def at(cls, vector: SteeringVector, layers: Sequence[LayerSpec] | LayerSpec, value: float,
           *, unit: Unit = "coefficient", positions: str = "all",
           operator: Operator = "add") -> SteeringSpec:
        """The spec of one sweep cell: ``value`` in ``unit`` (coefficient or strength).

        Example:
            >>> import torch
            >>> v = SteeringVector.from_directions({1: torch.ones(2)})
            >>> SteeringSpec.at(v, [1], -2.0).coefficient
            -2.0
        """
        parse_unit(unit)
        value = float(value)
        return cls(vector, layers=layers, positions=positions, operator=operator,
                   coefficient=value if unit == "coefficient" else None,
                   strength=value if unit == "strength" else None)

    def resolved_layers(self, n_layers: int) -> list[int]:
        """Layer indices this spec steers, checked against the vector."""
        if self.layers is None:
            layers = list(self.vector.layers)
        else:
            layers = resolve_layers(self.layers, n_layers)
        missing = [k for k in layers if k not in self.vector.directions]
        if missing:
            raise SteerlabError(f"vector has no direction for layer(s) {missing}; "
                                f"it has layers {self.vector.layers}")
        bad = [k for k in layers if not 0 <= k < n_layers]
        if bad:
            raise SteerlabError(f"layer(s) {bad} out of range: model has {n_layers} layers")
        return layers

    def coefficient_at(self, layer: int) -> float:
        """``add``: the raw multiplier of the stored vector at ``layer`` — ``coefficient`` as
        given, or ``strength`` turned into one with the vector's calibration (1 if neither).

        Example:
            >>> import torch
            >>> v = SteeringVector.from_directions({0: torch.ones(4)}, resid_norms={"0": 10.0})
            >>> SteeringSpec(v, strength=0.5).coefficient_at(0)
            2.5
        """
        self._takes("add", "coefficient_at")
        if self.strength is not None:
            return self.vector.coefficient_for_strength(layer, self.strength)
        return 1.0 if self.coefficient is None else float(self.coefficient)

    def clamp_target(self, layer: int) -> float:
        """``clamp``: the value the component along v̂ is set to at ``layer`` — ``coefficient``
        as given, or ``strength`` × the layer's mean residual norm (1 if neither).

        Example:
            >>> import torch
            >>> v = SteeringVector.from_directions({0: torch.ones(4)}, resid_norms={"0": 10.0})
            >>> SteeringSpec(v, strength=0.5, operator="clamp").clamp_target(0)
            5.0
        """
        self._takes("clamp", "clamp_target")
        if self.strength is not None:
            resid = self.vector.resid_norm(layer)
            if resid is None:
                raise SteerlabError(f"vector has no residual-norm calibration for layer {layer}: "
                                    "use coefficient=, or steerlab.calibrate(vector, model, "
                                    "texts)")
            return self.strength * resid
        return 1.0 if self.coefficient is None else float(self.coefficient)

    def ablation_fraction(self) -> float:
        """``ablate``: the fraction of the component along v̂ that is removed (``coefficient``,
        default 1: all of it).

        Example:
            >>> import torch
            >>> v = SteeringVector.from_directions({0: torch.ones(4)})
            >>> SteeringSpec(v, operator="ablate").ablation_fraction()
            1.0
        """
        self._takes("ablate", "ablation_fraction")
        return 1.0 if self.coefficient is None else float(self.coefficient)

    def operand(self, layer: int) -> float:
        """The number this spec's operator takes at ``layer``: :meth:`coefficient_at` (add),
        :meth:`ablation_fraction` (ablate) or :meth:`clamp_target` (clamp).

        Example:
            >>> import torch
            >>> v = SteeringVector.from_directions({0: torch.ones(4)})
            >>> [SteeringSpec(v, coefficient=0.5, operator=op).operand(0)
            ...  for op in ("add", "ablate", "clamp")]
            [0.5, 0.5, 0.5]
        """
        if self.operator == "add":
            return self.coefficient_at(layer)
        if self.operator == "clamp":
            return self.clamp_target(layer)
        return self.ablation_fraction()

    def _takes(self, operator: Operator, what: str) -> None:
        if self.operator != operator:
            raise SteerlabError(f"{what} is the number operator {operator!r} takes; this spec's "
                                f"operator is {self.operator!r} (operand() gives its number)")


Steering = SteeringSpec | SteeringVector | Sequence[SteeringSpec] | None


def as_specs(spec: Steering, **kwargs: Any) -> list[SteeringSpec]:
    """Normalise the forms ``steer()`` accepts into a list of specs.

    Keywords (``layers``, ``coefficient``, ``positions``...) describe a bare vector; given with
    ready specs they would be silently ignored, so any non-default one is an error.

    Example:
        >>> import torch
        >>> v = SteeringVector.from_directions({1: torch.ones(2)})
        >>> [s.coefficient for s in as_specs(v, coefficient=2.0)]
        [2.0]
    """
    if isinstance(spec, SteeringVector):
        return [SteeringSpec(spec, **kwargs)]
    defaults = {"positions": "all", "operator": "add", "preserve_norm": False,
                "condition": None}
    if any(value != defaults.get(key) for key, value in kwargs.items()):
        raise SteerlabError("layers/coefficient/strength/positions/operator/preserve_norm/"
                            "condition keywords go with a SteeringVector, not with ready "
                            "SteeringSpecs")
    if spec is None:
        return []
    if isinstance(spec, SteeringSpec):
        return [spec]
    specs = list(spec)
    for item in specs:
        check_spec(item)
    return specs


def document_start_for(specs: Sequence[SteeringSpec]) -> dict[str, Any] | None:
    """The document-start token prompts steered by ``specs`` must begin with, or ``None``.

    A vector applied at ``positions="front"`` whose extraction prefixed a document-start token
    (manifest ``document_start`` with ``prefixed: true``, see
    :func:`steerlab.model.prompts.document_start`) needs the same token in front of every
    prompt it steers, so that its row 0 lands on that token as it did at extraction. Vectors
    made before steerlab recorded this carry no ``document_start`` and need nothing.

    Example:
        >>> import torch
        >>> start = {"id": 0, "token": "<|endoftext|>", "prefixed": True}
        >>> v = SteeringVector.from_directions({1: torch.ones(2, 4)}, document_start=start)
        >>> document_start_for([SteeringSpec(v, positions="front")])["id"]
        0
        >>> document_start_for([SteeringSpec(v.normalized(), positions="all")]) is None
        True
    """
    found: dict[str, Any] | None = None
    for spec in specs:
        start = check_spec(spec).vector.manifest.get("document_start")
        if spec.positions != "front" or not isinstance(start, dict) or not start.get("prefixed"):
            continue
        if found is not None and int(found["id"]) != int(start["id"]):
            raise SteerlabError(f"front-positioned vectors need different document-start "
                                f"tokens ({found.get('token')!r} and {start.get('token')!r}); "
                                "steer with vectors extracted under one tokenizer")
        found = dict(start)
    return found


_CONDITION_SITES: tuple[Site, ...] = ("block_input", "block_output")


def _condition_site(value: object) -> Site:
    site = one_of(value, _CONDITION_SITES)
    if site is None:
        raise SteerlabError(f"condition site must be one of {', '.join(_CONDITION_SITES)}, "
                            f"got {value!r}")
    return site


def check_spec(spec: object) -> SteeringSpec:
    """``spec`` itself if it is a :class:`SteeringSpec`, else a one-line error."""
    if not isinstance(spec, SteeringSpec):
        raise SteerlabError(f"expected a SteeringSpec, got {type(spec).__name__}")
    return spec
