"""Progress that a person can follow and a log file can keep: one bar at a time.

:func:`bar` returns a tqdm bar on a terminal. When stderr is not a terminal (piped, CI logs)
it returns a :class:`LineProgress` that prints one plain line every ``interval`` seconds
(``desc: 40/120 rows, 1m20s, ~2m40s left``) instead of carriage-return redraws and cursor
escapes — nothing at all for a step that ends within a few seconds. Only the outermost bar
shows: a bar opened while another is active (a scorer called
by a sweep cell) is silent, so nested bars never interleave; the outer one carries the overall
count. ``STEERLAB_PROGRESS=0`` silences every bar.

Example:
    >>> with bar(3, "demo", enabled=False) as b:
    ...     b.update(3)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, Protocol

_LOCAL = threading.local()


class Bar(Protocol):
    def update(self, n: float = 1) -> Any: ...

    def set_postfix_str(self, text: str) -> Any: ...

    def close(self) -> Any: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: Any, exc: Any, tb: Any, /) -> Any: ...


def _fmt_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class NullBar:
    """A bar that shows nothing (nested, or progress off)."""

    def update(self, n: float = 1) -> None:
        return None

    def set_postfix_str(self, text: str) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any, /) -> None:
        return None


class LineProgress:
    """Plain-line progress for logs: silent for quick steps; once a step has run ``first``
    seconds, a line then and every ``interval`` seconds, and a last one when it ends."""

    def __init__(self, total: int, desc: str, unit: str, interval: float = 15.0,
                 first: float = 5.0):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.first = first
        self.n: float = 0
        self.postfix = ""
        self.printed = False
        self.start = self.last = time.monotonic()

    def _print(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.start
        head = f"{self.desc}: {self.n:.0f}/{self.total} {self.unit}"
        tail = f", {_fmt_seconds(elapsed)}"
        if not final and self.n:
            tail += f", ~{_fmt_seconds(elapsed / self.n * (self.total - self.n))} left"
        if final:
            tail += " (done)"
        extra = f" [{self.postfix}]" if self.postfix else ""
        print(head + tail + extra, file=sys.stderr, flush=True)
        self.printed = True

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        due = self.interval if self.printed else self.first
        if now - self.last >= due and self.n < self.total:
            self.last = now
            self._print()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.printed:
            self._print(final=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any, /) -> None:
        self.close()


class _Outermost:
    """Marks its bar as the active one while open; inner bars are silent meanwhile."""

    def __init__(self, inner: Any):
        self.inner = inner
        _LOCAL.active = True

    def update(self, n: float = 1) -> Any:
        return self.inner.update(n)

    def set_postfix_str(self, text: str) -> Any:
        return self.inner.set_postfix_str(text)

    def close(self) -> None:
        if getattr(_LOCAL, "active", False):
            _LOCAL.active = False
            self.inner.close()

    def __enter__(self) -> _Outermost:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None, /) -> None:
        self.close()


def enabled_by_env() -> bool:
    """False when ``STEERLAB_PROGRESS=0`` (or ``TQDM_DISABLE=1``) asks for silence."""
    return os.environ.get("STEERLAB_PROGRESS", "1") != "0" and \
        os.environ.get("TQDM_DISABLE", "") not in ("1", "true")


def bar(total: int, desc: str, *, unit: str = "it", enabled: bool = True) -> Bar:
    """The progress bar for a step of ``total`` units (see the module notes).

    Example:
        >>> with bar(2, "cells", enabled=False) as b:
        ...     b.update()
    """
    if not enabled or not enabled_by_env() or getattr(_LOCAL, "active", False):
        return NullBar()
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return _Outermost(tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True))
    return _Outermost(LineProgress(total, desc, unit))
