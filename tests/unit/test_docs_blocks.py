"""The README's and the documentation's code blocks, tested as printed.

* Every ```python block runs, in a fresh namespace and a temporary directory, unless the line
  before its fence is ``<!-- not-run: REASON -->``. A block that does not run is still
  compiled, and every ``steerlab`` module, name and ``steerlab.NAME`` attribute it uses must
  exist, so a renamed function fails here too.
* Every ``steerlab ...`` line of a bash / console / sh / text block is parsed by the real typer
  app: the command path, every option and every value (typer's own conversions and callbacks),
  so a renamed command or option fails the test.
* The routes table of docs/reference/http.md lists exactly the routes the app serves.
* ``mkdocs build --strict`` passes (about 4 s).

Nothing here needs a downloaded model: the examples that run use the tiny random models of
``steerlab.testing.tiny``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SOURCES = sorted([REPO / "README.md", *DOCS.rglob("*.md")])
SHELL_LANGS = {"bash", "console", "sh", "shell", "text", ""}
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(\S.*?)\s*-->")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when the block is marked not to run

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one Markdown file (generated content included as written)."""
    lines = path.read_text().split("\n")
    out: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        lang = info.split()[0].lower() if info else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(opening["indent"]):])
            j += 1
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = NOT_RUN.search(previous)
        out.append(Block(path, i + 1, lang, "\n".join(body) + "\n",
                         marker.group(1) if marker else None))
        i = j + 1
    return out


ALL_BLOCKS = [b for path in SOURCES for b in blocks(path)]
PYTHON = [b for b in ALL_BLOCKS if b.lang in ("python", "py", "pycon")]
SHELL = [b for b in ALL_BLOCKS if b.lang in SHELL_LANGS]


def test_the_docs_have_blocks_of_each_kind() -> None:
    runnable = [b for b in PYTHON if b.not_run is None]
    assert len(runnable) >= 4 and len(PYTHON) > len(runnable), [b.where for b in PYTHON]
    assert sum(len(cli_lines(b)) for b in SHELL) >= 50


# ---- Python --------------------------------------------------------------------------------
def _steerlab_names(tree: ast.AST) -> list[tuple[str, str | None]]:
    """(module, name) pairs for every steerlab import and ``steerlab.NAME`` attribute."""
    found: list[tuple[str, str | None]] = []
    aliases = {"steerlab"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "steerlab":
                    found.append((alias.name, None))
                    if alias.asname and alias.name == "steerlab":
                        aliases.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module \
                and node.module.split(".")[0] == "steerlab":
            found += [(node.module, a.name) for a in node.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases:
            found.append(("steerlab", node.attr))
    return found


@pytest.mark.parametrize("block", PYTHON, ids=[b.where for b in PYTHON])
def test_python_block_compiles_and_its_steerlab_names_exist(block: Block) -> None:
    tree = compile(block.code, block.where, "exec", ast.PyCF_ONLY_AST)
    for module, name in _steerlab_names(tree):
        mod = importlib.import_module(module)
        if name is not None and not hasattr(mod, name):
            # `from steerlab.a import b` may name a submodule
            assert importlib.util.find_spec(f"{module}.{name}") is not None, \
                f"{block.where}: {module} has no {name!r}"


RUNNABLE = [b for b in PYTHON if b.not_run is None]


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_python_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    scope: dict[str, Any] = {"__name__": "__docs__"}
    exec(compile(block.code, block.where, "exec"), scope)  # our own documentation


def test_readme_quickstart_is_the_getting_started_one() -> None:
    """The docs' copy of the README's snippet (which tests/integration/test_readme.py runs as
    printed) must be the same code."""
    def first_python_under(path: Path, heading: str) -> str:
        text = path.read_text().split(heading, 1)[1]
        found = re.search(r"```python\n(.*?)```", text, re.S)
        assert found, f"{path}: no python block under {heading!r}"
        return found.group(1)

    assert first_python_under(REPO / "README.md", "## Python in a few minutes") == \
        first_python_under(DOCS / "getting-started.md", "## Python in a few minutes")


# ---- the command line ------------------------------------------------------------------------
def cli_lines(block: Block) -> list[tuple[int, str]]:
    """(line number, command) of every ``steerlab ...`` command in a shell block: comments
    dropped, continuation lines joined, a ``$ `` prompt removed, pipelines cut."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for offset, raw in enumerate(block.code.split("\n")):
        line = raw.rstrip()
        if not pending:
            start = block.line + 1 + offset
            line = line.lstrip()
            line = line[2:] if line.startswith("$ ") else line
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command, pending = pending + line, ""
        if command.startswith("steerlab ") or command == "steerlab":
            out.append((start, command))
    return out


def words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    args: list[str] = []
    for token in lexer:
        if token in ("|", "&&", ";", ">", "2>&1"):
            break
        args.append(token)
    return args[1:]


@pytest.fixture(scope="module")
def root() -> Any:
    import typer

    from steerlab.cli.app import app

    return typer.main.get_command(app)


def _rest(ctx: Any) -> list[str]:
    """What a group's context left for its subcommand (typer vendors click: no public name)."""
    protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
    return [*protected, *ctx.args]


def parse(root: Any, args: list[str]) -> None:
    """Parse ``args`` as ``steerlab`` would, down to the leaf command, without running it."""
    with root.make_context("steerlab", list(args), resilient_parsing=False) as ctx:
        command, rest = root, _rest(ctx)
        while getattr(command, "commands", None):
            assert rest, f"a command group with no command: {args}"
            name, sub, rest = command.resolve_command(ctx, rest)
            assert sub is not None, f"no command {name!r}"
            command = sub
            ctx = command.make_context(name, list(rest), parent=ctx)
            rest = _rest(ctx)
        assert not rest, f"arguments left over: {rest}"


SHELL_COMMANDS = [(b, line, cmd) for b in SHELL for line, cmd in cli_lines(b)]
SHELL_IDS = [f"{b.path.relative_to(REPO)}:{line}" for b, line, _ in SHELL_COMMANDS]


@pytest.mark.parametrize("item", SHELL_COMMANDS, ids=SHELL_IDS)
def test_cli_line_parses(item: tuple[Block, int, str], root: Any) -> None:
    import typer

    block, line, command = item
    args = words(command)
    if args in (["--version"], ["--help"]):
        return
    try:
        parse(root, args)
    except (typer.Exit, SystemExit):  # an eager option such as --help ran
        pass
    except Exception as exc:  # a usage error: unknown command or option, bad value
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"{block.path.relative_to(REPO)}:{line}: `{command}` does not parse: "
                    f"{type(exc).__name__}: {message}", pytrace=False)


def test_a_renamed_option_would_fail(root: Any) -> None:
    """The parse check is not vacuous."""
    import typer

    with pytest.raises(typer.TyperException, match="no-such-option"):
        parse(root, ["extract", "--data", "x", "-o", "v.safetensors", "--no-such-option"])
    with pytest.raises(typer.TyperException, match="no-such-study"):
        parse(root, ["eval", "no-such-study"])


# ---- HTTP API ---------------------------------------------------------------------------------
def test_http_page_lists_the_served_routes() -> None:
    from steerlab.model.load import as_loaded
    from steerlab.serve.app import ServerConfig, create_app
    from steerlab.testing.tiny import tiny_model, tiny_tokenizer

    app = create_app(as_loaded(tiny_model("llama"), tiny_tokenizer()),
                     config=ServerConfig(model_name="tiny"))
    served = {(method, route.path) for route in app.routes
              if route.path.startswith(("/v1", "/health"))
              for method in getattr(route, "methods", ()) if method != "HEAD"}
    text = (DOCS / "reference" / "http.md").read_text()
    table = text.split("## Routes", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(GET|POST|PUT|DELETE) (/\S+)`", table, re.M))
    listed.add(("POST", "/v1/steering"))  # documented as "POST does the same" as PUT
    assert listed == served, (sorted(listed - served), sorted(served - listed))


# ---- the site ---------------------------------------------------------------------------------
def test_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "cli.html").is_file()
