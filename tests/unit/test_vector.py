"""Tests for steerlab.vector: the safetensors + manifest artefact, its algebra and load checks."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import steerlab
import steerlab.vector as vector_mod
from steerlab.errors import SteerlabError
from steerlab.model.load import as_loaded
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.vector import FORMAT_VERSION, SteeringVector, cosine

D = 64  # tiny_model hidden size
N_LAYERS = 4


def _vec(layers: tuple[int, ...] = (1, 2), d: int = D, seed: int = 0,
         **extra: Any) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    return SteeringVector.from_directions(
        {k: torch.randn(d, generator=gen) for k in layers}, model_id="tiny", n_layers=N_LAYERS,
        method="mean_diff", **extra)


def _write_raw(path: Path, tensors: dict[str, torch.Tensor],
               manifest: dict[str, object] | str | None) -> Path:
    metadata = None
    if manifest is not None:
        metadata = {"steerlab": manifest if isinstance(manifest, str) else json.dumps(manifest)}
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def lm() -> steerlab.model.load.LoadedModel:
    return as_loaded(tiny_model("llama", n_layers=N_LAYERS, hidden=D), tiny_tokenizer())


# --- round trip ------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: Path) -> None:
    vec = _vec((0, 2, 3), resid_norms={"0": 1.5, "2": 3.0, "3": 4.0}, dataset={"name": "x"})
    actadd = SteeringVector.from_directions({1: torch.randn(3, D)}, method="actadd")
    for original in (vec, actadd):
        path = original.save(tmp_path / "sub" / "v.safetensors")
        loaded = SteeringVector.load(path)
        assert loaded.layers == original.layers
        for k in original.layers:
            assert torch.equal(loaded.directions[k], original.directions[k])
        assert loaded.manifest == json.loads(json.dumps(original.manifest))
    assert loaded.directions[1].shape == (3, D)


def test_file_layout_keys_and_manifest_metadata(tmp_path: Path) -> None:
    path = _vec((0, 3)).save(tmp_path / "v.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        assert sorted(fh.keys()) == ["layers.0", "layers.3"]
        meta = fh.metadata()
    assert set(meta) == {"steerlab"}
    manifest = json.loads(meta["steerlab"])
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["hidden_size"] == D
    assert manifest["n_layers"] == N_LAYERS
    assert manifest["site"] == "block_output"
    assert manifest["method"] == "mean_diff"
    assert set(manifest["layer_norms"]) == {"0", "3"}
    assert manifest["steerlab_version"] == steerlab.__version__


def test_saved_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = _vec().save(tmp_path / "v.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


# --- atomic write ------------------------------------------------------------------------------


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    _vec(seed=0).save(tmp_path / "v.safetensors")
    _vec(seed=1).save(tmp_path / "v.safetensors")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.safetensors"]
    assert torch.equal(SteeringVector.load(tmp_path / "v.safetensors").directions[1],
                       _vec(seed=1).directions[1])


def test_failing_save_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "v.safetensors"
    _vec(seed=0).save(target)
    before = target.read_bytes()

    def boom(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vector_mod, "save_file", boom)
    with pytest.raises(SteerlabError, match="cannot write vector: No space left"):
        _vec(seed=1).save(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.safetensors"]

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(vector_mod, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _vec(seed=1).save(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.safetensors"]


def test_save_when_temp_file_cannot_be_created(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # what an unwritable directory looks like to save(), also when the tests run as root
    target = tmp_path / "v.safetensors"
    _vec(seed=0).save(target)
    before = target.read_bytes()

    def denied(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(vector_mod, "save_file", denied)
    with pytest.raises(SteerlabError, match="cannot write vector: Permission denied") as exc:
        _vec(seed=1).save(target)
    assert "\n" not in str(exc.value)
    assert target.read_bytes() == before
    assert not list(tmp_path.glob(".v.safetensors.*")), "temp file left behind"


def test_a_killed_save_leaves_a_stale_temp_that_the_next_save_removes(tmp_path: Path) -> None:
    import subprocess
    import sys

    target = tmp_path / "v.safetensors"
    _vec(seed=0).save(target)
    # a writer killed between writing its temp file and the rename: a dead pid in the name
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".v.safetensors.{dead}.0badf00d.steerlab-tmp"
    stale.write_bytes(b"half a vector")
    assert SteeringVector.load(target).layers  # the target itself is intact
    _vec(seed=1).save(target)
    assert not stale.exists(), "stale temp file not cleaned up"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.safetensors"]


def test_save_below_a_file_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SteerlabError, match="cannot write vector"):
        _vec().save(tmp_path / "afile" / "v.safetensors")


def test_unserialisable_manifest_is_one_line_error(tmp_path: Path) -> None:
    vec = _vec(extra_obj=object())
    with pytest.raises(SteerlabError, match="not JSON-serialisable"):
        vec.save(tmp_path / "v.safetensors")
    assert list(tmp_path.iterdir()) == []


# --- algebra -----------------------------------------------------------------------------------


def test_algebra() -> None:
    a, b = _vec((1, 2), seed=0), _vec((2, 3), seed=1)
    s = a + b
    assert s.layers == [1, 2, 3]
    assert torch.allclose(s.directions[1], a.directions[1])
    assert torch.allclose(s.directions[2], a.directions[2] + b.directions[2])
    assert torch.allclose(s.directions[3], b.directions[3])
    diff = a - b
    assert torch.allclose(diff.directions[2], a.directions[2] - b.directions[2])
    assert torch.allclose(diff.directions[3], -b.directions[3])
    assert diff.method == "combination"
    assert torch.allclose((2.5 * a).directions[1], 2.5 * a.directions[1])
    assert torch.allclose((a * -3).directions[2], -3 * a.directions[2])
    assert torch.allclose((-a).directions[1], -a.directions[1])
    assert (2 * a).manifest["layer_norms"]["1"] == pytest.approx(
        2 * float(a.directions[1].norm()), rel=1e-6)
    # operands are not modified
    assert torch.equal(a.directions[1], _vec((1, 2), seed=0).directions[1])


def test_normalized_and_select() -> None:
    a = _vec((0, 1, 2))
    n = a.normalized()
    for k in n.layers:
        assert n.directions[k].norm().item() == pytest.approx(1.0, abs=1e-6)
        assert cosine(n.directions[k], a.directions[k]) == pytest.approx(1.0, abs=1e-6)
    zero = SteeringVector.from_directions({0: torch.zeros(4)}).normalized()
    assert torch.equal(zero.directions[0], torch.zeros(4))
    rows = SteeringVector.from_directions({0: torch.randn(3, 4)}).normalized()
    assert torch.allclose(rows.directions[0].norm(dim=-1), torch.ones(3), atol=1e-6)
    s = a.select([2, 0])
    assert s.layers == [0, 2]
    assert torch.equal(s.directions[2], a.directions[2])
    with pytest.raises(SteerlabError, match=r"no layer\(s\) \[7\]"):
        a.select([7])


def test_algebra_errors() -> None:
    a = _vec((1,))
    with pytest.raises(SteerlabError, match="width"):
        a + _vec((1,), d=D + 1)
    with pytest.raises(SteerlabError, match="sites"):
        a + SteeringVector.from_directions({1: torch.ones(D)}, site="block_input")
    with pytest.raises(SteerlabError, match="cannot combine shapes"):
        SteeringVector.from_directions({1: torch.ones(3, D)}) + \
            SteeringVector.from_directions({1: torch.ones(2, D)})
    with pytest.raises(TypeError):
        a * a  # type: ignore[operator]
    with pytest.raises(TypeError):
        a + 1  # type: ignore[operator]


def test_combination_keeps_resid_norms_of_both() -> None:
    a = _vec((1,), resid_norms={"1": 2.0})
    b = _vec((3,), seed=1, resid_norms={"3": 5.0})
    s = a + b
    assert s.resid_norm(1) == 2.0 and s.resid_norm(3) == 5.0


def test_coefficient_for_strength() -> None:
    v = SteeringVector.from_directions({0: torch.full((4,), 0.5), 1: torch.ones(4)},
                                       resid_norms={"0": 10.0})
    # |v0| = 1, so strength 0.5 of a residual norm of 10 is coefficient 5
    assert v.coefficient_for_strength(0, 0.5) == pytest.approx(5.0)
    added = v.coefficient_for_strength(0, 0.3) * v.directions[0]
    assert added.norm().item() == pytest.approx(0.3 * 10.0, rel=1e-6)
    with pytest.raises(SteerlabError, match="no residual-norm calibration for layer 1"):
        v.coefficient_for_strength(1, 1.0)
    with pytest.raises(SteerlabError, match="no layer 5"):
        v.coefficient_for_strength(5, 1.0)
    zero = SteeringVector.from_directions({0: torch.zeros(4)}, resid_norms={"0": 1.0})
    with pytest.raises(SteerlabError, match="zero vector"):
        zero.coefficient_for_strength(0, 1.0)


def test_constructor_rejects_bad_tensors() -> None:
    with pytest.raises(SteerlabError, match="at least one layer"):
        SteeringVector({}, {})
    with pytest.raises(SteerlabError, match="NaN or inf"):
        SteeringVector.from_directions({0: torch.tensor([1.0, float("inf")])})
    with pytest.raises(SteerlabError, match="different widths"):
        SteeringVector.from_directions({0: torch.ones(3), 1: torch.ones(4)})
    with pytest.raises(SteerlabError, match="unknown site"):
        SteeringVector.from_directions({0: torch.ones(3)}, site="attn")


# --- load errors -------------------------------------------------------------------------------


def _assert_one_line(exc: pytest.ExceptionInfo[SteerlabError], path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(SteerlabError, match="not found") as exc:
        SteeringVector.load(path)
    _assert_one_line(exc, path)


def test_load_not_safetensors(tmp_path: Path) -> None:
    for name, data in (("junk.safetensors", b"this is not a safetensors file at all"),
                       ("empty.safetensors", b""),
                       ("pickle.pt", b"\x80\x04\x95\x00")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(SteerlabError, match="not a safetensors file") as exc:
            SteeringVector.load(path)
        _assert_one_line(exc, path)


def test_load_manifest_errors(tmp_path: Path) -> None:
    good = {"format_version": 1, "site": "block_output", "n_layers": 4}
    cases: list[tuple[str, dict[str, torch.Tensor], dict[str, object] | str | None, str]] = [
        ("nomanifest", {"layers.0": torch.ones(D)}, None, "no steerlab manifest"),
        ("badjson", {"layers.0": torch.ones(D)}, "{not json", "manifest is not valid JSON"),
        ("notobj", {"layers.0": torch.ones(D)}, "[1, 2]", "expected a JSON object, got list"),
        ("badkey", {"layer_0": torch.ones(D)}, good, "unexpected tensor key 'layer_0'"),
        ("negkey", {"layers.-1": torch.ones(D)}, good, "unexpected tensor key 'layers.-1'"),
        ("dupkey", {"layers.1": torch.ones(D), "layers.01": torch.ones(D)}, good,
         "layer 1 stored twice"),
        ("nan", {"layers.0": torch.tensor([1.0, float("nan")])}, good, "layer 0: .*NaN"),
        ("ndim", {"layers.0": torch.ones(2, 2, 2)}, good, "expected a \\[d\\] or \\[n_pos, d\\]"),
        ("future", {"layers.0": torch.ones(D)}, {**good, "format_version": 99}, "newer"),
        ("badsite", {"layers.0": torch.ones(D)}, {**good, "site": "mlp"}, "unknown site 'mlp'"),
        ("badn", {"layers.0": torch.ones(D)}, {**good, "n_layers": "four"}, "n_layers"),
    ]
    for name, tensors, manifest, pattern in cases:
        path = _write_raw(tmp_path / f"{name}.safetensors", tensors, manifest)
        with pytest.raises(SteerlabError, match=pattern) as exc:
            SteeringVector.load(path)
        _assert_one_line(exc, path)


def test_load_checks_model(tmp_path: Path, lm: steerlab.model.load.LoadedModel) -> None:
    ok = _vec((0, 3)).save(tmp_path / "ok.safetensors")
    assert SteeringVector.load(ok, model=lm).layers == [0, 3]
    assert SteeringVector.load(ok, model=lm.model).layers == [0, 3]  # bare HF model too

    wide = _vec((1,), d=D * 2).save(tmp_path / "wide.safetensors")
    with pytest.raises(SteerlabError, match=f"hidden size {2 * D} does not match .*{D}") as exc:
        SteeringVector.load(wide, model=lm)
    _assert_one_line(exc, wide)

    deep = SteeringVector.from_directions({7: torch.ones(D)}).save(tmp_path / "deep.safetensors")
    with pytest.raises(SteerlabError, match=r"layer\(s\) \[7\] out of range .* 4 layers") as exc:
        SteeringVector.load(deep, model=lm)
    _assert_one_line(exc, deep)

    other = SteeringVector.from_directions({1: torch.ones(D)}, n_layers=30).save(
        tmp_path / "other.safetensors")
    with pytest.raises(SteerlabError, match="made for a model with 30 layers") as exc:
        SteeringVector.load(other, model=lm)
    _assert_one_line(exc, other)


# --- no pickle anywhere -----------------------------------------------------------------------


def test_no_pickle_in_steerlab() -> None:
    root = Path(steerlab.__file__).parent
    pattern = re.compile(r"torch\.load\b|\bimport pickle\b|\bpickle\.load|\bimport dill\b|"
                         r"weights_only\s*=\s*False")
    offenders = [f"{p.relative_to(root)}:{i}" for p in sorted(root.rglob("*.py"))
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []


# --- calibration -------------------------------------------------------------------------------


def test_resid_norm_keys_are_strings_before_and_after_save(tmp_path: Path) -> None:
    vec = SteeringVector.from_directions({0: torch.ones(4)}, resid_norms={0: 8.0})
    assert vec.resid_norm(0) == 8.0
    assert SteeringVector.load(vec.save(tmp_path / "v.safetensors")).resid_norm(0) == 8.0


def test_calibrate_measures_residual_norms(lm: steerlab.model.load.LoadedModel) -> None:
    vec = SteeringVector.from_directions({1: torch.ones(D), 3: torch.ones(D)}, n_layers=N_LAYERS)
    with pytest.raises(SteerlabError, match="no residual-norm calibration"):
        vec.coefficient_for_strength(1, 1.0)
    texts = ["The weather today is sunny and warm.", "Once upon a time"]
    assert steerlab.calibrate(vec, lm, texts) is vec
    tok = lm.tokenizer
    with torch.inference_mode():
        hs = [lm.model(torch.tensor([tok(t)["input_ids"]]), output_hidden_states=True)
              .hidden_states for t in texts]
    expected = torch.cat([h[2][0, 1:].norm(dim=-1) for h in hs]).mean()  # block 1 output
    assert vec.resid_norm(1) == pytest.approx(float(expected), rel=1e-5)
    assert vec.resid_norm(3) is not None and vec.resid_norm(3) > 0
    assert vec.coefficient_for_strength(1, 0.5) == pytest.approx(
        0.5 * float(expected) / D**0.5, rel=1e-5)
    with pytest.raises(SteerlabError, match="at least 2 tokens"):
        steerlab.calibrate(vec, lm, ["a"])
    with pytest.raises(SteerlabError, match="needs a tokenizer"):
        steerlab.calibrate(vec, lm.model, texts)
