"""llama.cpp control vectors: write and read GGUF files with ``gguf`` (gguf-py) alone.

The format (DESIGN §11): ``general.architecture = "controlvector"``,
``controlvector.model_hint`` (the model's llama.cpp architecture name, e.g. ``"llama"``),
``controlvector.layer_count`` and one F32, 1-D, ``n_embd`` tensor ``direction.{k}`` per layer.
llama.cpp adds ``direction.k`` (× the file's scale) right after block k's final residual add,
at every token, prompt and generated: exactly steerlab's ``block_output`` layer k with
``positions="all"`` and ``operator="add"``. It never steers layer 0 and rejects a whole file
holding ``direction.0``, a non-F32 or non-1-D tensor, or tensors of different sizes; tensors for
the same layer add up. llama.cpp reads none of the metadata; steerlab keeps its provenance in
``steerlab.*`` string keys (the vector's JSON manifest, steerlab's version, the source sha256
and how the scale was baked in), so :func:`from_gguf` gives back the manifest.

Import reads steerlab's own files, repeng's ``ControlVector.export_gguf`` files (same layer
numbering) and llama.cpp ``cvector-generator`` files, which name the vector read at block k's
output ``direction.{k+1}``: import those with ``shift=-1``.

Example:
    >>> import tempfile, torch
    >>> from steerlab.vector import SteeringVector
    >>> vec = SteeringVector.from_directions({3: torch.ones(8)}, resid_norms={"3": 4.0})
    >>> out = to_gguf(vec, tempfile.mkdtemp() + "/v.gguf", strength=0.5, model_hint="llama")
    >>> out.layers, round(out.coefficients[3], 4)     # 0.5 × 4.0 / ‖v‖ (= √8)
    ([3], 0.7071)
    >>> back = from_gguf(out.path)
    >>> round(float(back.directions[3].norm()), 4)   # 0.5 × residual norm 4.0
    2.0
    >>> back.manifest["gguf"]["origin"]
    'steerlab'
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from steerlab.errors import SteerlabError
from steerlab.steering.spec import SteeringSpec
from steerlab.util.io import atomic_path
from steerlab.util.vocabulary import Operator
from steerlab.vector import SteeringVector
from steerlab.version import __version__

__all__ = [
    "ARCH",
    "GGUFExport",
    "control_directions",
    "from_gguf",
    "model_hint_for",
    "read_control_vector",
    "to_gguf",
]

ARCH = "controlvector"
KEY_ARCH = "general.architecture"
KEY_HINT = f"{ARCH}.model_hint"
KEY_COUNT = f"{ARCH}.layer_count"
KEY_MANIFEST = "steerlab.manifest"
KEY_VERSION = "steerlab.version"
KEY_SOURCE = "steerlab.source_sha256"
KEY_SCALE = "steerlab.scale"

# Hugging Face ``model_type`` → llama.cpp ``general.architecture`` where the names differ.
_HF_TO_LLAMACPP = {"gemma3_text": "gemma3", "gpt_neox": "gptneox", "mistral": "llama"}

LayerArg = Sequence[int | float | str] | str | int | None


@dataclass(frozen=True)
class GGUFExport:
    """What :func:`to_gguf` wrote. Usable as a path (``os.fspath(export)``).

    ``coefficients[k]`` is the multiplier of the vector's stored direction at layer k that the
    file adds at llama.cpp scale 1 (when ``unit`` is False), or that
    ``--control-vector-scaled FILE:scale`` must reproduce (when ``unit`` is True: the file then
    holds unit directions and ``scale`` is the one value to pass, or None when no coefficient or
    strength was given).

    Example:
        >>> GGUFExport(Path("v.gguf"), [10], {10: 2.0}, False, None, "llama").llama_args()
        ['--control-vector', 'v.gguf']
        >>> GGUFExport(Path("v.gguf"), [10], {10: 2.0}, True, 7.5, "llama").llama_args()
        ['--control-vector-scaled', 'v.gguf:7.5']
    """

    path: Path
    layers: list[int]
    coefficients: dict[int, float]
    unit: bool
    scale: float | None
    model_hint: str
    source_sha256: str = ""
    notes: list[str] = field(default_factory=list)

    def __fspath__(self) -> str:
        return str(self.path)

    def llama_args(self) -> list[str]:
        """The llama.cpp command-line flags that apply this file as steerlab would."""
        if self.unit and self.scale is not None:
            return ["--control-vector-scaled", f"{self.path}:{self.scale:.9g}"]
        return ["--control-vector", str(self.path)]


# ---- what llama.cpp can express ---------------------------------------------------------------

def _resolve(vector: SteeringVector, layers: LayerArg) -> list[int]:
    if layers is None:
        return list(vector.layers)
    n_layers = vector.manifest.get("n_layers")
    n = int(n_layers) if isinstance(n_layers, int) else max(vector.layers) + 1
    # the spec resolves ints, negatives, fractions and "8-14" ranges and checks the vector
    wanted = SteeringSpec(vector, layers=cast(Any, layers)).resolved_layers(n)
    return list(dict.fromkeys(wanted))


def control_directions(vector: SteeringVector | SteeringSpec, *, layers: LayerArg = None,
                       coefficient: float | None = None, strength: float | None = None,
                       positions: str = "all", operator: Operator = "add",
                       preserve_norm: bool = False, shift_block_input: bool = False,
                       ) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
    """The vectors llama.cpp must add after each block to steer like steerlab: ``{k: c_k·v_k}``.

    ``vector`` is a :class:`SteeringVector` (then the keywords describe how to apply it, as in
    ``steerlab.steer``) or a ``steerlab.SteeringSpec`` (its fields win). Returns the scaled
    directions keyed by block-output layer and the coefficient ``c_k`` of each (scale 1 when
    neither ``coefficient`` nor ``strength`` is given, as in ``steerlab.steer``). Anything
    llama.cpp cannot express raises a one-line :class:`SteerlabError` saying why.

    ``shift_block_input``: a ``block_input`` vector at layer k acts on exactly the tensor that
    ``block_output`` layer k-1 produces, so it can be exported as ``direction.{k-1}``.

    Example:
        >>> from steerlab.vector import SteeringVector
        >>> vec = SteeringVector.from_directions({2: torch.ones(4)})
        >>> dirs, coef = control_directions(vec, coefficient=3.0)
        >>> dirs[2].tolist(), coef
        ([3.0, 3.0, 3.0, 3.0], {2: 3.0})
    """
    if isinstance(vector, SteeringSpec):
        spec = vector
        vector, layers = spec.vector, cast(LayerArg, spec.layers)
        coefficient, strength = spec.coefficient, spec.strength
        positions, operator, preserve_norm = spec.positions, spec.operator, spec.preserve_norm
    if not isinstance(vector, SteeringVector):
        raise SteerlabError(f"expected a SteeringVector or SteeringSpec, got "
                            f"{type(vector).__name__}")
    if coefficient is not None and strength is not None:
        raise SteerlabError("give coefficient or strength, not both")
    if operator != "add":
        raise SteerlabError(f"llama.cpp cannot express operator={operator!r}: its control "
                            "vectors only add a fixed vector (operator='add')")
    if positions != "all":
        raise SteerlabError(f"llama.cpp cannot express positions={positions!r}: its control "
                            "vectors are added at every token, prompt and generated "
                            "(positions='all')")
    if preserve_norm:
        raise SteerlabError("llama.cpp cannot express preserve_norm: it adds the vector "
                            "without rescaling the residual stream")
    for value in (coefficient, strength):
        if value is not None and not math.isfinite(float(value)):
            raise SteerlabError(f"coefficient/strength must be finite, got {value}")
    wanted = _resolve(vector, layers)
    for k in wanted:
        if vector.directions[k].ndim != 1:
            raise SteerlabError(
                f"layer {k}: llama.cpp cannot express a position-resolved "
                f"{list(vector.directions[k].shape)} vector (ActAdd front positions): a control "
                "vector is one [d] vector added at every token")
    shift = 0
    if vector.site == "block_input":
        if not shift_block_input:
            raise SteerlabError(
                "llama.cpp adds control vectors at block outputs only; this vector is at "
                "block_input, which at layer k is the output of block k-1 in these "
                "architectures: export it shifted by one layer (shift_block_input=True)")
        shift = -1
    elif vector.site != "block_output":
        raise SteerlabError(f"llama.cpp cannot express site {vector.site!r}: its control "
                            "vectors are added at block outputs")
    out: dict[int, torch.Tensor] = {}
    coefficients: dict[int, float] = {}
    for k in wanted:
        direction = vector.directions[k]
        target = k + shift
        if target < 0:
            raise SteerlabError("block_input layer 0 is the embedding output, which llama.cpp "
                                "cannot steer (control vectors are added after blocks 1..n-1)")
        if target == 0:
            why = "block_input layer 1 is block_output layer 0: " if shift else "layer 0: "
            raise SteerlabError(
                f"{why}llama.cpp never steers layer 0 (it rejects direction.0; control "
                "vectors are added after blocks 1..n-1): steer layers >= 1")
        if strength is not None:
            c = vector.coefficient_for_strength(k, float(strength))
        else:
            c = 1.0 if coefficient is None else float(coefficient)
        if target in out:  # llama.cpp sums tensors for one layer; keep one tensor per layer
            out[target] = out[target] + c * direction
        else:
            out[target] = c * direction
        coefficients[target] = c
    return out, coefficients


def model_hint_for(vector: SteeringVector, model: Any = None) -> str:
    """llama.cpp architecture name for ``controlvector.model_hint`` (informative only).

    From ``model`` (a LoadedModel or HF model) when given, else from the vector's model id when
    it is a built-in alias, else the manifest's ``model_type``; ``"unknown"`` otherwise.

    Example:
        >>> from steerlab.vector import SteeringVector
        >>> model_hint_for(SteeringVector.from_directions({1: torch.ones(2)},
        ...                                               model_id="smollm2-135m"))
        'llama'
    """
    from steerlab.model.aliases import ALIASES

    name: str | None = None
    if model is not None:
        inner = getattr(model, "model", model)
        name = getattr(getattr(inner, "config", None), "model_type", None)
    if name is None:
        model_id = vector.manifest.get("model_id")
        if isinstance(model_id, str) and model_id in ALIASES:
            name = ALIASES[model_id].arch
    if name is None:
        hint = vector.manifest.get("model_type") or vector.manifest.get("model_hint")
        name = hint if isinstance(hint, str) else None
    if not name:
        return "unknown"
    return _HF_TO_LLAMACPP.get(name, name)


def _content_sha256(vector: SteeringVector) -> str:
    digest = hashlib.sha256()
    for k, v in vector.directions.items():
        digest.update(f"layers.{k}:{list(v.shape)}".encode())
        digest.update(v.numpy().astype("<f4").tobytes())
    digest.update(json.dumps(vector.manifest, sort_keys=True, default=str).encode())
    return digest.hexdigest()


# ---- writing ----------------------------------------------------------------------------------

def to_gguf(vector: SteeringVector | SteeringSpec, path: str | os.PathLike[str], *,
            layers: LayerArg = None, coefficient: float | None = None,
            strength: float | None = None,
            model_hint: str | None = None, unit: bool = False, positions: str = "all",
            operator: Operator = "add", preserve_norm: bool = False,
            shift_block_input: bool = False, source_sha256: str | None = None,
            model: Any = None) -> GGUFExport:
    """Write a llama.cpp control vector GGUF atomically; returns what was written.

    The scale is baked in from ``coefficient`` (raw multiplier) or ``strength`` (steerlab's
    calibrated unit: ``vector.coefficient_for_strength(layer, s)`` per layer); with neither the
    stored vector is written as is (coefficient 1). With ``unit=True`` the file holds unit
    directions instead and :attr:`GGUFExport.scale` is the value for llama.cpp's
    ``--control-vector-scaled FILE:SCALE`` (one per file, so every layer must need the same
    scale). Only what llama.cpp can express is accepted (``positions="all"``,
    ``operator="add"``, ``block_output`` or shifted ``block_input``, 1-D directions, layers
    >= 1); see :func:`control_directions`. ``source_sha256`` (e.g. of the vector's
    safetensors file) is recorded; by default a sha256 of the vector's content. With ``model``
    (LoadedModel or HF model) the vector is checked against it (hidden size, layer range) and
    ``controlvector.model_hint`` comes from its architecture.

    Example:
        >>> import tempfile
        >>> from steerlab.vector import SteeringVector
        >>> vec = SteeringVector.from_directions({5: torch.ones(4)})
        >>> out = to_gguf(vec, tempfile.mkdtemp() + "/v.gguf", coefficient=2.0, unit=True)
        >>> out.scale, out.llama_args()[0]
        (4.0, '--control-vector-scaled')
    """
    base = vector.vector if isinstance(vector, SteeringSpec) else vector
    if model is not None and isinstance(base, SteeringVector):
        base.check_model(model)
    directions, coefficients = control_directions(
        vector, layers=layers, coefficient=coefficient, strength=strength, positions=positions,
        operator=operator, preserve_norm=preserve_norm, shift_block_input=shift_block_input)
    if isinstance(vector, SteeringSpec):
        coefficient, strength = vector.coefficient, vector.strength
    scale: float | None = None
    notes: list[str] = []
    if unit:
        norms = {k: float(v.norm()) for k, v in directions.items()}
        zero = [k for k, n in norms.items() if n == 0.0]
        if zero:
            raise SteerlabError(f"layer(s) {zero}: a zero vector has no unit direction")
        if coefficient is not None or strength is not None:
            values = sorted(set(norms.values()))
            if values[-1] - values[0] > 1e-6 * values[-1]:
                shown = ", ".join(f"{k}: {n:.4g}" for k, n in norms.items())
                raise SteerlabError(
                    f"unit vectors need one scale for all layers (llama.cpp's "
                    f"--control-vector-scaled takes one per file) but these layers need "
                    f"{shown}: bake the scale in (unit=False) or export one layer per file")
            scale = values[-1]
        directions = {k: v / norms[k] for k, v in directions.items()}
    hint = model_hint or model_hint_for(base, model)
    sha = source_sha256 or _content_sha256(base)
    scale_info: dict[str, Any] = {
        "mode": ("strength" if strength is not None else
                 "coefficient" if coefficient is not None else "raw"),
        "strength": None if strength is None else float(strength),
        "coefficient": None if coefficient is None else float(coefficient),
        "coefficients": {str(k): c for k, c in coefficients.items()},
        "unit": unit, "scale": scale, "shift": -1 if base.site == "block_input" else 0,
    }
    target = Path(path)
    _write(target, directions, {
        KEY_HINT: hint,
        KEY_MANIFEST: json.dumps(base.manifest, sort_keys=True, default=str),
        KEY_VERSION: __version__,
        KEY_SOURCE: sha,
        KEY_SCALE: json.dumps(scale_info, sort_keys=True),
    })
    if base.site == "block_input":
        notes.append("block_input layers exported one layer down, as block outputs")
    return GGUFExport(path=target, layers=sorted(directions), coefficients=coefficients,
                      unit=unit, scale=scale, model_hint=hint, source_sha256=sha, notes=notes)


def _write(target: Path, directions: Mapping[int, torch.Tensor], strings: Mapping[str, str]
           ) -> None:
    import gguf

    with atomic_path(target, what="GGUF") as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        for key, value in strings.items():
            writer.add_string(key, value)
        writer.add_uint32(KEY_COUNT, len(directions))
        for k in sorted(directions):
            writer.add_tensor(f"direction.{k}", directions[k].numpy().astype(np.float32))
        finish_gguf(writer)


def finish_gguf(writer: Any) -> None:
    """Write a ``gguf.GGUFWriter``'s header, key/values and tensors, and close it."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ---- reading ----------------------------------------------------------------------------------

def _field_value(reader: Any, key: str) -> Any:
    """A scalar or string KV value (strings via ``field.parts[field.data[0]]``), or None."""
    import gguf

    fld = reader.get_field(key)
    if fld is None or not fld.types:
        return None
    if fld.types[0] == gguf.GGUFValueType.STRING:
        return bytes(fld.parts[fld.data[0]]).decode("utf-8", errors="replace")
    if fld.types[0] == gguf.GGUFValueType.ARRAY:
        return None
    return fld.parts[fld.data[0]].tolist()[0]


@dataclass
class ControlVectorFile:
    """The raw content of a control vector GGUF: tensors keyed by the file's layer numbers."""

    path: Path
    directions: dict[int, np.ndarray]
    fields: dict[str, Any]

    @property
    def n_embd(self) -> int:
        return int(next(iter(self.directions.values())).shape[0])


def read_control_vector(path: str | os.PathLike[str]) -> ControlVectorFile:
    """Read and check a control vector GGUF as llama.cpp would (one-line error if it would not).

    Checks what llama.cpp checks (``direction.<k>`` names with k >= 1, F32, 1-D, one size) and
    that the file is complete. Layer numbers are the file's own (no shift).

    Example:
        >>> import tempfile, torch
        >>> from steerlab.vector import SteeringVector
        >>> vec = SteeringVector.from_directions({10: torch.ones(8)})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     cv = read_control_vector(to_gguf(vec, folder + "/v.gguf").path)
        >>> cv.directions.keys(), cv.n_embd
        (dict_keys([10]), 8)
    """
    import gguf

    source = Path(path)
    if not source.is_file():
        raise SteerlabError(f"{source}: control vector file not found")
    size = source.stat().st_size
    with source.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise SteerlabError(f"{source}: not a GGUF file (no GGUF magic)")
    try:
        reader = gguf.GGUFReader(str(source))
    except Exception as exc:  # gguf-py raises ValueError/IndexError/KeyError on bad bytes
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SteerlabError(f"{source}: truncated or corrupt GGUF (gguf-py: {first})") from None
    fields = {key: _field_value(reader, key) for key in reader.fields
              if not key.startswith("GGUF.")}
    arch = fields.get(KEY_ARCH)
    if arch is not None and arch != ARCH:
        raise SteerlabError(f"{source}: a GGUF for {arch!r}, not a control vector "
                            f"(general.architecture is not {ARCH!r})")
    if not reader.tensors:
        raise SteerlabError(f"{source}: no direction tensors")
    directions: dict[int, np.ndarray] = {}
    width: int | None = None
    for tensor in reader.tensors:
        name = tensor.name
        prefix, _, index = name.partition(".")
        if prefix != "direction" or not (index.isascii() and index.isdigit()):
            raise SteerlabError(f"{source}: tensor {name!r}: expected 'direction.<k>' "
                                "(llama.cpp rejects the file)")
        layer = int(index)
        if layer == 0:
            raise SteerlabError(f"{source}: direction.0: llama.cpp never steers layer 0 and "
                                "rejects the file")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise SteerlabError(f"{source}: {name} is {tensor.tensor_type.name}, not F32 "
                                "(llama.cpp reads F32 control vectors only)")
        shape = [int(d) for d in tensor.shape]  # ggml order: ne[0] first
        if any(d != 1 for d in shape[1:]):
            raise SteerlabError(f"{source}: {name} has shape {list(reversed(shape))}, not 1-D "
                                "(llama.cpp needs one [n_embd] vector per layer)")
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size or tensor.data.size != tensor.n_elements:
            raise SteerlabError(f"{source}: truncated GGUF ({name} ends at byte {end}, the file "
                                f"has {size})")
        n = int(shape[0])
        if width is None:
            width = n
        elif n != width:
            raise SteerlabError(f"{source}: {name} has {n} values, earlier tensors {width} "
                                "(llama.cpp needs one size)")
        data = np.array(tensor.data, dtype=np.float32).reshape(n)
        if not np.isfinite(data).all():
            raise SteerlabError(f"{source}: {name} contains NaN or inf")
        directions[layer] = directions[layer] + data if layer in directions else data
    return ControlVectorFile(path=source, directions=dict(sorted(directions.items())),
                             fields=fields)


def from_gguf(path: str | os.PathLike[str], *, model: Any = None, shift: int = 0
              ) -> SteeringVector:
    """Import a llama.cpp control vector as a :class:`SteeringVector` (``block_output`` site).

    The directions are what the file adds at llama.cpp scale 1 (scale baked in at export stays
    in), so ``steer(lm, vec, coefficient=1)`` reproduces ``--control-vector FILE``. Files
    written by steerlab get their manifest back (model, dataset, residual-norm calibration, so
    ``strength=`` keeps its meaning); the file's details go to ``manifest["gguf"]``. ``shift``
    moves every layer: llama.cpp's ``cvector-generator`` names the vector it read at block k
    ``direction.{k+1}``, so import those with ``shift=-1``. With ``model`` (LoadedModel or HF
    model) the hidden size and layer range are checked.

    Example:
        >>> vec = from_gguf("cvector.gguf", model=lm, shift=-1)      # doctest: +SKIP

        Here a file that names the vector read at block 2 ``direction.3`` (as
        ``cvector-generator`` does), imported for a tiny 4-layer model of hidden size 64:

        >>> import tempfile, torch
        >>> from steerlab.testing.tiny import tiny_lm
        >>> from steerlab.vector import SteeringVector
        >>> lm = tiny_lm()
        >>> written = SteeringVector.from_directions({3: torch.ones(64)})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = to_gguf(written, folder + "/cvector.gguf").path
        ...     vec = from_gguf(path, model=lm, shift=-1)
        >>> vec.layers, vec.hidden_size
        ([2], 64)
    """
    cv = read_control_vector(path)
    source = cv.path
    shifted: dict[int, torch.Tensor] = {}
    for layer, data in cv.directions.items():
        k = layer + int(shift)
        if k < 0:
            raise SteerlabError(f"{source}: direction.{layer} shifted by {shift} is layer {k}, "
                                "below 0")
        shifted[k] = torch.from_numpy(data.copy())
    fields = cv.fields
    manifest: dict[str, Any] = {}
    origin = "other"
    raw_manifest = fields.get(KEY_MANIFEST)
    if isinstance(raw_manifest, str):
        try:
            loaded = json.loads(raw_manifest)
        except json.JSONDecodeError as exc:
            raise SteerlabError(f"{source}: {KEY_MANIFEST} is not valid JSON ({exc.msg})"
                                ) from None
        if not isinstance(loaded, dict):
            raise SteerlabError(f"{source}: {KEY_MANIFEST}: expected a JSON object")
        manifest = loaded
        origin = "steerlab"
    scale_info: Any = None
    if isinstance(fields.get(KEY_SCALE), str):
        try:
            scale_info = json.loads(fields[KEY_SCALE])
        except json.JSONDecodeError:
            scale_info = fields[KEY_SCALE]
    hint = fields.get(KEY_HINT)
    gguf_info = {"path": str(source), "origin": origin, "model_hint": hint,
                 "layer_count": fields.get(KEY_COUNT), "shift": int(shift),
                 "steerlab_version": fields.get(KEY_VERSION),
                 "source_sha256": fields.get(KEY_SOURCE), "scale": scale_info,
                 "file_layers": list(cv.directions)}
    if origin == "steerlab":
        manifest = {**manifest, "site": "block_output", "gguf": gguf_info}
        if manifest.get("resid_norms") and (shift or (scale_info or {}).get("shift")):
            # calibration belongs to the original site's layers; move it with the vectors
            total = int(shift) + int((scale_info or {}).get("shift") or 0)
            manifest["resid_norms"] = {str(int(k) + total): v
                                       for k, v in manifest["resid_norms"].items()}
    else:
        manifest = {"format_version": 1, "site": "block_output", "method": "gguf_import",
                    "model_id": None, "n_layers": None, "model_type": hint,
                    "steerlab_version": __version__, "gguf": gguf_info}
        if model is not None:
            from steerlab.model.load import LoadedModel

            if isinstance(model, LoadedModel):
                manifest["model_id"] = model.model_id
    try:
        vector = SteeringVector(shifted, manifest)
    except SteerlabError as exc:
        raise SteerlabError(f"{source}: {exc}") from None
    if model is not None:
        vector.check_model(model, source=str(source))
    return vector
