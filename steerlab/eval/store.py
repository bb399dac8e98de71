"""The results store of one run directory: tidy records in ``results.jsonl``, resumable.

One *cell* is one measured unit of work (e.g. layer 12 × coefficient 2 on the val split); it
yields one or more records (one per metric). A cell's records are written with a single
``write`` of whole lines followed by ``fsync``, so a killed run loses at most the cell in
flight; every record also says how many records its cell has, and on open the records of an
incomplete cell (and a torn last line) are dropped (the file is rewritten through a temp file
+ rename). Rerunning a command skips cells already in the store.

Example:
    >>> import tempfile
    >>> store = ResultStore(tempfile.mkdtemp())
    >>> store.done("sweep/layer=3/c=1")
    False
    >>> store.add("sweep/layer=3/c=1", [make_record("score", 0.7, layer=3, coefficient=1.0)])
    >>> store.done("sweep/layer=3/c=1"), store.records()[0]["value"]
    (True, 0.7)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.util.io import atomic_write
from steerlab.version import __version__

#: Fields every record carries (``None`` where a field does not apply), in this order.
FIELDS = ("cell", "command", "model", "data", "method", "layer", "site", "coefficient",
          "strength", "n_pairs", "seed", "split", "metric", "value", "ci_low", "ci_high", "n",
          "seconds", "steerlab_version")


def cell_id(command: str, **parts: Any) -> str:
    """A stable id for one measured cell: the command then sorted ``key=value`` parts.

    Example:
        >>> cell_id("ppl", coefficient=0.0, window=3)
        'ppl/coefficient=0.0/window=3'
    """
    return "/".join([command, *(f"{k}={parts[k]}" for k in sorted(parts))])


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def make_record(metric: str, value: float, *, ci: tuple[float, float] | None = None,
                **fields: Any) -> dict[str, Any]:
    """One tidy record: ``metric``/``value`` plus any of :data:`FIELDS`; unknown keys go to
    ``extra``.

    Example:
        >>> r = make_record("score", 0.5, ci=(0.4, 0.6), n=20, layer=10)
        >>> r["ci_low"], r["layer"], r["coefficient"]
        (0.4, 10, None)
    """
    record: dict[str, Any] = {key: None for key in FIELDS}
    record["steerlab_version"] = __version__
    extra: dict[str, Any] = {}
    for key, val in fields.items():
        if key in FIELDS:
            record[key] = _clean(val)
        else:
            extra[key] = val
    record["metric"] = metric
    record["value"] = _clean(float(value))
    if ci is not None:
        record["ci_low"], record["ci_high"] = _clean(float(ci[0])), _clean(float(ci[1]))
    if extra:
        record["extra"] = extra
    return record


class ResultStore:
    """``results.jsonl`` in ``run_dir`` (created if missing), with resume by cell id."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SteerlabError(f"cannot create run directory {self.run_dir}: "
                                f"{exc.strerror or exc}") from None
        if not self.run_dir.is_dir():
            raise SteerlabError(f"run directory {self.run_dir} is not a directory")
        if not os.access(self.run_dir, os.W_OK):
            raise SteerlabError(f"run directory {self.run_dir} is not writable")
        self.path = self.run_dir / "results.jsonl"
        self._records: list[dict[str, Any]] = []
        self._cells: set[str] = set()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").split("\n")
        parsed: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "cell" not in record:
                    raise ValueError("not a record")
            except ValueError as exc:
                if number == len(lines):  # the torn tail of a write cut short
                    break
                raise SteerlabError(f"{self.path}: line {number} is not a results record "
                                    f"({exc})") from None
            parsed.append(record)
        counts: dict[str, int] = {}
        for record in parsed:
            counts[record["cell"]] = counts.get(record["cell"], 0) + 1
        # a cell is complete when all the records it announced are present
        complete = [r for r in parsed if counts[r["cell"]] >= int(r.get("cell_records", 1))]
        if len(complete) != len(parsed) or lines[-1] != "":
            atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in complete),
                         what="results")
        self._records = complete
        self._cells = {r["cell"] for r in complete}

    def done(self, cell: str) -> bool:
        """Whether ``cell`` was finished by this or an earlier run."""
        return cell in self._cells

    def add(self, cell: str, records: Sequence[dict[str, Any]]) -> None:
        """Append all records of ``cell`` at once (one write + fsync)."""
        if not records:
            raise SteerlabError(f"cell {cell!r} produced no records")
        lines = []
        for record in records:
            record = dict(record)
            record["cell"] = cell
            record["cell_records"] = len(records)
            lines.append(json.dumps(record, allow_nan=False) + "\n")
        payload = "".join(lines).encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SteerlabError(f"{self.path}: cannot write results: "
                                f"{exc.strerror or exc}") from None
        try:
            written = os.write(fd, payload)
            if written != len(payload):
                raise SteerlabError(f"{self.path}: short write ({written} of {len(payload)} "
                                    "bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        self._records += [json.loads(line) for line in lines]
        self._cells.add(cell)

    def records(self, **match: Any) -> list[dict[str, Any]]:
        """All records, or those whose fields equal every ``match`` item.

        Example:
            >>> store.records(metric="score")   # doctest: +SKIP
        """
        return [r for r in self._records
                if all(r.get(key) == value for key, value in match.items())]

    def extend(self, cell: str, records: Iterable[dict[str, Any]]) -> None:
        """:meth:`add` unless the cell is already done (convenience for idempotent writers)."""
        if not self.done(cell):
            self.add(cell, list(records))
