"""``steerlab export gguf | import gguf | llamacpp generate``: vectors out to llama.cpp and back.

Example:
    $ steerlab export gguf syc.safetensors --layers 8-14 --strengths=0.3 -o syc.gguf
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from steerlab.cli import options as opt
from steerlab.cli.common import console, one_value, values
from steerlab.errors import SteerlabError

EXPORT_HELP = "Write vectors in other tools' formats (llama.cpp control vectors)."
IMPORT_HELP = "Read vectors from other tools' formats (llama.cpp, repeng)."
LLAMACPP_HELP = "Run a steering vector in real llama.cpp (needs the llamacpp extra)."


def export_gguf(
    vector: Path = opt.path_argument("A steering vector (.safetensors)."),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Default: all the vector's layers "
                             "(llama.cpp cannot steer layer 0)."),
    strengths: str = opt.strengths(help="One strength baked into the file, "),
    coefficients: str = opt.coefficients(help="Or one raw coefficient, "),
    unit: bool = typer.Option(False, "--unit",
                              help="Write unit directions and print the scale to pass as "
                                   "--control-vector-scaled FILE:SCALE."),
    shift_block_input: bool = typer.Option(False, "--shift-block-input",
                                           help="Export a block_input vector one block down "
                                                "(block_input k = block_output k-1)."),
    model: str = typer.Option(None, "--model",
                              help="Check the vector against this model and take its "
                                   "architecture as the model hint."),
    out: Path = opt.out_file("the control vector (.gguf)"),
) -> None:
    """Export a vector as a llama.cpp control vector (positions=all, operator=add only)."""
    from steerlab.export.gguf import to_gguf
    from steerlab.util.io import check_writable, sha256_file
    from steerlab.vector import SteeringVector

    check_writable(out, what="GGUF file")
    amount: dict[str, Any] = {}
    if strengths is not None or coefficients is not None:
        unit_name, given = values(coefficients, strengths)
        amount[unit_name] = one_value(f"--{unit_name}s", given)
    vec = SteeringVector.load(vector)
    lm = None
    if model:
        from steerlab.model.load import load_model

        lm = load_model(model)
    done = to_gguf(vec, out, layers=layers, unit=unit, shift_block_input=shift_block_input,
                   source_sha256=sha256_file(vector), model=lm, **amount)
    console.print(f"wrote {escape(str(done.path))}: layers {done.layers}, model hint "
                  f"{done.model_hint}")
    if "coefficient" in amount:  # what the raw value amounts to, at the vector's own layers
        from steerlab.eval.behaviour import explain_values

        shift = 1 if vec.site == "block_input" and shift_block_input else 0
        explain_values(vec, [k + shift for k in done.layers], "coefficient",
                       [amount["coefficient"]])
    for note in done.notes:
        console.print(escape(note))
    console.print(f"use: llama-cli -m MODEL.gguf {escape(' '.join(done.llama_args()))}")


def import_gguf(
    path: Path = opt.path_argument("A control vector .gguf (steerlab, repeng or llama.cpp)."),
    model: str = typer.Option(None, "--model", help="Check it fits this model (hidden size, "
                              "layers) and record it."),
    from_cvector_generator: bool = typer.Option(False, "--from-cvector-generator",
                                                help="The file comes from llama.cpp's "
                                                     "cvector-generator, which names vectors "
                                                     "one block above where it read them."),
    out: Path = opt.out_file("the vector (.safetensors)"),
) -> None:
    """Import a llama.cpp control vector (steerlab's, repeng's or cvector-generator's)."""
    from steerlab.export.gguf import from_gguf
    from steerlab.util.io import check_writable

    check_writable(out, what="vector")
    lm = None
    if model:
        from steerlab.model.load import load_model

        lm = load_model(model)
    vec = from_gguf(path, model=lm, shift=-1 if from_cvector_generator else 0)
    vec.save(out)
    console.print(f"wrote {escape(str(out))}: {escape(repr(vec))}")


def llamacpp_generate(
    prompts: list[str] = typer.Argument(..., help="One or more prompts."),
    model: str = opt.model(),
    vector: Path = opt.vector(),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Default: the vector's layers."),
    strengths: str = opt.strengths(help="One strength, "),
    coefficients: str = opt.coefficients(help="Or one raw coefficient, "),
    quantized: bool = typer.Option(False, "--quantized",
                                   help="Run the alias's original quantised GGUF instead of "
                                        "its F32 copy (faster, not bit-comparable)."),
    max_new_tokens: int = opt.max_new_tokens(),
    compare: bool = typer.Option(True, "--compare/--no-compare",
                                 help="Also show the unsteered llama.cpp output."),
) -> None:
    """Greedy generation in real llama.cpp with the vector as a control vector."""
    from steerlab.export.llamacpp import LlamaCppModel, f32_gguf
    from steerlab.model.aliases import ALIASES, fetch_gguf
    from steerlab.model.load import load_model

    if model not in ALIASES:
        raise SteerlabError(f"--model: llamacpp generate runs a built-in alias's GGUF "
                            f"({', '.join(ALIASES)}), got {model!r}")
    amount: dict[str, Any] = {}
    if vector is not None:
        if strengths is None and coefficients is None:
            raise SteerlabError("give --strengths (one value) or --coefficients")
        unit_name, given = values(coefficients, strengths)
        amount[unit_name] = one_value(f"--{unit_name}s", given)
    lm = load_model(model)  # the tokenizer (and the vector check)
    from steerlab.vector import SteeringVector

    vec = SteeringVector.load(vector, model=lm) if vector is not None else None
    if vec is not None and "coefficient" in amount:  # what the raw value amounts to
        from steerlab.eval.behaviour import explain_values
        from steerlab.util.parse import resolve_layers

        chosen = vec.layers if layers is None else resolve_layers(layers, lm.n_layers)
        explain_values(vec, [k for k in chosen if k in vec.directions], "coefficient",
                       [amount["coefficient"]])
    path = fetch_gguf(model) if quantized else f32_gguf(model)
    with LlamaCppModel(path) as cpp:
        for prompt in prompts:
            ids = cpp.chat_ids(lm.tokenizer, prompt)
            console.rule(escape(prompt[:100]))
            if vec is None or compare:
                cpp.set_directions(None)
                plain = cpp.generate(ids, max_new_tokens)
                console.print(f"[bold]unsteered:[/bold] "
                              f"{escape(lm.tokenizer.decode(plain, skip_special_tokens=True))}")
            if vec is not None:
                cpp.set_vector(vec, layers=layers, **amount)
                steered = cpp.generate(ids, max_new_tokens)
                label = ", ".join(f"{k}={v:g}" for k, v in amount.items())
                console.print(f"[bold]steered ({escape(label)}):[/bold] "
                              f"{escape(lm.tokenizer.decode(steered, skip_special_tokens=True))}")


EXPORT_COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("gguf", export_gguf, "steerlab export gguf syc.safetensors --layers 8-14 --strengths=0.3 "
                          "-o syc.gguf"),
]
IMPORT_COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("gguf", import_gguf, "steerlab import gguf repeng.gguf --model smollm2-135m -o "
                          "v.safetensors"),
]
LLAMACPP_COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("generate", llamacpp_generate, "steerlab llamacpp generate --vector opt.safetensors "
                                    '--layers 10 --strengths=0.3 "Describe Mondays."'),
]
