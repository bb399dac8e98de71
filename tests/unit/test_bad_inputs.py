"""The bad-input corpus: what a careless or hostile user can hand the command line.

Every case must end with exit status 2, exactly one ``error:`` line on stderr that names the
problem (file / item / field / option, expected vs got), no traceback, and no output file left
behind (nor a temp file). Cases cover datasets, vector files, model paths, option values and
output paths; each runs as its own ``steerlab`` process (forked from one warm zygote).
"""

from __future__ import annotations

import json
import math
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.vector import SteeringVector
from tests.unit.cli_runner import Cli, assert_error


@dataclass(frozen=True)
class Env:
    cli: Cli
    root: Path
    model: Path  # tiny llama, 4 layers, hidden 64
    model32: Path  # hidden 32
    vector: Path  # a good vector for the hidden-64 model, layers 1-2

    def path(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("bad")
    cli = Cli(root)
    tok = tiny_tokenizer()
    models = []
    for name, hidden in (("m64", 64), ("m32", 32)):
        path = root / name
        tiny_model("llama", hidden=hidden).save_pretrained(path)
        tok.save_pretrained(path)
        models.append(path)
    vec = SteeringVector.from_directions({1: torch.randn(64), 2: torch.randn(64)}, n_layers=4,
                                         method="mean_diff", resid_norms={"1": 3.0, "2": 3.0})
    yield Env(cli, root, models[0], models[1], vec.save(root / "good.safetensors"))
    cli.close()


def _item(i: int) -> dict[str, str]:
    return {"question": f"Is {i} a good number?\n\nChoices:\n (A) Yes\n (B) No",
            "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _manifest_of(path: Path) -> dict[str, object]:
    with safe_open(str(path), framework="pt") as fh:
        return json.loads((fh.metadata() or {})["steerlab"])


def _vector_file(env: Env, name: str, tensors: dict[str, torch.Tensor] | None = None,
                 manifest: object = "keep", raw_meta: str | None = None) -> Path:
    """A safetensors file like the good vector, with parts replaced."""
    good = SteeringVector.load(env.vector)
    tensors = tensors if tensors is not None else {f"layers.{k}": v
                                                   for k, v in good.directions.items()}
    if raw_meta is not None:
        meta = {"steerlab": raw_meta}
    elif manifest == "keep":
        meta = {"steerlab": json.dumps(_manifest_of(env.vector))}
    elif manifest is None:
        meta = {}
    else:
        meta = {"steerlab": json.dumps(manifest)}
    path = env.path(name)
    save_file(tensors, str(path), metadata=meta)
    return path


def _patched(env: Env, name: str, **fields: object) -> Path:
    return _vector_file(env, name, manifest={**_manifest_of(env.vector), **fields})


def _tree(path: Path) -> dict[str, bytes] | None:
    """Every file below ``path`` (hidden ones too) with its bytes; None if ``path`` is absent."""
    if not path.exists():
        return None
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(path.rglob("*"))}


def _sweep(env: Env, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["eval", "sweep", "--model", env.model, "--data", "builtin:optimism",
            "--strengths=-0.5,0.5", *extra, "-o", out]


# --- datasets: `extract --data FILE` -------------------------------------------------------

DATASETS: dict[str, tuple[Callable[[Path], str], tuple[str, ...]]] = {
    "empty_file": (lambda d: str(_write(d / "empty.json", "")), ("empty file",)),
    "not_json": (lambda d: str(_write(d / "notjson.json", "this is not json")),
                 ("invalid JSON", "line 1")),
    "object_not_list": (lambda d: str(_write(d / "obj.json", json.dumps({"question": "Q"}))),
                        ("expected a JSON list", "got dict")),
    "list_of_numbers": (lambda d: str(_write(d / "nums.json", "[1, 2, 3]")),
                        ("item 0", "expected a JSON object", "got int")),
    "empty_list": (lambda d: str(_write(d / "emptylist.json", "[]")), ("no items",)),
    "missing_field": (lambda d: str(_write(d / "missing.json", json.dumps(
        [_item(0), {k: v for k, v in _item(1).items() if k != "answer_matching_behavior"}]))),
        ("item 1", "answer_matching_behavior", "got keys")),
    "wrong_type": (lambda d: str(_write(d / "wrongtype.json", json.dumps(
        [{**_item(0), "question": 17}]))), ("item 0", "'question'", "got int")),
    "identical_answers": (lambda d: str(_write(d / "same.json", json.dumps(
        [{**_item(0), "answer_not_matching_behavior": "(A)"}]))), ("item 0", "both '(A)'")),
    "identical_pair": (lambda d: str(_write(d / "samepair.json", json.dumps(
        [{"positive": "x", "negative": "x"}]))), ("item 0", "both 'x'")),
    "empty_pair_text": (lambda d: str(_write(d / "emptypair.json", json.dumps(
        [{"positive": "", "negative": "no"}]))), ("item 0", "'positive'", "non-empty")),
    "huge_single_line": (lambda d: str(_write(d / "huge.json", "[" + "x" * 10_000_000)),
                         ("invalid JSON",)),
    "deeply_nested": (lambda d: str(_write(d / "nested.json", "[" * 100_000 + "]" * 100_000)),
                      ("nested too deeply",)),
    "a_directory": (lambda d: str((d / "adir").mkdir() or d / "adir"), ("is a directory",)),
    "missing_path": (lambda d: str(d / "nowhere.json"), ("not found",)),
    "jsonl_bad_line": (lambda d: str(_write(d / "bad.jsonl", json.dumps(_item(0)) + "\n{oops\n")),
                       ("line 2", "invalid JSON")),
    "not_utf8": (lambda d: str(_write(d / "latin.json", b"[\xff\xfe]")), ("not UTF-8",)),
    "unknown_caa": (lambda d: "caa:no-such-behaviour", ("unknown CAA behaviour", "refusal")),
    "unknown_mwe": (lambda d: "mwe:no-such-persona", ("unknown mwe dataset",)),
    "unknown_builtin": (lambda d: "builtin:nope", ("unknown built-in dataset", "optimism")),
    "unknown_scheme": (lambda d: "zzz:optimism", ("unknown dataset scheme 'zzz'",)),
    "path_in_name": (lambda d: "caa:../../etc", ("invalid dataset name",)),
    "pairs_as_non_strings": (lambda d: str(_write(d / "pairnums.json", "[[1, 2]]")),
                             ("item 0", "expected",)),
}


@pytest.mark.parametrize("case", sorted(DATASETS))
def test_bad_dataset(env: Env, case: str) -> None:
    make, words = DATASETS[case]
    data = make(env.root)
    out = env.path(f"data_{case}.safetensors")
    res = env.cli.run("extract", "--model", env.model, "--data", data, "-o", out)
    assert_error(res, *words, output=out)


# --- vector files: `info` and `generate --vector` -------------------------------------------

VECTORS: dict[str, tuple[Callable[[Env], Path], tuple[str, ...]]] = {
    "truncated": (lambda e: _write(e.path("trunc.safetensors"), e.vector.read_bytes()[:100]),
                  ("not a safetensors file",)),
    "random_bytes": (lambda e: _write(e.path("random.safetensors"), bytes(range(256)) * 8),
                     ("not a safetensors file",)),
    "pickle_renamed": (lambda e: _write(e.path("pickle.safetensors"),
                                        pickle.dumps({"layers.1": [1.0, 2.0]})),
                       ("not a safetensors file",)),
    "empty": (lambda e: _write(e.path("empty.safetensors"), b""),
              ("not a safetensors file",)),
    "nan": (lambda e: _vector_file(e, "nan.safetensors", {
        "layers.1": torch.tensor([math.nan] * 64)}), ("layer 1", "NaN")),
    "inf": (lambda e: _vector_file(e, "inf.safetensors", {
        "layers.2": torch.full((64,), math.inf)}), ("layer 2", "inf")),
    "bad_key": (lambda e: _vector_file(e, "key.safetensors", {"weights": torch.ones(64)}),
                ("unexpected tensor key 'weights'",)),
    "no_manifest": (lambda e: _vector_file(e, "nomanifest.safetensors", manifest=None),
                    ("no steerlab manifest",)),
    "manifest_not_json": (lambda e: _vector_file(e, "badjson.safetensors", raw_meta="{oops"),
                          ("manifest is not valid JSON",)),
    "manifest_a_list": (lambda e: _vector_file(e, "list.safetensors", raw_meta="[1, 2]"),
                        ("expected a JSON object", "got list")),
    "n_layers_a_string": (lambda e: _patched(e, "nl.safetensors", n_layers="four"),
                          ("n_layers", "expected an integer", "'four'")),
    "resid_norms_a_string": (lambda e: _patched(e, "rn.safetensors", resid_norms="abc"),
                             ("resid_norms", "expected an object")),
    "resid_norm_not_a_number": (lambda e: _patched(e, "rn2.safetensors",
                                                   resid_norms={"1": "big"}),
                                ("resid_norms", "layer 1", "expected a number > 0")),
    "format_version_string": (lambda e: _patched(e, "fv.safetensors", format_version="1"),
                              ("format_version", "expected an integer")),
    "site_unknown": (lambda e: _patched(e, "site.safetensors", site="attn_out"),
                     ("unknown site 'attn_out'",)),
    "dataset_not_an_object": (lambda e: _patched(e, "ds.safetensors", dataset=5),
                              ("dataset", "expected an object", "got int")),
    "a_directory": (lambda e: (e.path("vdir.safetensors").mkdir(exist_ok=True)
                               or e.path("vdir.safetensors")), ("is a directory",)),
    "missing": (lambda e: e.path("absent.safetensors"), ("vector file not found",)),
}


@pytest.mark.parametrize("case", sorted(VECTORS))
def test_bad_vector_file(env: Env, case: str) -> None:
    make, words = VECTORS[case]
    path = make(env)
    assert_error(env.cli.run("info", path), str(path), *words)
    res = env.cli.run("generate", "--model", env.model, "--vector", path, "--layers", "1",
                      "--strengths", "0.5", "--max-new-tokens", "2", "hi")
    assert_error(res, str(path), *words)


def test_vector_for_a_model_of_another_width(env: Env) -> None:
    res = env.cli.run("generate", "--model", env.model32, "--vector", env.vector, "--layers",
                      "1", "--strengths", "0.5", "--max-new-tokens", "2", "hi")
    assert_error(res, str(env.vector), "hidden size 64", "hidden size 32")


def test_vector_layer_beyond_the_model(env: Env) -> None:
    vec = SteeringVector.from_directions({40: torch.ones(64)}, method="mean_diff")
    path = vec.save(env.path("deep.safetensors"))
    res = env.cli.run("generate", "--model", env.model, "--vector", path, "--strengths", "0.5",
                      "--max-new-tokens", "2", "hi")
    assert_error(res, str(path), "layer(s) [40] out of range", "4 layers")


def test_nan_residual_norm_with_strength(env: Env) -> None:
    path = _patched(env, "nanresid.safetensors", resid_norms={"1": "NaN"})
    res = env.cli.run("generate", "--model", env.model, "--vector", path, "--layers", "1",
                      "--strengths", "0.5", "--max-new-tokens", "2", "hi")
    assert_error(res, str(path), "resid_norms", "layer 1")


SWEEP_VECTORS: dict[str, tuple[Callable[[Env], Path], str, tuple[str, ...]]] = {
    "bad_manifest": (lambda e: _patched(e, "sweepnl.safetensors", n_layers="four"), "1",
                     ("n_layers", "expected an integer")),
    "layer_the_vector_lacks": (lambda e: e.vector, "3",
                               ("no direction for layer(s) [3]", "it has [1, 2]")),
}


@pytest.mark.parametrize("before", ["absent", "existing"])
@pytest.mark.parametrize("case", sorted(SWEEP_VECTORS))
def test_sweep_stopped_by_its_vector_leaves_no_run_directory(env: Env, case: str,
                                                            before: str) -> None:
    make, layers, words = SWEEP_VECTORS[case]
    path = make(env)
    out = env.path(f"sweep_{case}_{before}")
    if before == "existing":  # an earlier run's directory: left exactly as it was
        out.mkdir()
        _write(out / "notes.txt", "mine")
    was = _tree(out)
    res = env.cli.run(*_sweep(env, out, "--vector", path, "--layers", layers))
    assert_error(res, str(path), *words)
    assert _tree(out) == was, f"{out} changed: {_tree(out)}"


# --- models ----------------------------------------------------------------------------------


def _broken_config(env: Env) -> Path:
    path = env.path("brokencfg")
    path.mkdir(exist_ok=True)
    _write(path / "config.json", "{not json")
    return path


def _pickled_weights(env: Env) -> Path:
    path = env.path("pickled")
    path.mkdir(exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        _write(path / name, (env.model / name).read_text())
    torch.save({"x": torch.ones(1)}, path / "pytorch_model.bin")
    return path


def _remote_code(env: Env) -> Path:
    path = env.path("remote")
    path.mkdir(exist_ok=True)
    cfg = json.loads((env.model / "config.json").read_text())
    cfg.update(model_type="my_custom_arch", auto_map={"AutoModelForCausalLM": "mine.Model"})
    _write(path / "config.json", json.dumps(cfg))
    return path


MODELS: dict[str, tuple[Callable[[Env], str], tuple[str, ...]]] = {
    "unknown_alias": (lambda e: "no-such-model-xyz", ("no-such-model-xyz", "built-in alias")),
    "missing_dir": (lambda e: str(e.path("nomodeldir")), ("model directory not found",)),
    "empty_dir": (lambda e: str(e.path("emptymodel").mkdir(exist_ok=True)
                                 or e.path("emptymodel")), ("no config.json",)),
    "not_gguf": (lambda e: str(_write(e.path("fake.gguf"), b"hello, not a gguf at all")),
                 ("not a GGUF file",)),
    "empty_gguf": (lambda e: str(_write(e.path("empty.gguf"), b"")), ("not a GGUF file",)),
    "broken_config": (lambda e: str(_broken_config(e)), ("config.json",)),
    "pickled_weights": (lambda e: str(_pickled_weights(e)), ("safetensors", "pickle")),
    "remote_code": (lambda e: str(_remote_code(e)), ("remote code",)),
}


@pytest.mark.parametrize("case", sorted(MODELS))
def test_bad_model(env: Env, case: str) -> None:
    make, words = MODELS[case]
    name = make(env)
    out = env.path(f"model_{case}.safetensors")
    res = env.cli.run("extract", "--model", name, "--data", "builtin:optimism", "--limit", "2",
                      "-o", out)
    assert_error(res, *words, output=out)


def _hub_env(env: Env) -> dict[str, str]:
    """The Hub switched on but unreachable (nothing listens on port 9), an empty HF cache."""
    return {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9",
            "HF_HOME": str(env.path("hf_home"))}


def test_unknown_model_with_the_hub_unreachable_is_one_line(env: Env) -> None:
    out = env.path("model_hub_down.safetensors")
    res = env.cli.run("extract", "--model", "no-such-model-xyz", "--data", "builtin:optimism",
                      "-o", out, env=_hub_env(env), real=True)  # real: HF reads env at import
    assert_error(res, "no-such-model-xyz", "not a built-in alias", "smollm2-135m",
                 "not in the local Hugging Face cache", "cannot be reached", output=out)


def test_cached_hub_model_loads_with_the_hub_unreachable(env: Env) -> None:
    repo = env.path("hf_home") / "hub" / "models--steerlab-test--tiny"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for item in env.model.iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    (repo / "refs").mkdir()
    _write(repo / "refs" / "main", commit)
    res = env.cli.run("generate", "--model", "steerlab-test/tiny", "--max-new-tokens", "2",
                      "hi", env=_hub_env(env), real=True)
    assert res.rc == 0, res
    assert "Retry" not in res.err and "error" not in res.err, res


# --- option values ---------------------------------------------------------------------------

OPTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "layers_empty": (("--layers", ""), ("invalid layer",)),
    "layers_word": (("--layers", "abc"), ("invalid layer 'abc'",)),
    "layers_backwards": (("--layers", "3-1"), ("'3-1' is empty",)),
    "layers_range_too_deep": (("--layers", "5-2"), ("layer 5 out of range",)),
    "layers_too_deep": (("--layers", "999"), ("layer 999 out of range", "4 layers")),
    "layers_two_dots": (("--layers", "0.5.5"), ("invalid layer '0.5.5'",)),
    "coefficients_empty": (("--coefficients=",), ("--coefficients", "no values")),
    "coefficients_words": (("--coefficients=a,b",), ("--coefficients", "bad value list",
                                                     "'a,b'")),
    "coefficients_step_zero": (("--coefficients=1:0:0",), ("--coefficients", "step")),
    "coefficients_nan": (("--coefficients=nan",), ("--coefficients", "finite")),
    "coefficients_billion": (("--coefficients=0:1000000000:1",),
                             ("--coefficients", "values; at most")),
    "coefficient_and_strength": (("--coefficients=1", "--strengths=1"), ("not both",)),
    "positions_bogus": (("--positions", "middle"), ("bad positions 'middle'",
                                                    "after_instruction")),
    "operator_bogus": (("--operator", "multiply"), ("unknown operator 'multiply'", "ablate")),
    "top_p_out_of_range": (("--top-p", "2"), ("top_p", "(0, 1]", "2")),
    "temperature_negative": (("--temperature", "-1"), ("--temperature", "-1")),
    "max_new_tokens_negative": (("--max-new-tokens", "-3"), ("--max-new-tokens", "-3")),
    "top_k_negative": (("--top-k", "-1"), ("--top-k", "-1")),
    "unknown_option": (("--layer", "1"), ("No such option: --layer", "--layers")),
}


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_bad_generate_option(env: Env, case: str) -> None:
    args, words = OPTIONS[case]
    base = ["--model", str(env.model), "--vector", str(env.vector), "--max-new-tokens", "2"]
    if not any(a.startswith(("--coefficients", "--strengths")) for a in args):
        base += ["--strengths", "0.5"]
    if not any(a == "--layers" or a.startswith("--layers=") for a in args) and \
            case != "unknown_option":
        base += ["--layers", "1"]
    if case == "max_new_tokens_negative":
        base = base[:4] + base[6:]
    res = env.cli.run("generate", *base, *args, "hi")
    assert_error(res, *words)


@pytest.mark.parametrize(("args", "words"), [
    (("--limit", "-1"), ("--limit", "-1")),
    (("--split", "dev"), ("unknown split 'dev'",)),
    (("--method", "magic"), ("unknown method 'magic'", "mean_diff")),
    (("--batch-size", "0"), ("--batch-size", "0")),
])
def test_bad_extract_option(env: Env, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    out = env.path(f"opt_{args[0].strip('-')}.safetensors")
    res = env.cli.run("extract", "--model", env.model, "--data", "builtin:optimism", *args,
                      "-o", out)
    assert_error(res, *words, output=out)


@pytest.mark.parametrize(("extra", "words"), [
    (("--format", "letters"), ("--format", "ab, open", "'letters'")),
    (("--train-limit", "-5"), ("--train-limit", "-5")),
])
def test_bad_sweep_option(env: Env, extra: tuple[str, ...], words: tuple[str, ...]) -> None:
    res = env.cli.run("eval", "sweep", "--model", env.model, "--data", "builtin:optimism",
                      "--layers", "1", "--strengths=-0.5,0.5", *extra, "-o",
                      env.path("sweep_bad"))
    assert_error(res, *words)


# --- outputs -----------------------------------------------------------------------------------


def test_out_directory_that_is_a_file(env: Env) -> None:
    blocker = _write(env.path("iamafile"), "x")
    res = env.cli.run("eval", "sweep", "--model", env.model, "--data", "builtin:optimism",
                      "--layers", "1", "--strengths=-0.5,0.5", "-o", blocker)
    assert_error(res, str(blocker), "is a file")


def test_out_in_a_directory_that_cannot_be_made(env: Env) -> None:
    where = Path("/proc/steerlab-no-such-dir/run")  # unwritable even for root
    res = env.cli.run("eval", "sweep", "--model", env.model, "--data", "builtin:optimism",
                      "--layers", "1", "--strengths=-0.5,0.5", "-o", where)
    assert_error(res, str(where))
    out = Path("/proc/steerlab-no-such-dir/v.safetensors")
    res = env.cli.run("extract", "--model", env.model, "--data", "builtin:optimism", "-o", out)
    assert_error(res, str(out), "cannot write")


KILLED_WRITE = """
import os, signal, sys
from steerlab.util.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a vector")
    print(tmp.name, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # between the write and the rename
"""


def test_a_write_killed_before_its_rename_leaves_a_named_temp_the_next_write_removes(
        env: Env) -> None:
    out = env.path("killed.safetensors")
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(out)], capture_output=True,
                          text=True, env=env.cli.env, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc
    left = env.path(proc.stdout.strip())
    assert left.is_file() and not out.exists()
    assert left.name.startswith(".killed.safetensors.")  # hidden, named after its target
    assert left.name.endswith(".steerlab-partial-write")  # ... and says what it is
    res = env.cli.run("extract", "--model", env.model, "--data", "builtin:optimism", "--limit",
                      "4", "-o", out)
    assert res.rc == 0, res
    assert out.is_file() and not left.exists()


def test_vector_out_path_is_a_directory(env: Env) -> None:
    target = env.path("outdir")
    target.mkdir(exist_ok=True)
    res = env.cli.run("extract", "--model", env.model, "--data", "builtin:optimism", "-o",
                      target)
    assert_error(res, str(target), "is a directory")


# --- prompts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "name", "words"), [
    ("", "empty.txt", ("no prompts",)),
    ('[{"role": "wizard", "content": "hi"}]', "badrole.json", ("item 0",)),
    ('[[{"role": "wizard", "content": "hi"}]]', "badrole2.json", ("role", "wizard")),
    ('[[{"role": "assistant", "content": "hi"}]]', "lastturn.json", ("last message",
                                                                      "user")),
])
def test_bad_prompts_file(env: Env, content: str, name: str, words: tuple[str, ...]) -> None:
    path = _write(env.path(name), content)
    res = env.cli.run("generate", "--model", env.model, "--prompts", path, "--max-new-tokens",
                      "2")
    assert_error(res, *words)


def test_generate_needs_prompts_and_a_layer_for_multi_layer_vectors(env: Env) -> None:
    assert_error(env.cli.run("generate", "--model", env.model), "give prompts")
    res = env.cli.run("generate", "--model", env.model, "--vector", env.vector, "--strengths",
                      "0.5", "--max-new-tokens", "2", "hi")
    assert_error(res, "2 layers", "--layers", "eval sweep")


# --- run directories: a damaged results.jsonl met on resume -------------------------------------

_RECORD = json.dumps({"cell": "sweep/old", "command": "sweep", "metric": "score", "value": 0.5,
                      "cell_records": 1}).encode()

RESULTS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "not_utf8": (_RECORD + b"\n\xff\xfe oops\n" + _RECORD + b"\n",
                 ("line 2", "not UTF-8", "0xff")),
    "not_json": (_RECORD + b"\n{oops\n" + _RECORD + b"\n", ("line 2", "not JSON")),
    "not_an_object": (b"[1, 2]\n" + _RECORD + b"\n",
                      ("line 1", "not a results record", "got list")),
    "no_cell_field": (b'{"metric": "score"}\n', ("line 1", "no 'cell' field")),
    # a whole last line (it ends in a newline) is no torn write: refused like any other
    "bad_whole_last_line": (_RECORD + b"\n{oops\n", ("line 2", "not JSON")),
}


@pytest.mark.parametrize("case", sorted(RESULTS))
def test_damaged_results_file_is_one_line_naming_the_line(env: Env, case: str) -> None:
    content, words = RESULTS[case]
    out = env.path(f"results_{case}")
    out.mkdir()
    results = _write(out / "results.jsonl", content)
    res = env.cli.run(*_sweep(env, out, "--layers", "1"))
    assert_error(res, str(results), *words, "delete that line")
    assert _tree(out) == {"results.jsonl": content}  # nothing repaired, nothing added


def test_torn_last_line_of_results_is_dropped_with_a_warning(env: Env) -> None:
    """A killed run's torn tail is not refused: resuming drops it (its cell is measured
    again) and says so in one line."""
    out = env.path("results_torn")
    out.mkdir()
    torn = b'{"cell": "sweep/torn", "metr\xc3'  # cut mid-line, even mid-character
    results = _write(out / "results.jsonl", _RECORD + b"\n" + torn)
    res = env.cli.run(*_sweep(env, out, "--layers", "1", "--limit", "2", "--train-limit", "4"))
    assert res.rc == 0, res
    warnings = [line for line in res.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{results} line 2" in warnings[0], res
    assert "Traceback" not in res.err, res
    assert torn not in results.read_bytes() and results.read_bytes().startswith(_RECORD + b"\n")


# --- library: SteeringVector values a user builds ---------------------------------------------


def test_one_tensor_at_two_layers_saves_and_loads(env: Env) -> None:
    """The same tensor object at two layers (and rows of one matrix) share memory, which
    safetensors refuses; save() must write them all the same."""
    d, rows = torch.randn(64), torch.randn(2, 64)
    vec = SteeringVector.from_directions({0: rows[0], 1: d, 2: d, 3: rows[1]}, n_layers=4)
    path = vec.save(env.path("shared.safetensors"))
    back = SteeringVector.load(path)
    assert back.layers == [0, 1, 2, 3]
    for layer, want in {0: rows[0], 1: d, 2: d, 3: rows[1]}.items():
        assert torch.equal(back.directions[layer], want)
    assert env.cli.run("info", path).rc == 0
