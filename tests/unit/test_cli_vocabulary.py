"""One vocabulary across the command line, and a fast ``--help``.

* Every option of every command is walked: one concept has one spelling (``--layers``, never
  ``--layer`` too; ``--out``, never ``--output`` or ``--json``; ``--strengths`` /
  ``--coefficients``, never the singular), and one spelling means one thing.
* Every command's help shows an example; ``--positions`` and ``--operator`` list their choices.
* ``steerlab --help`` and ``--version`` run in a fresh interpreter without importing torch,
  transformers, matplotlib or the evaluation stack (the study configs the ``eval`` commands
  are derived from are light and allowed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import typer.main

from steerlab.cli import app

REPO = Path(__file__).resolve().parents[2]

#: spellings that must not appear at all, with the one to use instead
FORBIDDEN = {
    "--layer": "--layers", "--coefficient": "--coefficients", "--strength": "--strengths",
    "--output": "--out", "--json": "--out", "--windows": "--limit", "--id-limit": "--limit",
    "--greedy": "--temperature 0", "--n-items": "--limit", "--max-tokens": "--max-new-tokens",
}


def _commands(command: object, path: str = "steerlab") -> list[tuple[str, object]]:
    out = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        out += _commands(sub, f"{path} {name}")
    return out


COMMANDS = _commands(typer.main.get_command(app))


def _options(command: object) -> list[object]:
    return [p for p in getattr(command, "params", []) if getattr(p, "opts", None)
            and p.opts[0].startswith("-")]


def test_no_second_spelling_of_an_option() -> None:
    spellings: dict[str, set[str]] = defaultdict(set)  # parameter name → option spellings
    meanings: dict[str, set[str]] = defaultdict(set)  # spelling → parameter names
    problems = []
    for path, command in COMMANDS:
        for param in _options(command):
            longs = sorted(o for o in param.opts if o.startswith("--"))  # type: ignore[attr-defined]
            for spelling in longs:
                if spelling in FORBIDDEN:
                    problems.append(f"{path}: {spelling} (use {FORBIDDEN[spelling]})")
                meanings[spelling].add(param.name)  # type: ignore[attr-defined]
            if len(longs) > 1:
                problems.append(f"{path}: one option with several spellings {longs}")
            spellings[param.name].update(longs)  # type: ignore[attr-defined]
    for name, spelled in spellings.items():
        if len(spelled) > 1:
            problems.append(f"parameter {name!r} is spelled {sorted(spelled)}")
    for spelling, names in meanings.items():
        if len(names) > 1:
            problems.append(f"{spelling} stands for {sorted(names)}")
    assert not problems, "\n".join(problems)


def test_every_command_has_help_and_an_example() -> None:
    missing = []
    for path, command in COMMANDS:
        if getattr(command, "commands", None):  # a group
            continue
        if not getattr(command, "help", None):
            missing.append(f"{path}: no help text")
        if "Example: steerlab " not in (getattr(command, "epilog", None) or ""):
            missing.append(f"{path}: no example")
    assert not missing, "\n".join(missing)


def test_choice_options_list_their_choices() -> None:
    for path, command in COMMANDS:
        for param in _options(command):
            text = getattr(param, "help", "") or ""
            if "--positions" in param.opts:  # type: ignore[attr-defined]
                # the full list, or (where a study takes only some) the ones it takes
                assert ("after_instruction" in text and "window:A:B" in text) or (
                    "all" in text and "generation" in text), path
            if "--operator" in param.opts:  # type: ignore[attr-defined]
                assert "ablate" in text and "clamp" in text, path


CHECK_IMPORTS = r"""
import sys, time
start = time.perf_counter()
sys.argv = ["steerlab", *sys.argv[1:]]
from steerlab.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "matplotlib",
                                                         "safetensors", "scipy", "sklearn"})
# the study configs and their registry are light by design: the commands are built from them
light = ("steerlab.eval", "steerlab.eval.studies", "steerlab.eval.configs")
heavy += sorted(m for m in sys.modules if m.startswith(("steerlab.eval", "steerlab.scoring",
                                                        "steerlab.model.load"))
                and m not in light and not m.startswith("steerlab.eval.configs."))
print("HEAVY", ",".join(heavy), "SECONDS", round(time.perf_counter() - start, 3),
      file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("args", [["--help"], ["eval", "sweep", "--help"], ["--version"]])
def test_help_and_version_do_not_import_the_heavy_stack(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, *args], capture_output=True,
                          text=True, env=env, timeout=60)
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    report = next(line for line in proc.stderr.splitlines() if line.startswith("HEAVY"))
    heavy = report.split()[1] if report.split()[1] != "SECONDS" else ""
    # --version reads installed versions from package metadata, never by importing them
    assert heavy == "", f"{args} imported {heavy} ({wall:.2f} s)"
    assert "steerlab" in proc.stdout
