"""``steerlab doctor`` on tiny models (the library function and the command), and the
coverage helpers the ``models check`` command uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from steerlab.model.load import as_loaded
from steerlab.testing.coverage import TypeResult, counts, markdown, regressions, summary_lines
from steerlab.testing.doctor import default_layers, doctor
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.testing.zoo import build_tiny
from steerlab.vector import SteeringVector
from tests.unit.cli_runner import Cli


def test_doctor_tiny_llama_is_exact_at_each_layer() -> None:
    lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    result = doctor(lm, layers="1,3")
    assert result.exact, result.verdict
    assert result.layers == [1, 3]
    report = result.report
    assert (report.blocks_path, report.n_blocks, report.width) == ("model.layers", 4, 64)
    assert report.final_norm and report.final_norm.startswith("model.norm")
    for k in (1, 3):
        row = result.per_layer[k]
        assert row["delta"] > 1e-3  # the steering moves the logits
        assert row["error"] == 0.0 and row["h+v"] == 0.0  # equal to the hand hook; h + v
        assert row["generate prompt"] <= 1e-4 and row["generate generation"] <= 1e-4
    assert result.verdict.startswith("exact: at layer(s) 1,3")


def test_doctor_uses_the_given_vector() -> None:
    lm = as_loaded(tiny_model("gpt2", n_layers=2), tiny_tokenizer())
    vec = SteeringVector.from_directions({1: torch.linspace(-1, 1, 64)})
    result = doctor(lm, vector=vec, generation=False)
    assert result.layers == [1] and result.exact, result.verdict
    assert result.vector_source.startswith("the given vector")


def test_doctor_catches_a_vector_that_does_nothing() -> None:
    """A constant vector added after GPT-2's last block is removed by the final LayerNorm
    (it subtracts the mean): the steering is a silent no-op, and doctor says so."""
    lm = as_loaded(tiny_model("gpt2", n_layers=2), tiny_tokenizer())
    vec = SteeringVector.from_directions({1: torch.full((64,), 0.5)})
    result = doctor(lm, vector=vec, generation=False)
    assert not result.exact
    assert result.verdict.startswith("NOT exact (no-op): block 1 output")


def test_doctor_names_moe_and_hybrid_blocks() -> None:
    report = doctor(build_tiny("jamba"), layers="all", generation=False).report
    text = " ".join(report.features)
    assert "MoE:" in text and "JambaMambaMixer" in text and "hybrid:" in text


def test_doctor_refuses_an_unsteerable_model_in_one_line() -> None:
    result = doctor(build_tiny("xlnet"))
    assert not result.exact and result.verdict.startswith("refused: steerlab refuses: xlnet")


def test_default_layers() -> None:
    assert default_layers(30) == [7, 15, 22]
    assert default_layers(2) == [0, 1]
    assert default_layers(1) == [0]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    runner = Cli(tmp_path_factory.mktemp("cli"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, model in (("llama", tiny_model("llama")), ("xlnet", build_tiny("xlnet"))):
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        tiny_tokenizer().save_pretrained(path)
        out[name] = path
    return out


def test_doctor_command_exact_exits_zero(cli: Cli, tiny_dirs: dict[str, Path]) -> None:
    result = cli.run("doctor", "--model", tiny_dirs["llama"], "--layers", "2")
    assert result.rc == 0, str(result)
    assert "4 blocks at model.layers, width 64" in result.out
    assert "verdict: exact" in result.out


def test_doctor_command_not_exact_exits_one(cli: Cli, tiny_dirs: dict[str, Path]) -> None:
    result = cli.run("doctor", "--model", tiny_dirs["xlnet"])
    assert result.rc == 1, str(result)
    assert "verdict: refused" in result.out


def test_models_check_command_prints_table_and_counts(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "arch.md"
    result = cli.run("models", "check", "--types", "gpt2,xlnet", "--jobs", "1",
                     "--markdown", out)
    assert result.rc == 0, str(result)
    assert "exact: 1" in result.out and "refused: 1 (steerlab refuses: 1)" in result.out
    text = out.read_text()
    assert "| `gpt2` | GPT2LMHeadModel | exact |" in text and "| `xlnet` |" in text


def test_models_check_rejects_unknown_types(cli: Cli) -> None:
    result = cli.run("models", "check", "--types", "no_such_arch")
    assert result.rc == 2 and "no_such_arch" in result.err


def test_coverage_summaries() -> None:
    rows = [TypeResult("a", "exact", "ok"), TypeResult("b", "refused", "encoder-decoder: x"),
            TypeResult("c", "refused", "encoder-decoder: y"), TypeResult("d", "no-op", "z: w")]
    assert counts(rows)["refused"]["encoder-decoder"] == 2
    assert summary_lines(rows) == ["exact: 1", "refused: 2 (encoder-decoder: 2)",
                                   "no-op: 1 (z: 1)"]
    assert regressions(rows, {"a": "exact", "d": "exact", "e": "exact", "b": "refused"}) == [
        "d: expected exact, now no-op: z: w", "e: expected exact, not in this transformers"]
    assert "| `b` |  | refused |  | encoder-decoder: x |" in markdown(rows)
