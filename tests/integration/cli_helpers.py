"""Shared helpers for the integration tests that drive ``steerlab`` through typer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.eval.store import read_results

runner = CliRunner()


def run_cli(args: list[str]) -> str:
    """Invoke ``steerlab ARGS``; re-raise a Python error, require exit 0, return the output."""
    result = runner.invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def read_records(run: Path) -> list[dict[str, Any]]:
    """The records of a run directory's ``results.jsonl`` (through the one reader)."""
    return read_results(run / "results.jsonl").records
