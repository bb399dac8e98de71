"""The vectors a server may steer with: loaded once from ``--vector NAME=PATH``, found by name.

Requests name vectors; they never pass paths. Each vector is checked against the served model
when it is loaded (hidden size, layer range) and listed with its layers, hidden size and the
sha256 of its file, so a client can tell exactly which artefact steered its output.

Example:
    >>> import torch
    >>> from steerlab.vector import SteeringVector
    >>> reg = VectorRegistry({"opt": SteeringVector.from_directions({1: torch.ones(4)})})
    >>> reg.names, reg.get("opt").layers
    (['opt'], [1])
    >>> parse_vector_option("optimism=opt.safetensors")
    ('optimism', PosixPath('opt.safetensors'))
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.util.io import sha256_file
from steerlab.vector import SteeringVector

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_name(name: str) -> str:
    """``name`` if it is a valid vector name (letters, digits, ``_.-``; at most 64), else error.

    Example:
        >>> check_name("syc-v2")
        'syc-v2'
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise SteerlabError(f"bad vector name {name!r}: use letters, digits, '_', '.' or '-' "
                            "(at most 64, starting with a letter or digit)")
    return name


def parse_vector_option(text: str) -> tuple[str, Path]:
    """Split one ``--vector NAME=PATH`` option.

    Example:
        >>> parse_vector_option("syc=vecs/syc.safetensors")
        ('syc', PosixPath('vecs/syc.safetensors'))
    """
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise SteerlabError(f"--vector {text!r}: expected NAME=PATH, e.g. "
                            "optimism=opt.safetensors")
    return check_name(name.strip()), Path(path.strip()).expanduser()


@dataclass(frozen=True)
class ServedVector:
    """One named vector of the server, with where it came from."""

    name: str
    vector: SteeringVector
    path: Path | None = None
    sha256: str | None = None

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/steering/vectors`` lists for this vector."""
        manifest = self.vector.manifest
        norms = manifest.get("resid_norms") or {}
        return {"name": self.name, "layers": self.vector.layers,
                "hidden_size": self.vector.hidden_size, "sha256": self.sha256,
                "method": self.vector.method, "site": self.vector.site,
                "model_id": manifest.get("model_id"),
                "calibrated_layers": sorted(int(k) for k in norms if str(k).isdigit()),
                "object": "steering.vector"}


class VectorRegistry:
    """Named :class:`~steerlab.vector.SteeringVector` s (read-only once the server runs).

    Example:
        >>> import torch
        >>> reg = VectorRegistry({"a": SteeringVector.from_directions({0: torch.ones(2)})})
        >>> reg.get("b")
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: unknown vector 'b'; this server has: a
    """

    def __init__(self, vectors: Mapping[str, SteeringVector | ServedVector] | None = None):
        self._vectors: dict[str, ServedVector] = {}
        for name, item in (vectors or {}).items():
            check_name(name)
            served = item if isinstance(item, ServedVector) else ServedVector(name, item)
            if served.name != name:
                served = ServedVector(name, served.vector, served.path, served.sha256)
            self._vectors[name] = served

    @classmethod
    def from_paths(cls, paths: Mapping[str, str | Path] | Iterable[tuple[str, str | Path]],
                   model: Any = None) -> VectorRegistry:
        """Load each ``name → path`` (checked against ``model`` when given).

        Example:
            >>> reg = VectorRegistry.from_paths({"opt": "opt.safetensors"}, lm)  # doctest: +SKIP
        """
        items = list(paths.items()) if isinstance(paths, Mapping) else list(paths)
        loaded: dict[str, ServedVector] = {}
        for name, path in items:
            check_name(name)
            if name in loaded:
                raise SteerlabError(f"vector name {name!r} given twice")
            source = Path(path).expanduser()
            vector = SteeringVector.load(source, model=model)
            loaded[name] = ServedVector(name, vector, source, sha256_file(source))
        return cls(loaded)

    @property
    def names(self) -> list[str]:
        return sorted(self._vectors)

    def __contains__(self, name: object) -> bool:
        return name in self._vectors

    def __len__(self) -> int:
        return len(self._vectors)

    def served(self, name: str) -> ServedVector:
        """The entry for ``name`` (one-line error naming the served vectors if unknown)."""
        found = self._vectors.get(name)
        if found is None:
            have = ", ".join(self.names) or "no vectors (start it with --vector NAME=PATH)"
            raise SteerlabError(f"unknown vector {name!r}; this server has: {have}")
        return found

    def get(self, name: str) -> SteeringVector:
        """The vector called ``name``."""
        return self.served(name).vector

    def describe(self) -> list[dict[str, Any]]:
        """Every vector's description, sorted by name."""
        return [self._vectors[name].describe() for name in self.names]
