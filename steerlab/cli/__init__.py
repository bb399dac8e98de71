"""The ``steerlab`` command line (typer). Bad input prints one ``error:`` line and exits 2.

Importing this package builds the app from light modules only (typer, rich, the option
vocabulary), so ``steerlab --help`` answers in well under a second; every command imports
torch, transformers and the evaluation stack when it runs.

Example:
    $ steerlab --help
    $ steerlab extract --data caa:sycophancy --layers 8-20 -o syc.safetensors
"""

from __future__ import annotations

import os
import sys

from steerlab.cli.app import app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Run the app: usage errors and :class:`~steerlab.errors.SteerlabError` become one
    ``error:`` line on stderr and exit status 2; an interrupt exits 130."""
    import typer

    from steerlab.errors import SteerlabError

    try:
        app(args=argv, standalone_mode=False, prog_name="steerlab")
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except SteerlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.TyperException as exc:  # usage errors: unknown option, bad value, missing ...
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        message = " ".join(str(text).split())
        if message:  # (an empty one: a bare command group, whose help was just printed)
            print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except MemoryError:
        print("error: out of memory (try a smaller --batch-size or --limit)", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if os.environ.get("STEERLAB_DEBUG"):
            raise
        print(f"error: internal error ({type(exc).__name__}: {str(exc)[:200]}); rerun with "
              "STEERLAB_DEBUG=1 for the traceback and please report it", file=sys.stderr)
        sys.exit(1)
