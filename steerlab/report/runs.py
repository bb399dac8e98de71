"""Find and read run directories for the report, read-only.

A *run* is one command's results in one directory: ``results.jsonl`` records whose
``command`` is that command (``"eval ood"`` and ``"ood"`` are one command), its settings from
``run.json``, and the files beside them (vectors, ``generations.jsonl``/``generations.json``,
``verdicts.json``). One directory may hold several commands; an ``audit`` directory holds one
sub-directory per study: :func:`find_runs` walks everything below the root.

Nothing here writes: a torn last line or an unfinished cell (fewer records than its
``cell_records``) is left out of what is shown, and said so, but the file is not repaired
(that is the run's job when it resumes).

Example:
    >>> import tempfile
    >>> find_runs(tempfile.mkdtemp())
    []
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval.store import read_results as load_results

RESULTS = "results.jsonl"
SETTINGS = "run.json"
VERDICTS = "verdicts.json"
GENERATIONS = ("generations.jsonl", "generations.json")


def command_name(command: Any) -> str:
    """The study a record belongs to: ``"eval ood"`` → ``"ood"``; None → ``"unknown"``.

    Example:
        >>> command_name("eval ood"), command_name("sweep"), command_name(None)
        ('ood', 'sweep', 'unknown')
    """
    if not isinstance(command, str) or not command.strip():
        return "unknown"
    text = command.strip()
    return text.removeprefix("eval ").removeprefix("steerlab ").strip() or "unknown"


@dataclass
class Run:
    """One command's results in one directory."""

    path: Path
    rel: str
    command: str
    settings: dict[str, Any]
    records: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)

    def select(self, metric: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Records of ``metric`` whose fields (or ``extra`` fields) equal every ``match``.

        Example:
            >>> run = Run(Path("."), ".", "x", {}, [{"metric": "a", "layer": 1, "extra":
            ...           {"group": "g"}}])
            >>> len(run.select("a", layer=1, group="g")), len(run.select("b"))
            (1, 0)
        """
        out = []
        for record in self.records:
            if metric is not None and record.get("metric") != metric:
                continue
            extra = record.get("extra") or {}
            if all(record.get(k, extra.get(k)) == v for k, v in match.items()):
                out.append(record)
        return out

    def files(self, suffix: str) -> list[Path]:
        """Files of the run directory (not below it) ending in ``suffix``, sorted."""
        return sorted(p for p in self.path.iterdir() if p.is_file() and p.name.endswith(suffix))


def field_of(record: dict[str, Any], key: str) -> Any:
    """A record's field, or its ``extra`` field of that name.

    Example:
        >>> field_of({"layer": 3, "extra": {"group": "ID"}}, "group")
        'ID'
    """
    if key in record and record[key] is not None:
        return record[key]
    return (record.get("extra") or {}).get(key)


def read_results(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The complete records of a ``results.jsonl`` and what was left out (read-only).

    Through the one reader, :func:`steerlab.eval.store.read_results`, but not strict: a report
    shows what it can, so a bad line (not UTF-8, not JSON, not a record; named with its line
    number) is left out and listed among the problems instead of stopping the report.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "results.jsonl"
        >>> _ = p.write_text('{"cell": "a", "cell_records": 2, "metric": "m"}\\n{"cel')
        >>> records, problems = read_results(p)
        >>> records, len(problems)
        ([], 2)
    """
    try:
        found = load_results(path, strict=False)
    except SteerlabError as exc:
        return [], [str(exc)]
    problems = [f"{line} (left out)" for line in found.bad_lines]
    if found.torn_line is not None:
        problems.append(f"{path.name}: its torn last line (line {found.torn_line}) is not a "
                        "whole results record (left out)")
    if found.partial_cells:
        problems.append(f"{path.name}: {len(found.partial_cells)} unfinished cell(s) left out "
                        "(the run was stopped mid-cell; rerunning it resumes)")
    return found.records, problems


def read_json(path: Path) -> tuple[Any, str | None]:
    """JSON from ``path``, or ``(None, why not)``.

    Example:
        >>> read_json(Path("/nonexistent/x.json"))[0] is None
        True
    """
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, f"{path.name}: not found"
    except (OSError, ValueError) as exc:
        return None, f"{path.name}: not readable JSON ({exc})"


def _directories(root: Path) -> Iterator[Path]:
    yield root
    for current, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for name in dirs:
            yield Path(current) / name


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds anything the report renders."""
    names = {RESULTS, SETTINGS, VERDICTS, *GENERATIONS}
    return any((path / name).is_file() for name in names)


def find_runs(root: str | os.PathLike[str]) -> list[Run]:
    """Every run at or below ``root``, in directory order, commands in the order of their
    first record (then those only ``run.json`` names).

    Example:
        >>> find_runs("runs/audit")                                    # doctest: +SKIP
        [Run(path=PosixPath('runs/audit/sweep'), rel='sweep', command='sweep', ...), ...]
    """
    base = Path(root)
    if not base.exists():
        raise SteerlabError(f"{base}: no such run directory")
    if not base.is_dir():
        raise SteerlabError(f"{base}: is a file; give a run directory")
    runs: list[Run] = []
    for directory in _directories(base):
        if not is_run_dir(directory):
            continue
        rel = str(directory.relative_to(base)) if directory != base else "."
        records, problems = ([], []) if not (directory / RESULTS).is_file() else \
            read_results(directory / RESULTS)
        settings: dict[str, Any] = {}
        if (directory / SETTINGS).is_file():
            loaded, why = read_json(directory / SETTINGS)
            if isinstance(loaded, dict):
                settings = {command_name(k): v for k, v in loaded.items()
                            if isinstance(v, dict)}
            else:
                problems.append(why or f"{SETTINGS}: expected an object of settings per "
                                "command")
        order: list[str] = []
        by_command: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            name = command_name(record.get("command"))
            if name not in by_command:
                order.append(name)
                by_command[name] = []
            by_command[name].append(record)
        order += [name for name in settings if name not in by_command]
        if not order and any((directory / g).is_file() for g in GENERATIONS):
            order = ["generations"]
        for name in order:
            runs.append(Run(directory, rel, name, dict(settings.get(name, {})),
                            by_command.get(name, []), list(problems)))
        if not order and problems:
            runs.append(Run(directory, rel, "unknown", {}, [], problems))
    return runs
