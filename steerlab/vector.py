"""SteeringVector: per-layer directions plus provenance, saved as safetensors + JSON manifest.

File layout (DESIGN §5): one tensor per layer under key ``layers.{k}`` (shape ``[d]``, or
``[n_pos, d]`` for position-resolved ActAdd vectors) and the manifest (:class:`Manifest`) as
JSON in the safetensors metadata under key ``steerlab``. Writes are atomic (temp file, then
rename).

Example:
    >>> import torch
    >>> v = SteeringVector.from_directions({12: torch.ones(4)})
    >>> (2 * v).directions[12].tolist()
    [2.0, 2.0, 2.0, 2.0]
    >>> v.normalized().directions[12].norm().item()
    1.0
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Required, TypedDict, cast

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from steerlab.errors import SteerlabError
from steerlab.util.io import atomic_path
from steerlab.util.vocabulary import SITES, Site, parse_site
from steerlab.version import __version__

#: The manifest schema's version (:class:`Manifest` ``format_version``); a file with a newer
#: one is refused, an older one (or none: 0) is read as is.
FORMAT_VERSION = 1
#: The safetensors metadata key that holds the manifest's JSON.
MANIFEST_KEY = "steerlab"


class Manifest(TypedDict, total=False):
    """A vector's manifest: provenance and calibration, stored as JSON beside its tensors.

    ``site``, ``hidden_size`` and ``layer_norms`` are always present (the vector sets them
    from its tensors); ``format_version`` is the schema version (:data:`FORMAT_VERSION`; missing
    in files from before it: read as 0). Every other key is optional: an extracted vector
    carries its model, method, dataset and calibration; a combination its ``parents``. Files
    may hold keys beyond these (kept and saved back as they are).

    Example:
        >>> import torch
        >>> m = SteeringVector.from_directions({0: torch.ones(2)}, method="x").manifest
        >>> m["format_version"], m["site"], m["hidden_size"], m["method"]
        (1, 'block_output', 2, 'x')
    """

    format_version: int
    site: Required[Site]
    hidden_size: Required[int]
    layer_norms: Required[dict[str, float]]  # layer -> mean norm of its direction
    model_id: str | None
    model_revision: str | None
    model_type: str | None  # a GGUF import's model hint
    n_layers: int | None
    method: str
    read_position: str
    dataset: dict[str, Any]  # name, split, n_pairs, sha256
    system_prompt: str | None
    stats: dict[str, dict[str, Any]]  # layer -> the method's statistics
    resid_norms: dict[str, float] | None  # layer -> mean residual norm (strength's unit)
    recommended: dict[str, Any]  # the layer and strength a sweep chose
    condition: dict[str, Any]  # a condition vector's fitted layer and threshold
    document_start: dict[str, Any] | None  # ActAdd: the token row 0 was read on
    pad: str | None  # ActAdd: how the shorter prompt was padded
    pair_tokens: list[list[str]]  # ActAdd: the two prompts' tokens
    parents: list[dict[str, Any]]  # a combination's sources, each with its weight
    weight: float
    gguf: dict[str, Any]  # a GGUF import's file details
    steerlab_version: str
    extract_seconds: float
    created: str


class SteeringVector:
    """Directions keyed by layer index, with a manifest describing where they came from."""

    def __init__(self, directions: Mapping[int, torch.Tensor],
                 manifest: Manifest | Mapping[str, Any]):
        if not directions:
            raise SteerlabError("a steering vector needs at least one layer")
        clean: dict[int, torch.Tensor] = {}
        for layer, tensor in directions.items():
            t = torch.as_tensor(tensor).detach().to("cpu", torch.float32).contiguous()
            if t.ndim not in (1, 2):
                raise SteerlabError(f"layer {layer}: expected a [d] or [n_pos, d] tensor, "
                                    f"got shape {list(t.shape)}")
            if not torch.isfinite(t).all():
                raise SteerlabError(f"layer {layer}: vector contains NaN or inf")
            clean[int(layer)] = t
        widths = {t.shape[-1] for t in clean.values()}
        if len(widths) != 1:
            raise SteerlabError(f"layers have different widths: {sorted(widths)}")
        self.directions: dict[int, torch.Tensor] = dict(sorted(clean.items()))
        raw: dict[str, Any] = dict(manifest)
        resid = raw.get("resid_norms")
        if resid is not None:  # JSON keys are strings: store them so before saving too
            raw["resid_norms"] = _resid_norms(resid)
        for key in ("dataset", "stats", "recommended"):
            value = raw.get(key)
            if value is not None and not isinstance(value, Mapping):
                raise SteerlabError(f"manifest {key}: expected an object, got "
                                    f"{type(value).__name__}")
        raw["site"] = parse_site(raw.get("site", "block_output"))
        raw["hidden_size"] = widths.pop()
        raw["layer_norms"] = {str(k): float(v.norm(dim=-1).mean())
                              for k, v in self.directions.items()}
        # the keys this class relies on are checked above; the rest is provenance, kept as is
        self.manifest: Manifest = cast(Manifest, raw)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_directions(cls, directions: Mapping[int, torch.Tensor], *, site: Site = "block_output",
                        model_id: str | None = None, n_layers: int | None = None,
                        method: str = "manual", **extra: Any) -> SteeringVector:
        """Build a vector by hand (no provenance beyond what you pass).

        Example:
            >>> SteeringVector.from_directions({3: torch.zeros(8)}).layers
            [3]
        """
        parse_site(site)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "site": site, "model_id": model_id,
            "n_layers": n_layers, "method": method, "steerlab_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        return cls(directions, manifest)

    # ---- properties -----------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return list(self.directions)

    @property
    def hidden_size(self) -> int:
        return int(self.manifest["hidden_size"])

    @property
    def site(self) -> Site:
        """Where in the residual stream the directions were read and are applied."""
        return self.manifest["site"]

    @property
    def method(self) -> str:
        return str(self.manifest.get("method", "manual"))

    def resid_norm(self, layer: int) -> float | None:
        """Mean residual-stream norm at this layer's site, measured at extraction (or None)."""
        norms = self.manifest.get("resid_norms") or {}
        value = norms.get(str(layer))
        return float(value) if value is not None else None

    def coefficient_for_strength(self, layer: int, strength: float) -> float:
        """Raw coefficient so that the added vector's norm is ``strength`` × mean residual norm.

        Example:
            >>> v = SteeringVector.from_directions({0: torch.ones(4)}, resid_norms={"0": 10.0})
            >>> v.coefficient_for_strength(0, 0.5)
            2.5
        """
        if layer not in self.directions:
            raise SteerlabError(f"vector has no layer {layer}; it has {self.layers}")
        resid = self.resid_norm(layer)
        if resid is None:
            raise SteerlabError(f"vector has no residual-norm calibration for layer {layer}: "
                                "use coefficient=, or steerlab.calibrate(vector, model, texts)")
        norm = float(self.directions[layer].norm(dim=-1).mean())
        if norm == 0.0:
            raise SteerlabError(f"layer {layer}: zero vector cannot be scaled to a strength")
        return strength * resid / norm

    # ---- algebra --------------------------------------------------------------------------
    def _combine(self, other: SteeringVector, sign: float) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        if self.hidden_size != other.hidden_size:
            raise SteerlabError(f"cannot combine vectors of width {self.hidden_size} and "
                                f"{other.hidden_size}")
        if self.site != other.site:
            raise SteerlabError(f"cannot combine vectors at sites {self.site} and {other.site}")
        out: dict[int, torch.Tensor] = {k: v.clone() for k, v in self.directions.items()}
        for k, v in other.directions.items():
            if k in out and out[k].shape != v.shape:
                raise SteerlabError(f"layer {k}: cannot combine shapes {list(out[k].shape)} and "
                                    f"{list(v.shape)}")
            out[k] = out[k] + sign * v if k in out else sign * v
        # layers only the other vector has keep its residual-norm calibration
        resid = {**(other.manifest.get("resid_norms") or {}),
                 **(self.manifest.get("resid_norms") or {})}
        parents = self.parents() + [{**p, "weight": sign * p["weight"]} for p in other.parents()]
        manifest = {**self.manifest, "method": "combination", "resid_norms": resid or None,
                    "parents": parents, "weight": 1.0}
        manifest.pop("dataset", None)
        return SteeringVector(out, manifest)

    def parents(self) -> list[dict[str, Any]]:
        """Where this vector came from, each source with its weight: one entry for an
        extracted vector, one per source for a combination (``a + 0.5 * b``).

        Example:
            >>> a = SteeringVector.from_directions({1: torch.ones(2)}, method="x")
            >>> [(p["method"], p["weight"]) for p in (a + 0.5 * a).parents()]
            [('x', 1.0), ('x', 0.5)]
        """
        weight = float(self.manifest.get("weight", 1.0))
        stored = self.manifest.get("parents")
        if isinstance(stored, list) and stored and all(isinstance(p, dict) for p in stored):
            return [{**p, "weight": weight * float(p.get("weight", 1.0))} for p in stored]
        return [{"method": self.manifest.get("method"), "dataset": self.manifest.get("dataset"),
                 "model_id": self.manifest.get("model_id"), "weight": weight}]

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, 1.0)

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, -1.0)

    def __mul__(self, scale: float) -> SteeringVector:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            return NotImplemented
        manifest = {**self.manifest,
                    "weight": float(self.manifest.get("weight", 1.0)) * float(scale)}
        return SteeringVector({k: v * float(scale) for k, v in self.directions.items()},
                              manifest)

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def normalized(self) -> SteeringVector:
        """Unit-norm direction per layer (per row for position-resolved vectors)."""
        out = {}
        for k, v in self.directions.items():
            norm = v.norm(dim=-1, keepdim=True)
            out[k] = torch.where(norm > 0, v / norm.clamp_min(1e-12), v)
        return SteeringVector(out, self.manifest)

    def select(self, layers: list[int]) -> SteeringVector:
        """A copy holding only the given layers."""
        missing = [k for k in layers if k not in self.directions]
        if missing:
            raise SteerlabError(f"vector has no layer(s) {missing}; it has {self.layers}")
        return SteeringVector({k: self.directions[k] for k in layers}, self.manifest)

    # ---- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` atomically (temp file in the same directory, then rename).

        Example:
            >>> SteeringVector.from_directions({1: torch.ones(3)}).save("/tmp/v.safetensors")
            PosixPath('/tmp/v.safetensors')
        """
        target = Path(path)
        tensors = _own_storage({f"layers.{k}": v for k, v in self.directions.items()})
        try:
            metadata = {MANIFEST_KEY: json.dumps(self.manifest, sort_keys=True)}
        except (TypeError, ValueError) as exc:
            raise SteerlabError(f"{target}: manifest is not JSON-serialisable ({exc})") from None
        with atomic_path(target, what="vector") as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any = None) -> SteeringVector:
        """Read a vector; with ``model`` given, check it fits (one-line error if not).

        Example:
            >>> path = SteeringVector.from_directions({1: torch.ones(3)}).save("/tmp/v.safetensors")
            >>> SteeringVector.load(path).layers
            [1]
        """
        source = Path(path)
        if source.is_dir():
            raise SteerlabError(f"{source}: is a directory; expected a vector .safetensors file")
        if not source.is_file():
            raise SteerlabError(f"{source}: vector file not found")
        try:
            with safe_open(str(source), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own error types
            raise SteerlabError(f"{source}: not a safetensors file ({exc})") from None
        if MANIFEST_KEY not in meta:
            raise SteerlabError(f"{source}: no steerlab manifest in the safetensors metadata")
        try:
            manifest = json.loads(meta[MANIFEST_KEY])
        except json.JSONDecodeError as exc:
            raise SteerlabError(f"{source}: steerlab manifest is not valid JSON ({exc.msg})"
                                ) from None
        if not isinstance(manifest, dict):
            raise SteerlabError(f"{source}: steerlab manifest: expected a JSON object, "
                                f"got {type(manifest).__name__}")
        if not tensors:
            raise SteerlabError(f"{source}: no tensors; expected 'layers.<k>'")
        directions: dict[int, torch.Tensor] = {}
        for key, tensor in tensors.items():
            prefix, _, index = key.partition(".")
            if prefix != "layers" or not (index.isascii() and index.isdigit()):
                raise SteerlabError(f"{source}: unexpected tensor key {key!r}; "
                                    "expected 'layers.<k>' with k >= 0")
            if int(index) in directions:
                raise SteerlabError(f"{source}: layer {int(index)} stored twice")
            directions[int(index)] = tensor
        version = manifest.get("format_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise SteerlabError(f"{source}: manifest format_version: expected an integer, "
                                f"got {version!r}")
        if version > FORMAT_VERSION:
            raise SteerlabError(f"{source}: format_version {version} is newer "
                                f"than this steerlab supports ({FORMAT_VERSION})")
        site = manifest.get("site", "block_output")
        if site not in SITES:  # the one-line error names the file
            raise SteerlabError(f"{source}: unknown site {site!r} in manifest; "
                                f"expected one of {', '.join(SITES)}")
        n_layers = manifest.get("n_layers")
        if n_layers is not None and (isinstance(n_layers, bool)
                                     or not isinstance(n_layers, int)):
            raise SteerlabError(f"{source}: manifest n_layers: expected an integer, "
                                f"got {n_layers!r}")
        try:
            vector = cls(directions, manifest)
        except SteerlabError as exc:
            raise SteerlabError(f"{source}: {exc}") from None
        if model is not None:
            vector.check_model(model, source=str(source))
        return vector

    def check_model(self, model: Any, source: str = "vector") -> None:
        """Raise a one-line error when this vector cannot apply to ``model``."""
        from steerlab.model.load import as_loaded

        lm = as_loaded(model)
        if self.hidden_size != lm.hidden_size:
            raise SteerlabError(f"{source}: hidden size {self.hidden_size} does not match model "
                                f"{lm.model_id} (hidden size {lm.hidden_size})")
        n = lm.n_layers
        bad = [k for k in self.layers if not (0 <= k < n)]
        if bad:
            raise SteerlabError(f"{source}: layer(s) {bad} out of range for model {lm.model_id} "
                                f"with {n} layers")
        expected = self.manifest.get("n_layers")
        if expected is not None and int(expected) != n:
            raise SteerlabError(f"{source}: made for a model with {expected} layers, "
                                f"{lm.model_id} has {n}")

    def __repr__(self) -> str:
        norms = ", ".join(f"{k}:{float(v.norm(dim=-1).mean()):.3g}"
                          for k, v in list(self.directions.items())[:6])
        more = "" if len(self.directions) <= 6 else ", ..."
        return (f"SteeringVector(method={self.method}, site={self.site}, d={self.hidden_size}, "
                f"layers={{{norms}{more}}})")


def _own_storage(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with a copy of each one whose memory another already uses.

    safetensors refuses tensors that share storage ("Some tensors share memory"), and a vector
    made as ``from_directions({10: d, 11: d})`` or from rows of one matrix holds exactly that.
    Only the later sharers are copied (vectors are small; the file is the same either way).

    Example:
        >>> d = torch.ones(3)
        >>> out = _own_storage({"a": d, "b": d})
        >>> out["a"] is d, out["b"] is d, torch.equal(out["a"], out["b"])
        (True, False, True)
    """
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        storage = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if storage in seen else tensor
        seen.add(storage)
    return out


def _resid_norms(value: object) -> dict[str, float]:
    """The ``resid_norms`` calibration checked: layer → a finite, positive number."""
    if not isinstance(value, Mapping):
        raise SteerlabError(f"manifest resid_norms: expected an object of layer → norm, got "
                            f"{type(value).__name__}")
    out: dict[str, float] = {}
    for layer, norm in value.items():
        if norm is None:
            continue
        if isinstance(norm, bool) or not isinstance(norm, numbers.Real) or \
                not math.isfinite(float(norm)) or float(norm) <= 0:
            raise SteerlabError(f"manifest resid_norms: layer {layer}: expected a number > 0, "
                                f"got {norm!r}")
        out[str(layer)] = float(norm)
    return out


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flattened tensors.

    Example:
        >>> round(cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])), 4)
        0.7071
    """
    a, b = a.flatten().double(), b.flatten().double()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else math.nan
