"""Small helpers the command modules share (parsing options into library values, output).

Imports stay light (stdlib, typer, rich): the heavy parts of steerlab load inside commands.

Example:
    >>> one_value("--strengths", [0.3])
    0.3
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from steerlab.errors import SteerlabError
from steerlab.util.vocabulary import Unit

console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=not sys.stdout.isatty())


def values(coefficients: str | None, strengths: str | None,
           default: str | None = None) -> tuple[Unit, list[float]]:
    """``(unit, values)`` from ``--coefficients`` / ``--strengths`` (or ``--strengths=default``).

    Example:
        >>> values(None, None, default="-0.4,0.4")
        ('strength', [-0.4, 0.4])
    """
    from steerlab.util.parse import unit_values

    if coefficients is None and strengths is None and default is not None:
        strengths = default
    return unit_values(coefficients, strengths)


def one_value(option: str, got: Sequence[float]) -> float:
    """The single value an option must hold here (one-line error otherwise)."""
    if len(got) != 1:
        raise SteerlabError(f"{option}: expected one value here, got {len(got)}")
    return float(got[0])


def read_prompts(path: Path) -> list[Any]:
    """Prompts from a file: a ``.json``/``.jsonl`` list of strings or message lists, else one
    prompt per non-empty line of text.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "p.txt"
        >>> _ = p.write_text("Hello\\n\\nHow are you?\\n")
        >>> read_prompts(p)
        ['Hello', 'How are you?']
    """
    from steerlab.data.loaders import read_records, read_text

    if path.suffix in (".json", ".jsonl"):
        records = read_records(path)
        for i, record in enumerate(records):
            ok = (isinstance(record, str) and record.strip()) or (
                isinstance(record, list) and record and all(isinstance(m, dict) for m in record))
            if not ok:
                raise SteerlabError(f"{path}: item {i}: expected a prompt string or a list of "
                                    f"chat messages, got {type(record).__name__}")
        if not records:
            raise SteerlabError(f"{path}: no prompts")
        return list(records)
    prompts = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if not prompts:
        raise SteerlabError(f"{path}: no prompts (one per line)")
    return prompts


@contextlib.contextmanager
def generation_engine(engine: str, model: str) -> Iterator[None]:
    """Run the block's generation for ``model`` on ``engine`` (``--engine``).

    ``transformers`` changes nothing; ``vllm`` starts one vLLM engine for the model (on first
    use) and routes every generation of that model to it, stopping it at the end.

    Example:
        >>> with generation_engine("transformers", "smollm2-135m"):
        ...     pass
    """
    from steerlab.cli.options import ENGINES

    if engine not in ENGINES:
        raise SteerlabError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "transformers":
        yield
        return
    from steerlab.scoring.generate import generation_backend
    from steerlab.serve.vllm.batch import vllm_python
    from steerlab.serve.vllm.engine import VLLMBackend

    vllm_python()  # no vLLM venv: one line now, not after the study's first cells
    with VLLMBackend(model) as backend, generation_backend(backend):
        yield
