"""The ``steerlab eval`` command group: one sub-command per module's ``command`` function.

Example:
    $ steerlab eval sweep --data caa:refusal --layers 8-20 --coefficients=-2:2:1 --out runs/r
"""

from __future__ import annotations

import importlib

import typer

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate steering vectors (DESIGN §7). "
                       "Every command writes results.jsonl + a PNG plot into --out and resumes.")

#: sub-command name → module under steerlab.eval defining ``command``
COMMANDS = {
    "sweep": "sweep",
    "samples": "samples",
    "ood": "ood",
    "perplexity": "perplexity",
    "capabilities": "capabilities",
    "sentiment": "sentiment",
    "models": "size",
}

for _name, _module in COMMANDS.items():
    _mod = importlib.import_module(f"steerlab.eval.{_module}")
    eval_app.command(_name)(_mod.command)
