"""Runs ``steerlab`` commands the way a user does, each in its own process (shared by the CLI
tests).

Most commands are forked from one "zygote" process that imported the heavy libraries once (a
fresh ``python -m steerlab.cli`` spends seconds importing torch); each fork redirects fds 0/1/2,
sets its environment and runs ``steerlab.cli`` as ``__main__`` through :mod:`runpy`, mapping
``SystemExit`` and uncaught exceptions to exit statuses as the interpreter does. ``real=True``
runs the genuine ``[sys.executable, "-m", "steerlab.cli", ...]``.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120.0

BASE_ENV = {
    "HF_HUB_OFFLINE": "1",  # an unknown model name must fail fast, not try the network
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar goes to stderr
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "COLUMNS": "200",  # rich wraps (and truncates table cells) at 80 columns when piped
}

_ZYGOTE = r"""
import json, os, runpy, sys, traceback

import torch, transformers  # noqa: F401  the expensive imports, once (steerlab loads lazily)
import steerlab.extraction, steerlab.scoring.sweep, steerlab.scoring.generate  # noqa: F401
import steerlab.eval.behaviour, steerlab.eval.figures  # noqa: F401
import rich, typer  # noqa: F401  (not steerlab.cli: runpy re-runs it)

def child(req):
    for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        new = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(new, fd)
        os.close(new)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.argv = ["steerlab", *req["argv"]]
    code = 0
    try:
        runpy.run_module("steerlab.cli", run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # as the interpreter handles an uncaught SystemExit
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)

print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        child(request)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Cli:
    """Runs ``steerlab ARGS`` in a forked zygote child, or (``real=True``) a fresh interpreter."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.env = {**os.environ, **BASE_ENV,
                    "STEERLAB_CACHE": str(workdir / "cache"),
                    "PYTHONPATH": os.pathsep.join(
                        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.env.pop("STEERLAB_DATA", None)
        self.count = 0
        self._zygote_err = workdir / "zygote.stderr"
        with self._zygote_err.open("w") as err:
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=err, env=self.env, cwd=workdir, text=True)
        self._ready = False

    def _reply(self) -> str:
        assert self._zygote.stdout is not None
        ready, _, _ = select.select([self._zygote.stdout], [], [], TIMEOUT_S)
        line = self._zygote.stdout.readline() if ready else ""
        if not line:
            self._zygote.kill()
            pytest.fail("CLI zygote died or hung:\n" + self._zygote_err.read_text()[-3000:],
                        pytrace=False)
        return line

    def run(self, *args: str | Path, env: dict[str, str] | None = None,
            real: bool = False) -> Result:
        self.count += 1
        argv = [str(a) for a in args]
        full_env = {**self.env, **(env or {})}
        out = self.workdir / f"cmd{self.count}.stdout"
        err = self.workdir / f"cmd{self.count}.stderr"
        if real:
            proc = subprocess.run([sys.executable, "-m", "steerlab.cli", *argv],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  env=full_env,
                                  cwd=self.workdir, timeout=TIMEOUT_S)
            return Result(proc.returncode, proc.stdout, proc.stderr)
        assert self._zygote.stdin is not None
        if not self._ready:
            assert self._reply().strip() == "ready"
            self._ready = True
        request = {"argv": argv, "env": full_env, "cwd": str(self.workdir),
                   "stdout": str(out), "stderr": str(err)}
        self._zygote.stdin.write(json.dumps(request) + "\n")
        self._zygote.stdin.flush()
        rc = json.loads(self._reply())["rc"]
        return Result(rc, out.read_text(encoding="utf-8"), err.read_text(encoding="utf-8"))

    def close(self) -> None:
        if self._zygote.stdin is not None:
            self._zygote.stdin.close()
        try:
            self._zygote.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._zygote.kill()
            self._zygote.wait()
        if self._zygote.stdout is not None:
            self._zygote.stdout.close()


@dataclass(frozen=True)
class Models:
    d64: Path  # tiny llama, 4 layers, hidden 64
    d32: Path  # same, hidden 32


def assert_error(res: Result, *words: str, output: Path | None = None) -> str:
    """Status 2, stderr exactly one ``error: `` line containing ``words``; nothing written."""
    assert res.rc == 2, res
    assert "Traceback" not in res.err + res.out, res
    lines = res.err.splitlines()
    assert len(lines) == 1, res
    line = lines[0]
    assert line.startswith("error: "), res
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    if output is not None:
        assert not output.exists(), f"{output} left behind"
        leftovers = sorted(p.name for p in [*output.parent.glob(output.name + ".*"),
                                            *output.parent.glob(f".{output.name}.*")])
        assert not leftovers, f"temp files left behind: {leftovers}"
    return line
