"""One evaluation run: its directory, its settings, its cells, and what it prints and plots.

Every study (``eval sweep``, ``samples``, ``ood``, ...) runs through an :class:`EvalRun`:

* **Settings.** The run directory's ``run.json`` holds, per command, every setting that changes
  a number (model and its revision hash, data and its sha256, the vector's sha256, method,
  layers, site, positions, unit and values, format, limit, train limit, seed, judge, ...).
  A rerun with the same settings resumes; with a different one it stops with one line naming
  what differs — never silently reusing results measured under other settings. A study's
  settings are derived from its config dataclass
  (:func:`~steerlab.eval.configs.fields.run_settings`): every field is one unless marked
  :func:`~steerlab.eval.configs.fields.not_a_setting` (``out``, batch sizes), so none is
  written out twice and a new field cannot silently stay out of ``run.json``.
* **Cells.** Results go to the :class:`~steerlab.eval.store.ResultStore` cell by cell (one
  atomic append each), so a killed run loses at most the cell in flight; ``todo`` says how
  many cells are already done and shows one progress bar over the rest.
* **Nothing on disk before the inputs pass.** Creating an :class:`EvalRun` checks that
  ``--out`` could be written (and removes what the check made) but writes nothing: the
  directory and ``run.json`` appear when the study first puts something there — its first
  cell, a :meth:`EvalRun.path` to write into, or :meth:`EvalRun.finish`. A study that stops
  on a bad input before that (a bad vector file, ``--layers`` the vector lacks, a model that
  will not load) leaves no run directory behind, or an existing one as it was.
* **Choosing.** :func:`choose_best` picks the best layer on the validation split only when its
  effect is distinguishable from zero (the interval excludes 0); otherwise it says so.
* **Output.** Tables (:mod:`steerlab.eval.tables`) and figures (:mod:`steerlab.eval.figures`),
  then one line saying where everything went.

Example:
    >>> import tempfile
    >>> run = EvalRun(tempfile.mkdtemp(), "demo", {"model": "m", "limit": 4})
    >>> run.todo(["a", "b"])
    ['a', 'b']
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval.configs.fields import setting_value
from steerlab.eval.store import ResultStore
from steerlab.eval.tables import console, done_line
from steerlab.util.io import probe_dir, sha256_file, write_json

SETTINGS_FILE = "run.json"


class EvalRun:
    """A run directory for one command, with its settings checked against earlier runs.

    Nothing is written until the study first stores a cell, asks for a :meth:`path` or
    calls :meth:`finish` (then the directory and ``run.json`` are made): a study that fails
    on its inputs before that leaves ``out`` as it found it.
    """

    def __init__(self, out: str | os.PathLike[str], command: str, settings: Mapping[str, Any],
                 *, progress: bool = True):
        self.out = Path(out)
        self.command = command
        self.settings: dict[str, Any] = {}
        self.progress = progress
        self.started = False
        if self.out.exists() and not self.out.is_dir():
            raise SteerlabError(f"--out {self.out}: is a file; the run directory must be a "
                                "directory")
        probe_dir(self.out, what="run directory")  # fails now, and leaves nothing behind
        self.store = ResultStore(self.out, before_first_write=self.start)
        self.update(settings)

    # ---- settings ---------------------------------------------------------------------------
    def update(self, settings: Mapping[str, Any]) -> None:
        """Add settings (e.g. hashes known only after loading) and check them against the
        run directory's earlier settings for this command (saved once the run has started)."""
        self.settings.update({k: setting_value(v) for k, v in settings.items()})
        saved = self._saved()
        before = saved.get(self.command, {})
        if self.store.records(command=self.command) or before:
            differ = [k for k in self.settings if k in before and before[k] != self.settings[k]]
            if differ:
                shown = "; ".join(f"{k} was {before[k]!r}, now {self.settings[k]!r}"
                                  for k in differ[:4])
                raise SteerlabError(
                    f"{self.out}: holds {self.command} results made with other settings "
                    f"({shown}); use another --out, or the same settings to resume")
        if self.started:
            self._save(saved)

    def start(self) -> None:
        """Make the run directory and write ``run.json`` (once; the first write calls it)."""
        if not self.started:
            self.started = True
            self._save(self._saved())

    def _saved(self) -> dict[str, Any]:
        path = self.out / SETTINGS_FILE
        if not path.exists():
            return {}
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise SteerlabError(f"{path}: not a readable settings file ({exc}); remove it "
                                "or use another --out") from None
        if not isinstance(saved, dict):
            raise SteerlabError(f"{path}: expected a JSON object of settings per command")
        return saved

    def _save(self, saved: dict[str, Any]) -> None:
        saved[self.command] = {**saved.get(self.command, {}), **self.settings}
        write_json(self.out / SETTINGS_FILE, saved, sort_keys=True)

    # ---- cells ----------------------------------------------------------------------------
    def todo(self, cells: Sequence[str]) -> list[str]:
        """The cells not yet in the store, after saying how many are done."""
        left = [c for c in cells if not self.store.done(c)]
        if len(left) < len(cells) and self.progress:
            console.print(f"resuming {self.out}: {len(cells) - len(left)} of {len(cells)} "
                          "cells already done")
        return left

    def add(self, cell: str, records: Sequence[dict[str, Any]]) -> None:
        """Store one cell's records (the command name is filled in)."""
        self.store.add(cell, [{**r, "command": r.get("command") or self.command}
                              for r in records])

    def records(self, **match: Any) -> list[dict[str, Any]]:
        """This command's records matching ``match``."""
        return self.store.records(command=self.command, **match)

    def path(self, name: str) -> Path:
        """A file inside the run directory (which this starts: see :meth:`start`)."""
        self.start()
        return self.out / name

    def finish(self, plots: Sequence[Path]) -> None:
        """Say where the results and plots went."""
        self.start()
        done_line(self.out, plots)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """A short (16 hex) sha256 of a file: the identity of a vector in run settings.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "v"
        >>> _ = p.write_text("x")
        >>> len(file_sha256(p))
        16
    """
    return sha256_file(Path(path))[:16]


def text_sha256(text: str) -> str:
    """A short sha256 of a string (e.g. a judge prompt).

    Example:
        >>> text_sha256("a")
        'ca978112ca1bbdca'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Choice:
    """The layer chosen on validation, or why none was (``layer`` is None then)."""

    layer: int | None
    effect: float
    low: float
    high: float
    reason: str

    @property
    def chosen(self) -> bool:
        return self.layer is not None


def choose_best(effects: Mapping[int, tuple[float, float, float]]) -> Choice:
    """The layer with the largest validation effect — if its interval lies above zero.

    ``effects[layer] = (effect, low, high)``, the effect signed so that positive means the
    vector pushes the way it was made to. A largest effect whose interval reaches zero is no
    finding: then ``layer`` is None and ``reason`` says so (callers may still score that layer
    on test, labelled as not significant).

    Example:
        >>> choose_best({10: (0.3, 0.1, 0.5), 12: (0.1, -0.1, 0.3)}).layer
        10
        >>> choose_best({10: (0.02, -0.1, 0.14)}).layer is None
        True
    """
    finite = {k: v for k, v in effects.items() if not math.isnan(v[0])}
    if not finite:
        return Choice(None, math.nan, math.nan, math.nan, "no layer has a measured effect")
    best = max(finite, key=lambda k: finite[k][0])
    effect, low, high = finite[best]
    if math.isnan(low) or math.isnan(high):
        return Choice(None, effect, low, high,
                      f"layer {best} has the largest effect ({effect:+.3f}) but too few items "
                      "for an interval")
    if low <= 0.0:
        return Choice(None, effect, low, high,
                      f"no layer's effect is distinguishable from zero (largest: layer {best}, "
                      f"{effect:+.3f} [{low:+.3f}, {high:+.3f}])")
    return Choice(best, effect, low, high, f"layer {best}: effect {effect:+.3f} "
                  f"[{low:+.3f}, {high:+.3f}] on validation")


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` is the elapsed seconds.

    Example:
        >>> with stopwatch() as t:
        ...     pass
        >>> t[0] >= 0
        True
    """
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start
