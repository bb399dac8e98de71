"""The ``steering`` field of a request: schema, parsing and resolution into ``SteeringSpec`` s.

A request's ``steering`` is ``{"vectors": [{"name", "layers", "strength" | "coefficient",
"positions", "operator", "preserve_norm"}]}``; ``null`` or ``{"vectors": []}`` means
unsteered. vLLM-style clients may send the same object as a JSON string in
``vllm_xargs.steering``. Every entry is checked against the served vectors and the model
(unknown name, layer out of range, both strength and coefficient, missing calibration for
``strength``) before the request is queued, so a bad field is a 400, never a failure inside the
worker.

Example:
    >>> import torch
    >>> from steerlab.serve.registry import VectorRegistry
    >>> from steerlab.vector import SteeringVector
    >>> reg = VectorRegistry({"opt": SteeringVector.from_directions(
    ...     {2: torch.ones(4)}, resid_norms={"2": 4.0})})
    >>> req = parse_steering_json('{"vectors": [{"name": "opt", "layers": [2], "strength": 0.5}]}')
    >>> [s.strength for s in resolve_steering(req, reg, n_layers=4)]
    [0.5]
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from steerlab.errors import SteerlabError
from steerlab.serve.registry import VectorRegistry
from steerlab.steering.spec import SteeringSpec
from steerlab.util.vocabulary import parse_operator

#: The most vector entries one steering object may hold.
MAX_VECTORS = 16


class VectorSteering(BaseModel):
    """One served vector to apply: where (``layers``, ``positions``), how hard, and how."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    layers: list[StrictInt | StrictStr] | StrictInt | StrictStr | None = Field(
        default=None, description="layers to steer (default: all the vector's layers); ints, "
        "negative ints, '8-12', '10,16', '0.5'")
    strength: float | None = Field(default=None, description="multiple of the mean residual "
                                   "norm at the layer (needs the vector's calibration)")
    coefficient: float | None = Field(default=None, description="raw multiplier of the stored "
                                      "vector")
    positions: StrictStr = "all"
    operator: StrictStr = "add"
    preserve_norm: StrictBool = False


class SteeringRequest(BaseModel):
    """The whole ``steering`` object: the vectors applied to one request, in order."""

    model_config = ConfigDict(extra="forbid")

    vectors: list[VectorSteering] = Field(default_factory=list, max_length=MAX_VECTORS)

    def public(self) -> dict[str, Any]:
        """The object as JSON-ready data, unset optional fields left out.

        Example:
            >>> SteeringRequest(vectors=[{"name": "a", "coefficient": 2}]).public()
            {'vectors': [{'name': 'a', 'coefficient': 2.0}]}
        """
        return {"vectors": [v.model_dump(exclude_defaults=True) | {"name": v.name}
                            for v in self.vectors]}


UNSTEERED = SteeringRequest()


def validation_message(exc: ValidationError, where: str = "") -> str:
    """One line from a pydantic error: the first problem with its location.

    Example:
        >>> try:
        ...     SteeringRequest.model_validate({"vectors": [{"nam": "x"}]})
        ... except ValidationError as exc:
        ...     print(validation_message(exc, "steering"))
        steering.vectors.0.name: Field required (and 1 more problem)
    """
    errors = exc.errors()
    if not errors:
        return f"{where or 'value'}: invalid"
    first = errors[0]
    loc = ".".join(str(part) for part in (where, *first.get("loc", ())) if part != "")
    message = str(first.get("msg", "invalid"))
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" \
        if len(errors) > 1 else ""
    return f"{loc or 'value'}: {message}{more}"


def parse_steering(value: object, where: str = "steering") -> SteeringRequest:
    """A steering object from already-decoded JSON (``None`` → unsteered).

    Example:
        >>> parse_steering(None).vectors
        []
    """
    if value is None:
        return UNSTEERED
    if isinstance(value, SteeringRequest):
        return value
    try:
        return SteeringRequest.model_validate(value)
    except ValidationError as exc:
        raise SteerlabError(validation_message(exc, where)) from None


def parse_steering_json(text: str, where: str = "steering") -> SteeringRequest:
    """A steering object from a JSON string (``--default-steering``, ``vllm_xargs.steering``).

    Example:
        >>> parse_steering_json("null").vectors
        []
        >>> parse_steering_json("{bad")
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: steering: not valid JSON (Expecting property name \
enclosed in double quotes at char 1)
    """
    if not isinstance(text, str):
        raise SteerlabError(f"{where}: expected a JSON string, got {type(text).__name__}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SteerlabError(f"{where}: not valid JSON ({exc.msg} at char {exc.pos})") from None
    return parse_steering(value, where)


def resolve_steering(request: SteeringRequest | None, registry: VectorRegistry,
                     n_layers: int, hidden_size: int | None = None) -> list[SteeringSpec]:
    """The per-row specs of ``request``, every entry checked now (one-line error if bad).

    Checks: the name is served, the layers exist in the model and in the vector, one of
    strength/coefficient at most, known positions and operator, ``strength`` has the vector's
    calibration at every layer, the vector's width matches the model.

    Example:
        >>> resolve_steering(None, VectorRegistry(), n_layers=4)
        []
    """
    if request is None:
        return []
    specs: list[SteeringSpec] = []
    for i, entry in enumerate(request.vectors):
        where = f"steering.vectors.{i} ({entry.name!r})"
        try:
            vector = registry.get(entry.name)
            if hidden_size is not None and vector.hidden_size != hidden_size:
                raise SteerlabError(f"vector hidden size {vector.hidden_size} does not match "
                                    f"the model's {hidden_size}")
            layers = entry.layers
            spec = SteeringSpec(vector, layers=layers, coefficient=entry.coefficient,
                                strength=entry.strength, positions=entry.positions,
                                operator=parse_operator(entry.operator),
                                preserve_norm=entry.preserve_norm)
            resolved = spec.resolved_layers(n_layers)
            for layer in resolved:
                spec.operand(layer)  # strength without calibration fails here, not in the worker
            spec.layers = resolved
        except SteerlabError as exc:
            raise SteerlabError(f"{where}: {exc}") from None
        specs.append(spec)
    return specs
