"""The results store of one run directory: tidy records in ``results.jsonl``, resumable.

One *cell* is one measured unit of work (e.g. layer 12 × coefficient 2 on the val split); it
yields one or more records (one per metric). A cell's records are written with a single
``write`` of whole lines followed by ``fsync``, so a killed run loses at most the cell in
flight; every record also says how many records its cell has, and on open the records of an
incomplete cell (and a torn last line) are dropped (the file is rewritten through a temp file
+ rename). Rerunning a command skips cells already in the store.

Every reader of ``results.jsonl`` goes through :func:`read_results`, which says what is wrong
with a bad line in one line naming the file and the line number (see there for what is
dropped and what is refused).

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
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.util.io import atomic_write, json_text, write_jsonl
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


def replace_cell_rows(path: str | os.PathLike[str], cell: str, rows: Iterable[dict[str, Any]],
                      *, what: str = "file") -> Path:
    """Rewrite the JSONL side file ``path`` (answers, generations, frontiers beside
    ``results.jsonl``) with ``cell``'s ``rows`` replacing any earlier ones; atomic.

    The other cells' lines are kept as they were, in order; the new rows follow, each with
    ``"cell": cell`` first. A line that is not a JSON object (a torn line from an older crash)
    is dropped. Returns the path.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "answers.jsonl"
        >>> _ = replace_cell_rows(p, "a", [{"x": 1}, {"x": 2}])
        >>> _ = replace_cell_rows(p, "b", [{"x": 3}])
        >>> replace_cell_rows(p, "a", [{"x": 4}]).read_text().splitlines()
        ['{"cell": "b", "x": 3}', '{"cell": "a", "x": 4}']
    """
    target = Path(path)
    kept: list[str] = []
    if target.exists():
        for line in target.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("cell") != cell:
                kept.append(line)
    kept += [json_text({"cell": cell, **row}) for row in rows]
    return atomic_write(target, "".join(line + "\n" for line in kept), what=what)


FIX_HINT = "delete that line (its cell is measured again) or the run directory to start over"


@dataclass
class ResultsFile:
    """What :func:`read_results` found in a ``results.jsonl``.

    ``records`` holds the records of complete cells, in file order. Left out: ``torn_line``,
    the number of a last line cut short (None if there was none); ``partial_cells``, cells
    with fewer records than they announced; ``bad_lines``, one message per other unreadable
    line (only when read with ``strict=False``; a strict read raises on the first).
    """

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    torn_line: int | None = None
    partial_cells: list[str] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    ends_with_newline: bool = True

    @property
    def clean(self) -> bool:
        """Whether the file is exactly ``records``, one per line (nothing to repair)."""
        return (self.torn_line is None and not self.partial_cells and not self.bad_lines
                and self.ends_with_newline)


def _line_problem(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """The record on one line, or None and what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    try:
        record = json.loads(text)
    except RecursionError:
        return None, "not a results record (JSON nested too deeply)"
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        col = getattr(exc, "colno", None)
        return None, f"not JSON ({msg}{f' at column {col}' if col else ''})"
    if not isinstance(record, dict):
        return None, ("not a results record (expected a JSON object, got "
                      f"{type(record).__name__})")
    missing = [k for k in ("cell", "metric") if k not in record]
    if missing:
        return None, f"not a results record (no {' or '.join(repr(k) for k in missing)} field)"
    return record, ""


def read_results(path: str | os.PathLike[str], *, strict: bool = True) -> ResultsFile:
    """Read a ``results.jsonl``: the records of complete cells, and what was left out.

    The one reader of the file (the store on resume, the studies that read back their
    records, the report). What it does with damage:

    * **A last line cut short** (no final newline, and not a whole record: what a write
      interrupted by a crash, a full disk or a kill leaves) is *dropped*, never refused: it
      can only belong to the cell that was in flight, which a resumed run measures again.
      ``torn_line`` says it happened (the store warns and rewrites the file without it).
    * **A cell with fewer records than it announced** is dropped the same way.
    * **Any other bad line** — not UTF-8, not JSON, not a record, anywhere else in the file
      (including a whole last line that ends in a newline) — is not something a killed run
      leaves: the file was edited or damaged, and guessing could mix results. With ``strict``
      (the default) it raises one :class:`SteerlabError` naming the file, the line number,
      what is wrong and what to do; with ``strict=False`` (read-only views such as the
      report) it is left out and described in ``bad_lines``.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "results.jsonl"
        >>> _ = p.write_bytes(b'{"cell": "a", "metric": "m"}\\n{"cell": "b", "met')
        >>> got = read_results(p)
        >>> len(got.records), got.torn_line
        (1, 2)
        >>> _ = p.write_bytes(b'\\xff\\n{"cell": "a", "metric": "m"}\\n')
        >>> read_results(p)                                   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: ...results.jsonl line 1: not UTF-8 (byte 0xff at column 1)...
    """
    target = Path(path)
    out = ResultsFile(target)
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise SteerlabError(f"{target}: cannot read results: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    out.ends_with_newline = not lines[-1]
    parsed: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        record, why = _line_problem(raw)
        if record is not None:
            parsed.append(record)
        elif number == len(lines):  # unterminated last line: the torn tail of a write
            out.torn_line = number
        elif strict:
            raise SteerlabError(f"{target} line {number}: {why}; {FIX_HINT}")
        else:
            out.bad_lines.append(f"{target.name} line {number}: {why}")
    counts: dict[str, int] = {}
    for record in parsed:
        counts[str(record["cell"])] = counts.get(str(record["cell"]), 0) + 1
    partial: dict[str, None] = {}
    for record in parsed:  # a cell is complete when all the records it announced are present
        want = record.get("cell_records", 1)
        want = want if isinstance(want, int) else 1
        if counts[str(record["cell"])] >= want:
            out.records.append(record)
        else:
            partial[str(record["cell"])] = None
    out.partial_cells = list(partial)
    return out


class ResultStore:
    """``results.jsonl`` in ``run_dir``, with resume by cell id.

    Opening reads what is there (and repairs a torn tail); the directory is created by the
    first :meth:`add`, which first calls ``before_first_write`` (the run writes its settings).
    """

    def __init__(self, run_dir: str | os.PathLike[str], *,
                 before_first_write: Callable[[], None] | None = None):
        self.run_dir = Path(run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise SteerlabError(f"cannot create run directory {self.run_dir}: it is a file")
        if self.run_dir.is_dir() and not os.access(self.run_dir, os.W_OK):
            raise SteerlabError(f"run directory {self.run_dir} is not writable")
        self._before_first_write = before_first_write
        self.path = self.run_dir / "results.jsonl"
        self._records: list[dict[str, Any]] = []
        self._cells: set[str] = set()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        found = read_results(self.path)
        if found.torn_line is not None:
            print(f"warning: {self.path} line {found.torn_line}: dropped a last line cut short "
                  "(a write was interrupted); its cell is measured again", file=sys.stderr)
        if not found.clean:
            write_jsonl(self.path, found.records, what="results")
        self._records = found.records
        self._cells = {r["cell"] for r in found.records}

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
            lines.append(json_text(record) + "\n")
        payload = "".join(lines).encode("utf-8")
        if self._before_first_write is not None:
            self._before_first_write()
            self._before_first_write = None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
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
