"""``steerlab eval NAME``, derived from the study's config: one option per config field.

A study declares its config once (:mod:`steerlab.eval.configs`); this module turns it into the
command: each field an option (``--field-name``, or the field's ``flag``) with the field's
default, its help (or the shared option's, :data:`steerlab.cli.options.SHARED`), its range check
and its parser; ``unit`` + ``values`` (or ``value``) become ``--coefficients`` /
``--strengths``; a config that generates text (``GENERATES``) also takes ``--engine``. The
command's help is the config's docstring. Nothing heavy is imported until the command runs.

Example:
    >>> from steerlab.eval.configs.capabilities import CapabilitiesConfig
    >>> command = study_command(CapabilitiesConfig, "steerlab.eval.protocols.capabilities")
    >>> [p.name for p in inspect.signature(command).parameters.values()][:5]
    ['out', 'vector', 'layers', 'coefficients', 'strengths']
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

from steerlab.cli import options as opt
from steerlab.cli.common import generation_engine, one_value, values
from steerlab.eval.configs.fields import CLI, FLAG, HELP, LOW, MORE, PARSE, option_text

#: Python names of the options whose flag is not a good one (``format`` is a builtin)
_PARAM_NAMES = {"format": "form"}


def study_command(config: type, module: str) -> Callable[..., None]:
    """A typer command building ``config`` from its options and running ``module.run`` on it
    (inside ``--engine``'s generation backend where the study generates).

    Example:
        >>> from steerlab.eval.configs.sweep import SweepConfig
        >>> study_command(SweepConfig, "steerlab.eval.protocols.sweep").__doc__.split(";")[0]
        'Layer × strength sweep on val'
    """
    hints = typing.get_type_hints(config)
    params: list[inspect.Parameter] = []
    to_field: dict[str, str] = {}  # option parameter → config field
    parsers: dict[str, Any] = {}
    by_name = {f.name: f for f in fields(config)}
    steered = "unit" in by_name and ("values" in by_name or "value" in by_name)
    for f in fields(config):
        if f.metadata.get(CLI) is False or f.name == "unit":
            continue
        if steered and f.name in ("values", "value"):
            params += _value_options(f)
            continue
        name, option, annotation, parse = _field_option(f, hints[f.name])
        to_field[name] = f.name
        if parse is not None:
            parsers[name] = parse
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=annotation))
    generates = bool(getattr(config, "GENERATES", False))
    if generates:
        params.append(inspect.Parameter("engine", inspect.Parameter.KEYWORD_ONLY,
                                        default=opt.engine(), annotation=str))

    def command(**given: Any) -> None:
        kwargs = {}
        for name, value in given.items():
            if name in parsers and value is not None:
                value = parsers[name](value)
            if name in to_field:
                kwargs[to_field[name]] = value
        coefficients, strengths = given.get("coefficients"), given.get("strengths")
        if steered and (coefficients is not None or strengths is not None):
            unit, vals = values(coefficients, strengths)
            kwargs["unit"] = unit
            if "value" in by_name:
                kwargs["value"] = one_value(f"--{unit}s", vals)
            else:
                kwargs["values"] = vals
        cfg = config(**kwargs)
        run = importlib.import_module(module).run
        if generates:
            with generation_engine(given["engine"], cfg.model):
                run(cfg)
        else:
            run(cfg)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = config.__doc__
    command.__name__ = config.__name__.removesuffix("Config").lower()
    return command


def field_option(config: type, name: str) -> Any:
    """The typer option of one config field, as the derived command has it, for a command
    written by hand that takes some of a config's fields (``steerlab reproduce`` takes some
    of the audit's sizes). Its value is the option's text where the field has a ``parse``.

    Example:
        >>> from steerlab.eval.configs.audit import AuditConfig
        >>> field_option(AuditConfig, "windows").param_decls
        ('--perplexity-limit',)
    """
    f = {f.name: f for f in fields(config)}[name]
    return _field_option(f, typing.get_type_hints(config)[name])[1]


def _field_option(f: Field[Any], hint: Any) -> tuple[str, Any, Any, Callable[[str], Any] | None]:
    """(parameter name, typer option, its type, its parser) for a config field."""
    flag = f.metadata.get(FLAG) or "--" + f.name.replace("_", "-")
    default = _default(f)
    parse = f.metadata.get(PARSE)
    annotation = str if parse is not None else _option_type(hint, f.name)
    # a switch is --name / --no-name
    decl = f"{flag}/--no-{flag.removeprefix('--')}" if annotation is bool else flag
    option = opt.option(decl, option_text(default) if parse is not None else default,
                        help=f.metadata.get(HELP), more=f.metadata.get(MORE, ""),
                        low=f.metadata.get(LOW))
    parser = None if parse is None else (lambda text: parse(text, flag))
    return _param_name(flag), option, annotation, parser


def _param_name(flag: str) -> str:
    name = flag.removeprefix("--").replace("-", "_")
    return _PARAM_NAMES.get(name, name)


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return ...  # required


def _value_options(f: Field[Any]) -> list[inspect.Parameter]:
    """``--coefficients`` and ``--strengths`` for a config's ``values`` (or one ``value``)."""
    default = _default(f)
    prefix = f.metadata.get(HELP) or (
        "" if default in (..., None) else f"Default {option_text(default)}. ")
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=str)
            for name, info in (("coefficients", opt.coefficients()),
                               ("strengths", opt.strengths(help=prefix + "Multiples of the mean "
                                                           "residual-stream norm at the layer, ")))]


def _option_type(hint: Any, name: str) -> Any:
    """The type typer parses an option as: the field's type without ``None`` (a path for
    ``str | Path``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if Path in args:
            return Path
        if len(args) == 1:
            return _option_type(args[0], name)
        raise TypeError(f"config field {name}: no option type for {hint!r} (give it a parse)")
    if hint in (str, int, float, bool, Path) or (
            typing.get_origin(hint) is tuple and Ellipsis not in typing.get_args(hint)):
        return hint  # a fixed-length tuple is an option taking that many values
    if typing.get_origin(hint) is typing.Literal:
        return str
    raise TypeError(f"config field {name}: no option type for {hint!r} (give it a parse)")
