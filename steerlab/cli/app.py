"""The root ``steerlab`` app: every command and command group, registered from light modules.

Example:
    $ steerlab --version
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import typer

from steerlab.cli import audit, cast, doctor, export, models, report, run, vectors
from steerlab.cli import eval as eval_commands
from steerlab.cli import serve as serve_command
from steerlab.version import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="rich",
                  help="Extract, apply, evaluate and ship steering vectors for Hugging Face "
                       "decoder models. Run 'steerlab COMMAND --help' for a command's options "
                       "and an example.")


def _version(show: bool) -> None:
    if not show:
        return
    import importlib.metadata as md

    def version_of(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    typer.echo(f"steerlab {__version__} (torch {version_of('torch')}, transformers "
               f"{version_of('transformers')})")
    raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print steerlab's, torch's and transformers' "
                                            "versions and exit.")) -> None:
    """Extract, apply, evaluate and ship steering vectors."""


def register(target: typer.Typer, commands: Sequence[tuple[str, Callable[..., Any], str]]
             ) -> None:
    """Add ``(name, function, example)`` commands, the example shown under their --help."""
    for name, function, example in commands:
        target.command(name, epilog=f"Example: {example}")(function)


app.add_typer(models.app, name="models")
register(app, [*vectors.COMMANDS, *run.COMMANDS, *audit.COMMANDS, *report.COMMANDS,
               *doctor.COMMANDS,
               ("serve", serve_command.command, serve_command.EXAMPLE)])
eval_app = typer.Typer(no_args_is_help=True, help=eval_commands.HELP)
register(eval_app, eval_commands.COMMANDS)
app.add_typer(eval_app, name="eval")
cast_app = typer.Typer(no_args_is_help=True, help=cast.HELP)
register(cast_app, cast.COMMANDS)
app.add_typer(cast_app, name="cast")
for _name, _help, _commands in (("export", export.EXPORT_HELP, export.EXPORT_COMMANDS),
                                ("import", export.IMPORT_HELP, export.IMPORT_COMMANDS),
                                ("llamacpp", export.LLAMACPP_HELP, export.LLAMACPP_COMMANDS)):
    _group = typer.Typer(no_args_is_help=True, help=_help)
    register(_group, _commands)
    app.add_typer(_group, name=_name)
