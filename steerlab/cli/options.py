"""The command line's one vocabulary: every option that more than one command takes.

Each option has one spelling and one meaning everywhere (a test walks the app and fails on a
second spelling). Options that take a list also take one value: ``--layers 12`` or
``--layers 8-20:4``; ``--strengths=0.3`` or ``--strengths=-0.4,0,0.4``.

This module imports only typer, so building the app (and ``steerlab --help``) stays fast.

Example:
    >>> LAYERS_HELP.split(":")[0]
    'Layers'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

DEFAULT_MODEL = "smollm2-135m"


def at_least(low: float, what: str = "a number") -> Any:
    """A typer callback refusing values below ``low``, naming the value it got."""
    def check(value: Any) -> Any:
        if value is not None and value < low:
            raise typer.BadParameter(f"expected {what} >= {low:g}, got {value:g}")
        return value
    return check
POSITIONS_HELP = ("Where to steer: all, prompt, generation, after_instruction (CAA: from the "
                  "end of the user turn), front (ActAdd), last_prompt:K, window:A:B.")
LAYERS_HELP = ("Layers: 12, 8-20, 8-20:4 (step), 10,16, -1 (last), 0.5 (fraction of depth) "
               "or all.")
VALUES_HELP = "e.g. -0.4,0,0.4 or -0.4:0.4:0.2 (start:stop:step, inclusive)."


#: The options every study shares: flag → (help, smallest value accepted and what it is). One
#: place for their wording: the factories below and the study commands
#: (:mod:`steerlab.cli.study_command`) take it from here.
SHARED: dict[str, tuple[str, tuple[float, str] | None]] = {
    "--model": ("Built-in alias (steerlab models list), Hugging Face id, local directory or .gguf "
                "file.", None),
    "--data": ("caa:NAME, mwe:NAME, builtin:NAME, capabilities:NAME or a .json/.jsonl file (CAA, "
               "persona or pairs format).", None),
    "--vector": ("A steering vector (.safetensors).", None),
    "--layers": (LAYERS_HELP, None),
    "--positions": (POSITIONS_HELP, None),
    "--out": ("Run directory (results.jsonl, plots). A rerun with the same settings resumes; "
              "with other settings it stops and says which differ.", None),
    "--limit": ("Use a seeded random subset of at most N items of each split (the same items in "
                "every cell; 0 = all).", (0, "an item count (0 = all)")),
    "--train-limit": ("Extract from a seeded subset of at most N train pairs (0 = all).",
                      (0, "a pair count (0 = all)")),
    "--seed": ("Seed for splits, subsets and sampling.", None),
    "--batch-size": ("Rows per forward pass.", (1, "a batch size")),
    "--split": ("train | val | test | all.", None),
    "--method": ("mean_diff | pca | probe | actadd.", None),
    "--format": ("open: whole-answer score (the options' texts as replies; moves on small "
                 "models); ab: CAA's A/B letter score (flat on SmolLM2-135M).", None),
    "--max-new-tokens": ("Tokens to generate per answer.", (1, "a token count")),
    "--judge": ("local:ALIAS_OR_PATH (a local instruct model's 1..10 expectation) or "
                "http:BASE_URL#MODEL (any OpenAI-compatible API).", None),
    "--pad": ("ActAdd prompts of different token lengths are refused; --pad space right-pads the "
              "shorter with space tokens (the paper's padding) instead.", None),
    "--engine": ("What generates the answers: transformers (steerlab's own loop) or vllm (the "
                 "vLLM venv of 'make vllm', steered by steerlab's plugin; greedy answers are the "
                 "same tokens, sampled ones other draws of the same distribution).", None),
}


def option(flag: str, default: Any, *, help: str | None = None, more: str = "",
           low: tuple[float, str] | None = None) -> Any:
    """The typer option ``flag`` with ``default``: a shared option's help (plus ``more``) and
    range check unless ``help`` / ``low`` are given. ``--out`` is also ``-o``.

    Example:
        >>> option("--limit", 40).help.startswith("Use a seeded random subset")
        True
    """
    shared_help, shared_low = SHARED.get(flag, ("", None))
    text = help or " ".join(t for t in (shared_help, more) if t)
    if not text:
        raise ValueError(f"{flag}: no help (give help= or add it to options.SHARED)")
    low = low or shared_low
    names = (flag, "-o") if flag == "--out" else (flag,)
    return typer.Option(default, *names, help=text,
                        callback=at_least(*low) if low is not None else None)


def model() -> Any:
    return option("--model", DEFAULT_MODEL)


def data(required: bool = True, default: str | None = None) -> Any:
    return option("--data", ... if required else default)


def vector(required: bool = False) -> Any:
    return option("--vector", ... if required else None)


def layers(default: str | None = None, help: str = LAYERS_HELP) -> Any:
    return option("--layers", default, help=help)


def coefficients(help: str = "Raw multipliers of the stored vector, ") -> Any:
    return typer.Option(None, "--coefficients",
                        help=f"{help}{VALUES_HELP} Raw values do not transfer between vectors: "
                             "prefer --strengths.")


def strengths(help: str = "Multiples of the mean residual-stream norm at the layer, ") -> Any:
    return typer.Option(None, "--strengths", help=f"{help}{VALUES_HELP}")


def positions(default: str = "all") -> Any:
    return option("--positions", default)


def operator() -> Any:
    return typer.Option("add", "--operator",
                        help="add (h + c·v), ablate (remove the component along v), clamp "
                             "(set it to c).")


def pad() -> Any:
    return option("--pad", None)


def out_dir() -> Any:
    return option("--out", ...)


def out_file(what: str, required: bool = True) -> Any:
    return typer.Option(... if required else None, "--out", "-o", help=f"Where to write {what}.")


def limit(default: int = 0) -> Any:
    return option("--limit", default)


def train_limit(default: int = 0) -> Any:
    return option("--train-limit", default)


def seed() -> Any:
    return option("--seed", 0)


def batch_size(default: int = 16) -> Any:
    return option("--batch-size", default)


def split(default: str = "test") -> Any:
    return option("--split", default)


def method() -> Any:
    return option("--method", "mean_diff")


def answer_format(default: str = "open") -> Any:
    return option("--format", default)


def max_new_tokens(default: int = 48) -> Any:
    return option("--max-new-tokens", default)


def system() -> Any:
    return typer.Option(None, "--system", help="A system prompt for chat models.")


def temperature() -> Any:
    return typer.Option(0.0, "--temperature", callback=at_least(0, "a temperature"),
                        help="0 = greedy; > 0 samples (seeded with --seed).")


def top_p() -> Any:
    return typer.Option(1.0, "--top-p", help="Nucleus sampling mass (0, 1].")


def top_k() -> Any:
    return typer.Option(0, "--top-k",
                        callback=at_least(0, "a count (0 = off)"),
                        help="Sample from the k likeliest tokens (0 = off).")


def prompts_file() -> Any:
    return typer.Option(None, "--prompts",
                        help="A text file of prompts (one per line) or a .json/.jsonl file of "
                             "strings or chat-message lists.")


def judge() -> Any:
    return option("--judge", "local:qwen2.5-coder-0.5b")


def path_argument(help: str) -> Any:
    return typer.Argument(..., help=help)


__all__ = ["DEFAULT_MODEL", "LAYERS_HELP", "POSITIONS_HELP", "Path"]


ENGINES = ("transformers", "vllm")


def engine() -> Any:
    return option("--engine", "transformers")
