"""End-to-end tests of the ``steerlab`` command line, each command in its own process.

Every command runs as a separate process with its own stdout/stderr files and exit status, on
tiny random-weight models saved to disk (``--model DIR``). Bad inputs must end with status 2 and
exactly one ``error: ...`` line on stderr that names the problem, never a traceback.

Speed: a fresh ``python -m steerlab.cli`` spends ~4 s importing torch + transformers, which for
~30 commands would blow the time budget. So most commands are forked from one "zygote" process
that imported ``steerlab`` once; each fork redirects fds 0/1/2, sets its environment and runs
``steerlab.cli`` as ``__main__`` through :mod:`runpy`, exactly as ``python -m`` does, mapping
``SystemExit`` and uncaught exceptions to exit statuses the way the interpreter does. Tests marked
``real=True`` run the genuine ``[sys.executable, "-m", "steerlab.cli", ...]`` and check the zygote
gives the same result.

Environment variables that libraries read at import time are fixed for the zygote (see
:data:`BASE_ENV`): offline Hub, no Hub/transformers progress bars (they would add lines to
stderr), one thread, 200-column rich output. ``STEERLAB_DATA`` / ``STEERLAB_CACHE`` and
``COLUMNS`` are read at call time and may vary per command.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.vector import SteeringVector
from tests.unit.cli_runner import Cli, Models, Result, assert_error

# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    runner = Cli(tmp_path_factory.mktemp("cli"))  # starts importing in the background now
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def models(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    root = tmp_path_factory.mktemp("models")
    tok = tiny_tokenizer()
    paths = Models(d64=root / "llama-d64", d32=root / "llama-d32")
    for path, hidden in ((paths.d64, 64), (paths.d32, 32)):
        tiny_model("llama", hidden=hidden).save_pretrained(path)
        tok.save_pretrained(path)
    yield paths


@pytest.fixture(scope="module")
def extracted(cli: Cli, models: Models) -> tuple[Path, Result]:
    """The vector every later command uses: extracted on the hidden-64 model, layers 1-2."""
    path = cli.workdir / "optimism.safetensors"
    res = cli.run("extract", "--model", models.d64, "--data", "builtin:optimism", "--limit", "4",
                  "--layers", "1-2", "-o", path)
    return path, res


@pytest.fixture(scope="module")
def vector(extracted: tuple[Path, Result]) -> Path:
    path, res = extracted
    assert res.rc == 0, res
    return path


@pytest.fixture(scope="module")
def nan_vector(cli: Cli) -> Path:
    """A vector file with a NaN, carrying the manifest of a valid file (as a bug could write)."""
    valid = SteeringVector.from_directions({1: torch.ones(64), 2: torch.ones(64)}, n_layers=4,
                                           method="mean_diff")
    valid_path = valid.save(cli.workdir / "valid.safetensors")
    with safe_open(str(valid_path), framework="pt") as fh:
        manifest = (fh.metadata() or {})["steerlab"]
    bad = {k: v.clone() for k, v in valid.directions.items()}
    bad[1][7] = math.nan
    path = cli.workdir / "nan.safetensors"
    save_file({f"layers.{k}": v for k, v in bad.items()}, str(path),
              metadata={"steerlab": manifest})
    return path


# --- helpers -------------------------------------------------------------------------------


def write(path: Path, content: Any) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def item(index: int) -> dict[str, str]:
    return {"question": f"Is {index} a good number?\n\nChoices:\n (A) Yes\n (B) No",
            "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}


# --- happy paths ---------------------------------------------------------------------------


def test_models_list_real_process(cli: Cli) -> None:
    res = cli.run("models", "list", real=True)
    assert res.rc == 0, res
    assert "smollm2-135m" in res.out
    assert "gemma3-270m" in res.out
    assert "Traceback" not in res.err


def test_extract_writes_vector(extracted: tuple[Path, Result]) -> None:
    path, res = extracted
    assert res.rc == 0, res
    assert path.is_file()
    assert f"wrote {path}" in res.out
    assert "using 4 of" in res.out
    loaded = SteeringVector.load(path)
    assert loaded.layers == [1, 2]
    assert loaded.hidden_size == 64
    assert loaded.method == "mean_diff"
    assert not list(path.parent.glob(path.name + ".*")), "temp file left behind"


def test_info_shows_provenance_and_a_numeric_layer_table(cli: Cli, vector: Path) -> None:
    res = cli.run("info", vector)
    assert res.rc == 0, res
    assert "mean_diff vector" in res.out and "d=64" in res.out
    assert "2 layer(s) of 4" in res.out
    assert "builtin:optimism" in res.out and "4 pairs" in res.out
    assert "consistency" in res.out and "resid norm" in res.out
    rows = [line.split()[0] for line in res.out.splitlines()
            if line.strip() and line.split()[0].isdigit() and len(line.split()) >= 4]
    assert rows == ["1", "2"]


def test_generate_steered_and_unsteered(cli: Cli, models: Models, vector: Path) -> None:
    res = cli.run("generate", "--model", models.d64, "--vector", vector, "--layers", "1",
                  "--coefficients", "2", "--max-new-tokens", "3", "hello")
    assert res.rc == 0, res
    assert "hello" in res.out
    assert "unsteered:" in res.out
    assert "layer 1, c=+2:" in res.out
    assert "Traceback" not in res.err


def test_generate_without_vector(cli: Cli, models: Models) -> None:
    res = cli.run("generate", "--model", models.d64, "--max-new-tokens", "2", "--no-chat",
                  "hello", "the sky")
    assert res.rc == 0, res
    assert res.out.count("unsteered:") == 2
    assert "layer" not in res.out


def test_score_writes_json(cli: Cli, models: Models, vector: Path) -> None:
    out = cli.workdir / "scores.json"
    res = cli.run("score", "--model", models.d64, "--vector", vector, "--layers", "1",
                  "--data", "builtin:optimism", "--split", "test", "--limit", "4",
                  "--coefficients=-1,0,1", "--format", "ab", "--out", out)
    assert res.rc == 0, res
    rows = json.loads(out.read_text())
    assert [row["coefficient"] for row in rows] == [-1.0, 0.0, 1.0]
    for row in rows:
        assert {"score", "ci_low", "ci_high", "n", "propensity"} <= set(row)
        assert row["n"] == 4
        assert 0.0 <= row["ci_low"] <= row["score"] <= row["ci_high"] <= 1.0
    assert "builtin:optimism" in res.out


def test_score_strengths_range(cli: Cli, models: Models, vector: Path) -> None:
    out = cli.workdir / "strengths.json"
    res = cli.run("score", "--model", models.d64, "--vector", vector, "--layers", "2",
                  "--data", "builtin:optimism", "--limit", "3", "--strengths=-0.5:0.5:0.5",
                  "--out", out)
    assert res.rc == 0, res
    assert [row["strength"] for row in json.loads(out.read_text())] == [-0.5, 0.0, 0.5]


# --- bad inputs ----------------------------------------------------------------------------


def _missing_field() -> list[Any]:
    second = item(1)
    del second["answer_not_matching_behavior"]
    return [item(0), second, item(2)]


def _wrong_type() -> list[Any]:
    return [item(0), item(1), {**item(2), "question": 17}]


@pytest.mark.parametrize(("name", "content", "words"), [
    ("missing_field.json", _missing_field(),
     ("item 1", "answer_not_matching_behavior", "expected a string", "got keys")),
    ("wrong_type.json", _wrong_type(),
     ("item 2", "'question'", "expected a non-empty string", "got int")),
    ("invalid.json", '[{"question": "Q?",\n  "answer_matching_behavior": }]',
     ("invalid JSON", "line 2")),
    ("not_a_list.json", {"question": "Q?"}, ("expected a JSON list", "got dict")),
    ("empty.json", [], ("no items",)),
])
def test_extract_malformed_dataset(cli: Cli, models: Models, name: str, content: Any,
                                   words: tuple[str, ...]) -> None:
    data = write(cli.workdir / name, content)
    output = cli.workdir / f"from_{name}.safetensors"
    res = cli.run("extract", "--model", models.d64, "--data", data, "-o", output)
    assert_error(res, str(data), *words, output=output)


def test_zygote_matches_real_process(cli: Cli, models: Models) -> None:
    """The fork-based runner and ``python -m steerlab.cli`` give the same status and stderr."""
    data = write(cli.workdir / "real_missing_field.json", _missing_field())
    output = cli.workdir / "real.safetensors"
    args = ("extract", "--model", models.d64, "--data", data, "-o", output)
    real = cli.run(*args, real=True)
    forked = cli.run(*args)
    assert_error(real, str(data), "item 1", "answer_not_matching_behavior", output=output)
    assert (forked.rc, forked.out, forked.err) == (real.rc, real.out, real.err)


def test_extract_missing_data_file(cli: Cli, models: Models) -> None:
    data = cli.workdir / "no_such_data.json"
    output = cli.workdir / "nodata.safetensors"
    res = cli.run("extract", "--model", models.d64, "--data", data, "-o", output)
    assert_error(res, str(data), "not found", output=output)


@pytest.mark.parametrize("command", ["score", "generate"])
def test_vector_for_another_model(cli: Cli, models: Models, vector: Path, command: str) -> None:
    if command == "score":
        args: tuple[str, ...] = ("--layers", "1", "--data", "builtin:optimism", "--limit", "2",
                                 "--coefficients", "0,1")
    else:
        args = ("--layers", "1", "--coefficients", "2", "--max-new-tokens", "2", "hello")
    res = cli.run(command, "--model", models.d32, "--vector", vector, *args)
    assert_error(res, str(vector), "hidden size 64", "hidden size 32", str(models.d32))


@pytest.mark.parametrize(("layers", "words"), [
    ("40", ("layer 40", "out of range", "4 layers", "0..3")),
    ("2-9", ("9", "out of range", "4 layers")),
    ("-5", ("-5", "out of range", "-4..-1")),
])
def test_extract_layer_out_of_range(cli: Cli, models: Models, layers: str,
                                    words: tuple[str, ...]) -> None:
    output = cli.workdir / f"layers_{layers}.safetensors"
    res = cli.run("extract", "--model", models.d64, "--data", "builtin:optimism", "--limit", "2",
                  f"--layers={layers}", "-o", output)
    assert_error(res, *words, output=output)


def test_generate_layer_not_in_vector(cli: Cli, models: Models, vector: Path) -> None:
    res = cli.run("generate", "--model", models.d64, "--vector", vector, "--layers", "3",
                  "--coefficients", "1", "--max-new-tokens", "2", "hello")
    assert_error(res, "layer(s) [3]", "[1, 2]")


@pytest.mark.parametrize("command", ["info", "generate"])
def test_nan_vector(cli: Cli, models: Models, nan_vector: Path, command: str) -> None:
    if command == "info":
        res = cli.run("info", nan_vector)
    else:
        res = cli.run("generate", "--model", models.d64, "--vector", nan_vector, "--coefficients",
                      "1", "--max-new-tokens", "2", "hello")
    assert_error(res, str(nan_vector), "layer 1", "NaN")


def test_info_not_a_vector_file(cli: Cli) -> None:
    junk = write(cli.workdir / "junk.safetensors", "this is not safetensors")
    assert_error(cli.run("info", junk), str(junk), "not a safetensors file")
    missing = cli.workdir / "absent.safetensors"
    assert_error(cli.run("info", missing), str(missing), "not found")


def test_missing_data_dir(cli: Cli, models: Models) -> None:
    nowhere = cli.workdir / "no_such_data_dir"
    output = cli.workdir / "caa.safetensors"
    res = cli.run("extract", "--model", models.d64, "--data", "caa:sycophancy", "-o", output,
                  env={"STEERLAB_DATA": str(nowhere)})
    assert_error(res, "STEERLAB_DATA", str(nowhere), output=output)


def test_unknown_dataset_names(cli: Cli, models: Models) -> None:
    output = cli.workdir / "unknown.safetensors"
    res = cli.run("extract", "--model", models.d64, "--data", "builtin:nope", "-o", output)
    assert_error(res, "'nope'", "optimism", output=output)
    res = cli.run("extract", "--model", models.d64, "--data", "zzz:optimism", "-o", output)
    assert_error(res, "'zzz'", "builtin:", output=output)


@pytest.mark.parametrize("name", ["no-such-model-xyz", "{tmp}/no_such_model_dir"])
def test_unknown_model(cli: Cli, name: str) -> None:
    name = name.format(tmp=cli.workdir)
    output = cli.workdir / "unknown_model.safetensors"
    res = cli.run("extract", "--model", name, "--data", "builtin:optimism", "-o", output)
    assert_error(res, name, "model", output=output)


@pytest.mark.parametrize(("values", "words"), [
    (("--coefficients", "1", "--strengths", "1"), ("--coefficients or --strengths, not both",)),
    (("--coefficients", "1,x"), ("--coefficients", "bad value list", "'1,x'", "expected")),
    (("--strengths", "0:1:0"), ("--strengths", "step must be positive", "'0:1:0'")),
])
def test_score_bad_values(cli: Cli, models: Models, vector: Path, values: tuple[str, ...],
                          words: tuple[str, ...]) -> None:
    out = cli.workdir / "bad_values.json"
    res = cli.run("score", "--model", models.d64, "--vector", vector, "--layers", "1", "--data",
                  "builtin:optimism", "--limit", "2", *values, "--out", out)
    assert_error(res, *words, output=out)


def test_generate_vector_needs_amount(cli: Cli, models: Models, vector: Path) -> None:
    res = cli.run("generate", "--model", models.d64, "--vector", vector, "--max-new-tokens", "2",
                  "hello")
    assert_error(res, "--strengths", "--coefficients")


# --- known bugs (see the report that came with this file); remove the marker once fixed ----


def test_models_list_narrow_terminal(cli: Cli) -> None:
    res = cli.run("models", "list", env={"COLUMNS": "80"})
    assert res.rc == 0, res
    assert "smollm2-135m" in res.out


def test_generate_prompt_with_brackets(cli: Cli, models: Models) -> None:
    res = cli.run("generate", "--model", models.d64, "--max-new-tokens", "2", "--no-chat",
                  "[INST] hi [/INST]")
    assert res.rc == 0, res
    assert "[INST] hi [/INST]" in res.out


def test_score_json_unwritable(cli: Cli, models: Models, vector: Path) -> None:
    blocker = write(cli.workdir / "a_file", "x")
    out = blocker / "scores.json"  # its "directory" is a file
    res = cli.run("score", "--model", models.d64, "--vector", vector, "--layers", "1", "--data",
                  "builtin:optimism", "--limit", "2", "--coefficients", "0", "--out", out)
    assert_error(res, str(out))


def test_negative_limit(cli: Cli, models: Models) -> None:
    output = cli.workdir / "negative_limit.safetensors"
    res = cli.run("extract", "--model", models.d64, "--data", "builtin:optimism", "--limit",
                  "-1", "-o", output)
    assert_error(res, "--limit", "-1", output=output)


def test_score_json_is_strict_json(cli: Cli, models: Models, vector: Path) -> None:
    out = cli.workdir / "one_item.json"
    res = cli.run("score", "--model", models.d64, "--vector", vector, "--layers", "1", "--data",
                  "builtin:optimism", "--limit", "1", "--coefficients", "0", "--out", out)
    assert res.rc == 0, res

    def reject(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    json.loads(out.read_text(), parse_constant=reject)


def test_missing_model_dir_says_not_found(cli: Cli) -> None:
    name = str(cli.workdir / "no_such_model_dir")
    output = cli.workdir / "missing_model_dir.safetensors"
    res = cli.run("extract", "--model", name, "--data", "builtin:optimism", "-o", output)
    assert_error(res, name, "not found", output=output)


# --- ActAdd pairs (issue 21) ---------------------------------------------------------------


def test_pair_refuses_pairs_that_do_not_line_up(cli: Cli, models: Models) -> None:
    """On the tiny tokenizer "Love" is 4 tokens and "Hate" 3: refused in one line naming both
    tokenizations; --pad space pads only when asked."""
    output = cli.workdir / "love_hate.safetensors"
    res = cli.run("pair", "Love", "Hate", "--model", models.d64, "--layers", "1", "-o", output)
    assert_error(res, "['L', 'o', 'v', 'e'] vs ['H', 'at', 'e']", "leading space",
                 "--pad space", output=output)
    res = cli.run("pair", "Love", "Hate", "--model", models.d64, "--layers", "1", "--pad",
                  "space", "-o", output)
    assert res.rc == 0, res
    assert "negative rows: '<|endoftext|>' | 'H' | 'at' | 'e' | ' '" in res.out
    assert SteeringVector.load(output).manifest["pad"] == "space"
    bad = cli.workdir / "bad_pad.safetensors"
    res = cli.run("pair", "Love", "Hate", "--model", models.d64, "--pad", "zeros", "-o", bad)
    assert_error(res, "pad must be one of space", output=bad)


@pytest.mark.parametrize(("positive", "negative", "words"), [
    ("Love", "Love", ("positive and negative texts are both 'Love'",)),
    ("", "hate", ("the positive text is empty",)),
])
def test_pair_refuses_identical_or_empty_texts(cli: Cli, models: Models, positive: str,
                                               negative: str, words: tuple[str, ...]) -> None:
    output = cli.workdir / "same.safetensors"
    res = cli.run("pair", positive, negative, "--model", models.d64, "--layers", "1", "-o",
                  output)
    assert_error(res, "pair", *words, output=output)


@pytest.fixture(scope="module")
def actadd(cli: Cli, models: Models) -> Path:
    path = cli.workdir / "hate_soft.safetensors"
    res = cli.run("pair", "Hate", "hate", "--model", models.d64, "--layers", "1", "-o", path)
    assert res.rc == 0, res
    assert "positive rows: '<|endoftext|>' | 'H' | 'at' | 'e'" in res.out
    return path


def test_pair_row_zero_is_the_document_start(cli: Cli, actadd: Path) -> None:
    res = cli.run("info", actadd)
    assert res.rc == 0, res
    assert "negative rows: '<|endoftext|>' | 'h' | 'at' | 'e'" in res.out
    vec = SteeringVector.load(actadd)
    assert vec.manifest["document_start"] == {"id": 0, "token": "<|endoftext|>",
                                              "prefixed": True}
    assert vec.directions[1].shape == (4, 64)
    assert torch.equal(vec.directions[1][0], torch.zeros(64))


def test_generate_front_prints_the_coefficients_strength(cli: Cli, models: Models,
                                                         actadd: Path) -> None:
    vec = SteeringVector.load(actadd)
    res = cli.run("generate", "--model", models.d64, "--vector", actadd, "--positions",
                  "front", "--coefficients", "4", "--max-new-tokens", "2", "--no-chat", "hello")
    assert res.rc == 0, res
    strength = 4 * float(vec.directions[1].norm(dim=-1).mean()) / vec.resid_norm(1)  # type: ignore[operator]
    assert f"coefficient 4 = strength {strength:.3g}" in res.out
    assert "layer 1, c=+4:" in res.out


def test_eval_sentiment_prints_strengths_and_refuses_bad_pairs(
        cli: Cli, models: Models, actadd: Path, shared_data: Path) -> None:
    out = cli.workdir / "sentiment"
    # --scorer vader: the classifier would train in this test's empty cache (its own test is
    # tests/integration/test_sentiment_classifier.py)
    res = cli.run("eval", "sentiment", "--model", models.d64, "--pair", "Hate", "hate",
                  "--layers", "1", "--coefficients=0,4", "--prompt-sets", "neutral", "--limit",
                  "1", "--max-new-tokens", "2", "--temperature", "0", "--scorer", "vader",
                  "-o", out,
                  env={"STEERLAB_DATA": str(shared_data)})
    assert res.rc == 0, res
    vec = SteeringVector.load(out / "actadd.safetensors")
    strength = 4 * float(vec.directions[1].norm(dim=-1).mean()) / vec.resid_norm(1)  # type: ignore[operator]
    assert f"coefficient 4 = strength {strength:.3g}" in res.out
    for pair, words in ((("Love", "Love"), ("--pair", "both 'Love'")),
                        (("Love", "Hate"), ("['L', 'o', 'v', 'e'] vs ['H', 'at', 'e']",))):
        res = cli.run("eval", "sentiment", "--model", models.d64, "--pair", *pair, "--layers",
                      "1", "--coefficients=0", "--limit", "1", "--scorer", "vader", "-o",
                      cli.workdir / "bad_sent",
                      env={"STEERLAB_DATA": str(shared_data)})
        assert_error(res, *words)


def test_export_gguf_prints_the_coefficients_strength(cli: Cli, vector: Path) -> None:
    vec = SteeringVector.load(vector)
    out = cli.workdir / "two.gguf"
    res = cli.run("export", "gguf", vector, "--layers", "1", "--coefficients", "2", "-o", out)
    assert res.rc == 0, res
    strength = 2 * float(vec.directions[1].norm()) / vec.resid_norm(1)  # type: ignore[operator]
    assert "layer 1: vector norm" in res.out
    assert f"coefficient 2 = strength {strength:.3g}" in res.out and "layer 2" not in res.out
