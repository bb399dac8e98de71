"""MkDocs hooks for the documentation site (``mkdocs.yml``: ``hooks:``).

``reference/cli.md`` is generated from the typer app at build time: one section per command
(the command path, its help, usage, every option and argument with type, default and help, the
``--help`` example), so the page can never drift from the real command line. The same walk is
used by ``tests/unit/test_docs_blocks.py`` to check every ``steerlab ...`` line printed in the
docs against the app.

Run ``python tools/mkdocs_hooks.py`` to print the generated page.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

CLI_PAGE = "reference/cli.md"

INTRO = """\
# Command-line reference

Generated at build time from the `steerlab` typer app (`tools/mkdocs_hooks.py`): every
command, every option, its default and its help, exactly as `steerlab COMMAND --help` prints
them. The option vocabulary shared by all commands is explained in
[Getting started](../getting-started.md#the-command-line); how the evaluation commands fit
together in [Evaluation](../evaluation/index.md).

"""


def root_command() -> Any:
    """The click-style command object of ``steerlab`` (typer's own vendored click)."""
    import typer

    from steerlab.cli.app import app

    return typer.main.get_command(app)


def walk(command: Any, path: tuple[str, ...] = ("steerlab",)) -> Iterator[tuple[tuple[str, ...],
                                                                               Any]]:
    """Every command and group below ``command``, depth first, with its full path."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        if not getattr(sub, "hidden", False):
            yield from walk(sub, (*path, name))


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _type_name(param: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    name = getattr(annotation, "__name__", None) or str(annotation or "text")
    return {"str": "text", "int": "integer", "float": "number", "Path": "path",
            "bool": "flag"}.get(name, name)


def _default(param: Any) -> str:
    default = getattr(param, "default", None)
    if getattr(param, "required", False):
        return "**required**"
    if default is None or (getattr(param, "is_flag", False) and default is False):
        return ""
    if isinstance(default, (list, tuple)):
        return ", ".join(f"`{v}`" for v in default) if default else ""
    return f"`{default}`"


def _is_argument(param: Any) -> bool:
    return type(param).__name__.endswith("Argument")


def usage(path: tuple[str, ...], command: Any) -> str:
    """``steerlab eval sweep [OPTIONS] ARG ...`` from the command's parameters."""
    parts = [*path]
    if getattr(command, "commands", None):
        parts.append("COMMAND")
    elif any(not _is_argument(p) for p in command.params):
        parts.append("[OPTIONS]")
    for param in command.params:
        if _is_argument(param):
            name = (param.metavar or param.name or "ARG").upper()
            name = f"{name}..." if param.nargs == -1 else name
            parts.append(name if param.required else f"[{name}]")
    return " ".join(parts)


def command_markdown(path: tuple[str, ...], command: Any) -> str:
    """One command's section."""
    level = "#" * min(len(path), 4)
    lines = [f"{level} `{' '.join(path)}`", ""]
    if command.help:
        lines += [command.help.strip(), ""]
    lines += ["```text", usage(path, command), "```", ""]
    subcommands = getattr(command, "commands", None)
    if subcommands:
        lines += ["| command | what it does |", "|---|---|"]
        for name, sub in subcommands.items():
            summary = (sub.help or "").strip().split("\n")[0]
            lines.append(f"| `{' '.join((*path, name))}` | {_cell(summary)} |")
        lines.append("")
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    if params:
        lines += ["| option or argument | type | default | meaning |", "|---|---|---|---|"]
        for param in params:
            if _is_argument(param):
                name = (param.metavar or param.name or "ARG").upper()
                names = f"`{name}`" + (" (one or more)" if param.nargs == -1 else "")
            else:
                names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
            lines.append(f"| {names} | {_type_name(param)} | {_default(param)} | "
                         f"{_cell(getattr(param, 'help', '') or '')} |")
        lines.append("")
    if command.epilog:
        example = command.epilog.strip()
        if example.startswith("Example:"):
            lines += ["Example:", "", "```bash", example[len("Example:"):].strip(), "```", ""]
        else:
            lines += [example, ""]
    return "\n".join(lines)


def cli_reference() -> str:
    """The whole generated page."""
    sections = [command_markdown(path, command) for path, command in walk(root_command())
                if len(path) > 1]
    return INTRO + "\n".join(sections)


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated CLI reference page."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    return files


if __name__ == "__main__":
    print(cli_reference())
