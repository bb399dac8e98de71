"""File helpers: hashing, the one atomic write every writer uses, and the one JSON policy.

:func:`atomic_path` gives a temporary path beside the target; the caller writes it, and on
success it replaces the target in one ``os.replace`` (readers see the old file or the new one,
never half of one). Permission and missing-directory problems become one
:class:`SteerlabError` line naming the file.

Leftover temp files. The temp file is ``.<name>.<pid>.<random>.steerlab-partial-write``: hidden,
beside the target, ``<pid>`` the process writing it. A process killed between the write and the
rename (SIGKILL, out of memory, power loss) leaves it behind. Nothing ever reads it back — the
target is still the old, complete file (or absent) — so it is safe to delete by hand, and the
next write of the same target deletes it once process ``<pid>`` is gone. Names ending in
``.steerlab-tmp`` are the same leftovers from earlier versions and are cleaned the same way.
docs/TROUBLESHOOTING.md says this for users.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> atomic_write(p, "hi").read_text()
    'hi'
    >>> sha256_file(p)[:8]
    '8f434346'
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError

#: The temp file's suffix: says who left it and why (see the module docstring).
TMP_SUFFIX = ".steerlab-partial-write"
#: The suffix earlier versions used; their leftovers are cleaned too.
OLD_TMP_SUFFIXES = (".steerlab-tmp",)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(target: Path) -> list[Path]:
    """Remove temp files an interrupted write of ``target`` left behind; returns them.

    A leftover is removed when the pid in its name is not running (or is this process): a
    write still in flight in another live process keeps its temp file.

    Example:
        >>> clean_stale(Path("/nonexistent/dir/x"))
        []
    """
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    leftovers = [tmp for suffix in (TMP_SUFFIX, *OLD_TMP_SUFFIXES)
                 for tmp in target.parent.glob(f".{glob.escape(target.name)}.*{suffix}")]
    for tmp in leftovers:
        parts = tmp.name[len(target.name) + 2:].split(".")
        pid = int(parts[0]) if parts and parts[0].isdigit() else None
        if pid is None or pid == os.getpid() or not _alive(pid):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def check_writable(target: str | os.PathLike[str], *, what: str = "file") -> Path:
    """Fail now (one line) if ``target`` could not be written later: a directory where a file
    is wanted, a parent that is a file, a directory that cannot be created or written. The
    parent directory is probed with a temp file (see :func:`probe_dir`: nothing stays behind;
    the write creates the directory).

    Example:
        >>> check_writable("/etc/passwd/x.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: /etc/passwd/x.json: ... /etc/passwd is a file
    """
    path = Path(target)
    if path.is_dir():
        raise SteerlabError(f"{path}: is a directory; expected a {what} path")
    probe_dir(path.parent, what=what, target=path)
    return path


def probe_dir(directory: Path, *, what: str = "file", target: Path | None = None) -> Path:
    """Check a file could be written in ``directory`` (one-line error if not), leaving no
    trace: directories the check had to create are removed again (the write itself makes
    them), so a command that fails after the check leaves nothing behind.

    Example:
        >>> import tempfile
        >>> base = Path(tempfile.mkdtemp())
        >>> _ = probe_dir(base / "a" / "b")
        >>> list(base.iterdir())
        []
    """
    shown = target or directory
    blocker = next((p for p in [directory, *directory.parents] if p.exists() and not p.is_dir()),
                   None)
    if blocker is not None:
        raise SteerlabError(f"{shown}: cannot write a {what} there: {blocker} is a file")
    made = [p for p in [directory, *directory.parents] if not p.exists()]  # deepest first
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".steerlab-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SteerlabError(f"{shown}: cannot write a {what} in {directory}: "
                            f"{exc.strerror or exc}") from None
    finally:
        for made_dir in made:
            try:
                made_dir.rmdir()
            except OSError:
                break  # something else wrote there meanwhile: it, and its parents, stay
    return directory


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, what: str = "file") -> Iterator[Path]:
    """A temp path to write; on leaving the block it replaces ``target`` (removed on error).

    The temp path is ``.<name>.<pid>.<random>.steerlab-partial-write`` beside ``target``. If
    the process is killed between the write and the rename, that file stays behind: it is
    never read, is safe to delete, and the next write of ``target`` removes it (once ``<pid>``
    is gone; see :func:`clean_stale`). Leftovers of earlier writes are removed first.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "y.bin"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_bytes(b"ok")
        >>> out.read_bytes()
        b'ok'
    """
    path = Path(target)
    if path.is_dir():
        raise SteerlabError(f"{path}: is a directory; expected a {what} path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SteerlabError(f"{path}: cannot write {what}: cannot create directory "
                            f"{path.parent}: {exc.strerror or exc}") from None
    clean_stale(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        raise SteerlabError(f"{path}: cannot write {what}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write(target: str | os.PathLike[str], data: str | bytes, *,
                 what: str = "file") -> Path:
    """Write ``data`` (text as UTF-8) to ``target`` atomically; returns the path.

    Through :func:`atomic_path`: a process killed mid-write leaves ``target`` as it was plus a
    hidden ``.<name>.<pid>.<random>.steerlab-partial-write``, which is safe to delete and which
    the next write of ``target`` removes.

    Example:
        >>> import tempfile
        >>> atomic_write(Path(tempfile.mkdtemp()) / "z.json", "{}").name
        'z.json'
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(target, what=what) as tmp:
        try:
            tmp.write_bytes(payload)
        except OSError as exc:
            raise SteerlabError(f"{target}: cannot write {what}: {exc.strerror or exc}") from None
    return Path(target)


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats (NaN, ±inf) as ``None`` and keys as strings, recursively.

    The project's one JSON policy: JSON has no NaN or Infinity, so every writer of run JSON
    (:func:`json_text`, :func:`write_json`, :func:`write_jsonl`) goes through this.

    Example:
        >>> jsonable({1: [float("nan"), 0.5, float("-inf")]})
        {'1': [None, 0.5, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def json_text(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """``value`` as JSON text under the one policy (:func:`jsonable`: NaN/inf → null).

    Strict JSON always: a value :func:`jsonable` cannot make finite raises ``ValueError``
    rather than writing ``NaN`` or ``Infinity``. One line without ``indent`` (a JSONL row).

    Example:
        >>> json_text({"x": float("inf"), "y": 1.5})
        '{"x": null, "y": 1.5}'
    """
    return json.dumps(jsonable(value), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(target: str | os.PathLike[str], value: Any, *, what: str = "file",
               sort_keys: bool = False) -> Path:
    """Write ``value`` as indented JSON (NaN/inf as null) atomically; returns the path.

    Example:
        >>> import tempfile
        >>> path = write_json(Path(tempfile.mkdtemp()) / "v.json", {"x": float("nan")})
        >>> json.loads(path.read_text())
        {'x': None}
    """
    return atomic_write(target, json_text(value, indent=2, sort_keys=sort_keys) + "\n",
                        what=what)


def write_jsonl(target: str | os.PathLike[str], rows: Iterable[Any], *,
                what: str = "file") -> Path:
    """Write ``rows`` as JSON lines (NaN/inf as null) atomically; returns the path.

    Example:
        >>> import tempfile
        >>> rows = [{"a": 1}, {"a": float("inf")}]
        >>> write_jsonl(Path(tempfile.mkdtemp()) / "r.jsonl", rows).read_text().splitlines()
        ['{"a": 1}', '{"a": null}']
    """
    return atomic_write(target, "".join(json_text(row) + "\n" for row in rows), what=what)
