"""Each ``steerlab eval`` command is derived from its study's config, and agrees with it.

* Every config field is an option (or marked ``cli=False``), and every option a field (or the
  ``--coefficients`` / ``--strengths`` / ``--engine`` the derivation adds).
* With no options but the required ones, the command builds exactly the config's defaults:
  the command line and the Python API cannot drift apart.
* Options are parsed into the field's type (lists, counts, choices, one value) and a bad one
  is refused in one line naming the option.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest
import typer.main

from steerlab.cli import main
from steerlab.cli.app import app
from steerlab.cli.eval import COMMANDS, EXAMPLES
from steerlab.cli.study_command import study_command
from steerlab.eval.configs.fields import CLI, FLAG, setting
from steerlab.eval.studies import STUDIES

EVAL_STUDIES = [name for name, _, _ in COMMANDS]
#: the required options of each command, enough to build its config
REQUIRED = {"out": "runs/x", "data": "caa:refusal", "vector": "v.safetensors", "layers": "12",
            "trait": "agreeableness", "models": "smollm2-135m"}


def test_every_eval_study_has_a_derived_command_and_an_example() -> None:
    eval_studies = sorted(s.name for s in STUDIES.values() if s.cli[0] == "eval")
    assert sorted(EVAL_STUDIES) == eval_studies == sorted(EXAMPLES)


def _captured(name: str, monkeypatch: pytest.MonkeyPatch, args: list[str],
              capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    """``steerlab eval NAME ARGS`` through the real entry point, the study's ``run`` replaced
    by a recorder: (exit status, the config it got, stderr)."""
    got: list[Any] = []
    monkeypatch.setattr(importlib.import_module(STUDIES[name].module), "run", got.append)
    try:
        main(["eval", name, *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, got[0] if got else None, capsys.readouterr().err


def _click(name: str) -> Any:
    group = typer.main.get_command(app)
    return group.commands["eval"].commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", EVAL_STUDIES)
def test_options_are_the_config_fields(name: str) -> None:
    config = STUDIES[name].config_class()
    fields = {f.name: f for f in dataclasses.fields(config) if f.metadata.get(CLI) is not False}
    options = {p.name for p in _click(name).params if p.name != "help"}
    steered = "unit" in fields
    derived = {"coefficients", "strengths"} if steered else set()
    if getattr(config, "GENERATES", False):
        derived.add("engine")
    as_options = {n for n in fields if not (steered and n in ("unit", "values", "value"))}
    # an option is named after its flag: a field whose flag differs has its own option name
    renamed = {n: (fields[n].metadata.get(FLAG) or "").removeprefix("--").replace("-", "_")
               for n in as_options if fields[n].metadata.get(FLAG)}
    expected = {({"format": "form"}.get(renamed[n], renamed[n]) if n in renamed else n)
                for n in as_options} | derived
    assert options == expected, name
    for param in _click(name).params:
        assert param.help, f"eval {name} {param.opts}: no help"  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", EVAL_STUDIES)
def test_no_options_build_the_config_defaults(name: str, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = STUDIES[name].config_class()
    required = [f for f in dataclasses.fields(config)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    args: list[str] = []
    for f in required:
        option = "layers" if f.name == "layer" else f.name
        args += [f"--{option}", REQUIRED[option]]
    code, cfg, err = _captured(name, monkeypatch, args, capsys)
    assert code == 0, err
    given = {f.name: getattr(cfg, f.name) for f in required}
    assert cfg.settings() == config(**given).settings(), name


def test_audit_is_derived_from_its_config_too(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from steerlab.eval.configs.audit import AuditConfig
    from steerlab.eval.protocols import audit

    got: list[Any] = []
    monkeypatch.setattr(audit, "run", got.append)
    main(["audit", "--data", "caa:refusal", "-o", "runs/a"])
    plain = [{k: list(v) if isinstance(v, list | tuple) else v for k, v in vars(c).items()}
             for c in (got[0], AuditConfig(out=Path("runs/a"), data="caa:refusal"))]
    assert plain[0] == plain[1]
    main(["audit", "--data", "caa:refusal", "-o", "runs/a", "--only", "sweep,samples",
          "--n", "80,5", "--seeds", "2", "--perplexity-limit", "4", "--strengths=-0.2,0.2"])
    cfg = got[1]
    assert (cfg.studies, cfg.pair_counts, cfg.draws, cfg.windows, cfg.strengths) == (
        ["sweep", "samples"], [5, 80], 2, 4, [-0.2, 0.2])


def test_options_are_parsed_into_the_fields(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, cfg, err = _captured("samples", monkeypatch, [
        "-o", "runs/n", "--data", "caa:refusal", "--layers", "14", "--n", "80,5,20",
        "--coefficients=-2,2", "--format", "ab"], capsys)
    assert code == 0, err
    assert (cfg.layer, list(cfg.sizes), cfg.unit, cfg.values, cfg.form) == (
        14, [5, 20, 80], "coefficient", [-2.0, 2.0], "ab")
    code, cfg, err = _captured("adversarial", monkeypatch, [
        "-o", "runs/a", "--vector", "v.safetensors", "--layers", "12", "--strengths", "0.3",
        "--search", "gcg"], capsys)
    assert code == 0, err
    assert (cfg.value, cfg.unit, cfg.method, cfg.out) == (0.3, "strength", "gcg", Path("runs/a"))
    code, cfg, err = _captured("defence", monkeypatch, [
        "-o", "runs/d", "--vector", "v.safetensors", "--layers", "12", "--threshold", "0.25"],
        capsys)
    assert code == 0, err
    assert cfg.threshold == 0.25
    code, cfg, err = _captured("sentiment", monkeypatch, [
        "-o", "runs/s", "--pair", " love", " hate", "--mask", "", "--prompt-sets", "negative"],
        capsys)
    assert code == 0, err
    assert (cfg.pair, cfg.mask, list(cfg.prompt_sets), cfg.unit) == (
        (" love", " hate"), [], ["negative"], "coefficient")


VECTOR = ["-o", "runs/x", "--vector", "v.safetensors"]


@pytest.mark.parametrize(("name", "args", "says"), [
    ("capabilities", [*VECTOR, "--layers", "12", "--benchmarks", "mmlu,gsm8k"], "--benchmarks"),
    ("adversarial", [*VECTOR, "--layers", "12", "--strengths", "0.2,0.4"],
     "--strengths: expected one value here, got 2"),
    ("perplexity", [*VECTOR, "--layers", "12", "--window", "1"],
     "expected a token count >= 2, got 1"),
    ("defence", [*VECTOR, "--layers", "12", "--threshold", "high"],
     "--threshold: expected auto or a number, got 'high'"),
    ("perplexity", VECTOR, "Missing option '--layers'"),
    ("models", ["-o", "runs/x", "--models", "m", "--data", "caa:refusal", "--strengths=0.5,0.5"],
     "--strengths: repeated values in '0.5,0.5'"),
    ("samples", ["-o", "runs/x", "--data", "caa:refusal", "--layers", "0.5"],
     "--layers: this study extracts at one layer (an index), got '0.5'"),
])
def test_bad_options_are_refused_in_one_line_naming_the_option(
        name: str, args: list[str], says: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, cfg, err = _captured(name, monkeypatch, args, capsys)
    assert code == 2 and cfg is None
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err


def test_a_bool_field_is_a_switch_and_a_variable_tuple_is_refused() -> None:
    @dataclasses.dataclass
    class SwitchConfig:
        """A config with a switch."""

        out: str
        plots: bool = dataclasses.field(default=True, metadata=setting(help="Draw plots."))

    @dataclasses.dataclass
    class BadConfig:
        """A config whose field has no option type."""

        out: str
        sizes: tuple[int, ...] = (1, 2)

    app = typer.Typer()
    app.command("switch")(study_command(SwitchConfig, __name__))
    app.command("other")(lambda: None)
    (plots,) = [p for p in typer.main.get_command(app).commands["switch"].params  # type: ignore[attr-defined]
                if p.name == "plots"]
    assert plots.opts == ["--plots"] and plots.secondary_opts == ["--no-plots"]
    with pytest.raises(TypeError, match="sizes"):
        study_command(BadConfig, __name__)


def test_the_old_top_level_name_still_works_and_warns() -> None:
    import steerlab

    assert steerlab.score_values.__name__ == "score_values"
    with pytest.warns(DeprecationWarning, match="score_values"), pytest.raises(TypeError):
        steerlab.score_coefficients()  # no arguments: the warning comes first
