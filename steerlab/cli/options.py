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


def model() -> Any:
    return typer.Option(DEFAULT_MODEL, "--model",
                        help="Built-in alias (steerlab models list), Hugging Face id, local "
                             "directory or .gguf file.")


def data(required: bool = True, default: str | None = None) -> Any:
    return typer.Option(... if required else default, "--data",
                        help="caa:NAME, mwe:NAME, builtin:NAME, capabilities:NAME or a "
                             ".json/.jsonl file (CAA, persona or pairs format).")


def vector(required: bool = False) -> Any:
    return typer.Option(... if required else None, "--vector",
                        help="A steering vector (.safetensors).")


def layers(default: str | None = None, help: str = LAYERS_HELP) -> Any:
    return typer.Option(default, "--layers", help=help)


def coefficients(help: str = "Raw multipliers of the stored vector, ") -> Any:
    return typer.Option(None, "--coefficients",
                        help=f"{help}{VALUES_HELP} Raw values do not transfer between vectors: "
                             "prefer --strengths.")


def strengths(help: str = "Multiples of the mean residual-stream norm at the layer, ") -> Any:
    return typer.Option(None, "--strengths", help=f"{help}{VALUES_HELP}")


def positions(default: str = "all") -> Any:
    return typer.Option(default, "--positions", help=POSITIONS_HELP)


def operator() -> Any:
    return typer.Option("add", "--operator",
                        help="add (h + c·v), ablate (remove the component along v), clamp "
                             "(set it to c).")


def pad() -> Any:
    return typer.Option(None, "--pad",
                        help="ActAdd prompts of different token lengths are refused; --pad "
                             "space right-pads the shorter with space tokens (the paper's "
                             "padding) instead.")


def out_dir() -> Any:
    return typer.Option(..., "--out", "-o",
                        help="Run directory (results.jsonl, plots). A rerun with the same "
                             "settings resumes; with other settings it stops and says which "
                             "differ.")


def out_file(what: str, required: bool = True) -> Any:
    return typer.Option(... if required else None, "--out", "-o", help=f"Where to write {what}.")


def limit(default: int = 0) -> Any:
    return typer.Option(default, "--limit", callback=at_least(0, "an item count (0 = all)"),
                        help="Use a seeded random subset of at most N items of each split "
                             "(the same items in every cell; 0 = all).")


def train_limit(default: int = 0) -> Any:
    return typer.Option(default, "--train-limit", callback=at_least(0, "a pair count (0 = all)"),
                        help="Extract from a seeded subset of at most N train pairs (0 = all).")


def seed() -> Any:
    return typer.Option(0, "--seed", help="Seed for splits, subsets and sampling.")


def batch_size(default: int = 16) -> Any:
    return typer.Option(default, "--batch-size",
                        callback=at_least(1, "a batch size"),
                        help="Rows per forward pass.")


def split(default: str = "test") -> Any:
    return typer.Option(default, "--split", help="train | val | test | all.")


def method() -> Any:
    return typer.Option("mean_diff", "--method", help="mean_diff | pca | probe | actadd.")


def answer_format(default: str = "open") -> Any:
    return typer.Option(default, "--format",
                        help="open: whole-answer score (the options' texts as replies; moves "
                             "on small models); ab: CAA's A/B letter score (flat on "
                             "SmolLM2-135M).")


def max_new_tokens(default: int = 48) -> Any:
    return typer.Option(default, "--max-new-tokens",
                        callback=at_least(1, "a token count"),
                        help="Tokens to generate per answer.")


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
    return typer.Option("local:qwen2.5-coder-0.5b", "--judge",
                        help="local:ALIAS_OR_PATH (a local instruct model's 1..10 expectation) "
                             "or http:BASE_URL#MODEL (any OpenAI-compatible API).")


def path_argument(help: str) -> Any:
    return typer.Argument(..., help=help)


__all__ = ["DEFAULT_MODEL", "LAYERS_HELP", "POSITIONS_HELP", "Path"]


ENGINES = ("transformers", "vllm")


def engine() -> Any:
    return typer.Option("transformers", "--engine",
                        help="What generates the answers: transformers (steerlab's own loop) "
                             "or vllm (the vLLM venv of 'make vllm', steered by steerlab's "
                             "plugin; greedy answers are the same tokens, sampled ones other "
                             "draws of the same distribution).")
