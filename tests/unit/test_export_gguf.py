"""llama.cpp control vector GGUFs: round trips, refusals, foreign files, the cvec buffer layout.

Everything here runs on tiny random models and small files written in the test (no llama.cpp:
tests/integration/test_llamacpp.py runs the files in real llama.cpp).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import steerlab
from steerlab.errors import SteerlabError
from steerlab.export import from_gguf, read_control_vector, to_gguf
from steerlab.export.gguf import control_directions, model_hint_for
from steerlab.export.llamacpp import cvec_buffer, dequantize_gguf, load_control_vectors
from steerlab.testing.tiny import tiny_model
from steerlab.vector import SteeringVector

D = 64  # tiny_model's hidden size
N_LAYERS = 4


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("llama", n_layers=N_LAYERS, hidden=D)


def make_vector(layers: tuple[int, ...] = (1, 2, 3), site: str = "block_output",
                seed: int = 0) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    dirs = {k: torch.randn(D, generator=gen) for k in layers}
    return SteeringVector.from_directions(
        dirs, site=site, model_id="smollm2-135m", n_layers=N_LAYERS, method="mean_diff",
        resid_norms={str(k): 10.0 + k for k in layers}, dataset={"name": "t", "n_pairs": 3})


def write_foreign(path: Path, tensors: dict[str, np.ndarray], *, layer_count_int32: bool = False,
                  hint: str = "llama", arch: str = "controlvector") -> Path:
    """A control vector written with gguf-py the way repeng (uint32 layer_count) or
    llama.cpp's cvector-generator (int32 layer_count) write theirs."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string(f"{arch}.model_hint", hint)
    if layer_count_int32:
        writer.add_int32(f"{arch}.layer_count", len(tensors))
    else:
        writer.add_uint32(f"{arch}.layer_count", len(tensors))
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def logits(model: torch.nn.Module, vec: SteeringVector | None = None, **kw: object
           ) -> torch.Tensor:
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.inference_mode():
        if vec is None:
            return model(ids).logits
        with steerlab.steer(model, vec, **kw):  # type: ignore[arg-type]
            return model(ids).logits


# ---- writing -----------------------------------------------------------------------------------

def test_file_is_llamacpp_format(tmp_path: Path) -> None:
    vec = make_vector()
    out = to_gguf(vec, tmp_path / "v.gguf", coefficient=2.0)
    reader = gguf.GGUFReader(str(out.path))

    def field(key: str) -> object:
        f = reader.get_field(key)
        assert f is not None, key
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(f.parts[f.data[0]]).decode()
        return f.parts[f.data[0]][0]

    assert field("general.architecture") == "controlvector"
    assert field("controlvector.model_hint") == "llama"  # smollm2-135m's llama.cpp arch
    assert field("controlvector.layer_count") == 3
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.2", "direction.3"]
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(d) for d in t.shape] == [D]
    manifest = json.loads(str(field("steerlab.manifest")))
    assert manifest["method"] == "mean_diff" and manifest["model_id"] == "smollm2-135m"
    assert field("steerlab.version") == steerlab.__version__
    assert len(str(field("steerlab.source_sha256"))) == 64
    scale = json.loads(str(field("steerlab.scale")))
    assert scale["mode"] == "coefficient" and scale["coefficient"] == 2.0
    assert out.llama_args() == ["--control-vector", str(out.path)]
    assert os.fspath(out) == str(out.path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gguf"]  # no temp file left


def test_round_trip_coefficient(tmp_path: Path, model: torch.nn.Module) -> None:
    vec = make_vector()
    out = to_gguf(vec, tmp_path / "v.gguf", coefficient=-1.5, source_sha256="ab" * 32)
    back = from_gguf(out.path, model=model)
    assert back.layers == [1, 2, 3] and back.site == "block_output"
    for k in vec.layers:
        torch.testing.assert_close(back.directions[k], -1.5 * vec.directions[k])
    assert back.manifest["model_id"] == "smollm2-135m"
    assert back.manifest["dataset"] == {"name": "t", "n_pairs": 3}
    assert back.manifest["resid_norms"] == vec.manifest["resid_norms"]
    info = back.manifest["gguf"]
    assert info["origin"] == "steerlab" and info["source_sha256"] == "ab" * 32
    assert info["scale"]["coefficients"] == {"1": -1.5, "2": -1.5, "3": -1.5}
    # what the file adds at scale 1 is what steerlab adds with the coefficient
    torch.testing.assert_close(logits(model, back, coefficient=1.0),
                               logits(model, vec, coefficient=-1.5))


def test_round_trip_strength_keeps_calibration(tmp_path: Path, model: torch.nn.Module) -> None:
    vec = make_vector()
    out = to_gguf(vec, tmp_path / "v.gguf", layers="2-3", strength=0.3)
    assert out.layers == [2, 3]
    for k in (2, 3):
        assert out.coefficients[k] == pytest.approx(vec.coefficient_for_strength(k, 0.3))
    back = from_gguf(out)
    assert back.layers == [2, 3]
    for k in (2, 3):
        # baked norm = 0.3 × residual norm; and strength= still means the same on the import
        assert float(back.directions[k].norm()) == pytest.approx(0.3 * (10.0 + k), rel=1e-5)
        assert back.coefficient_for_strength(k, 0.3) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(logits(model, back, strength=0.2),
                               logits(model, vec, layers=[2, 3], strength=0.2))


def test_raw_and_spec_inputs(tmp_path: Path) -> None:
    vec = make_vector()
    raw = from_gguf(to_gguf(vec, tmp_path / "raw.gguf", layers=[3]))
    torch.testing.assert_close(raw.directions[3], vec.directions[3])
    spec = steerlab.SteeringSpec(vec, layers=[1, 2], coefficient=4.0)
    back = from_gguf(to_gguf(spec, tmp_path / "spec.gguf"))
    assert back.layers == [1, 2]
    torch.testing.assert_close(back.directions[2], 4.0 * vec.directions[2])


def test_unit_vectors_and_scale(tmp_path: Path) -> None:
    vec = make_vector(layers=(2,))
    out = to_gguf(vec, tmp_path / "u.gguf", coefficient=3.0, unit=True)
    expected = 3.0 * float(vec.directions[2].norm())
    assert out.unit and out.scale == pytest.approx(expected, rel=1e-6)
    assert out.llama_args() == ["--control-vector-scaled", f"{out.path}:{out.scale:.9g}"]
    back = from_gguf(out.path)
    assert float(back.directions[2].norm()) == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(back.directions[2] * out.scale, 3.0 * vec.directions[2])
    assert back.manifest["gguf"]["scale"]["scale"] == pytest.approx(expected)
    # no coefficient: unit directions, the user picks the scale
    assert to_gguf(make_vector(), tmp_path / "u2.gguf", unit=True).scale is None
    # layers needing different scales cannot share one --control-vector-scaled value
    with pytest.raises(SteerlabError, match="one scale for all layers"):
        to_gguf(make_vector(), tmp_path / "u3.gguf", strength=0.3, unit=True)


def test_block_input_shifts_by_one_when_asked(tmp_path: Path, model: torch.nn.Module) -> None:
    vec = make_vector(layers=(2, 3), site="block_input")
    with pytest.raises(SteerlabError, match=r"block outputs only.*shift"):
        to_gguf(vec, tmp_path / "bi.gguf", coefficient=2.0)
    out = to_gguf(vec, tmp_path / "bi.gguf", coefficient=2.0, shift_block_input=True)
    assert out.layers == [1, 2]
    back = from_gguf(out.path)
    assert back.site == "block_output" and back.layers == [1, 2]
    assert back.manifest["resid_norms"] == {"1": 12.0, "2": 13.0}  # moved with the vectors
    torch.testing.assert_close(logits(model, back, coefficient=1.0),
                               logits(model, vec, coefficient=2.0), rtol=1e-5, atol=1e-5)
    with pytest.raises(SteerlabError, match="block_input layer 1 is block_output layer 0"):
        to_gguf(make_vector(layers=(1,), site="block_input"), tmp_path / "x.gguf",
                shift_block_input=True)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"positions": "prompt"}, "cannot express positions='prompt'.*every token"),
    ({"positions": "window:0:3"}, "cannot express positions"),
    ({"operator": "ablate"}, "cannot express operator='ablate'.*only add"),
    ({"operator": "clamp"}, "cannot express operator='clamp'"),
    ({"preserve_norm": True}, "cannot express preserve_norm"),
    ({"coefficient": 1.0, "strength": 0.2}, "not both"),
    ({"coefficient": float("nan")}, "finite"),
    ({"layers": [0]}, "layer"),
    ({"layers": [7]}, "layer 7"),
])
def test_refusals(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SteerlabError, match=message) as err:
        to_gguf(make_vector(), tmp_path / "v.gguf", **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_refuses_layer_zero_and_position_resolved(tmp_path: Path) -> None:
    with pytest.raises(SteerlabError, match=r"layer 0: llama\.cpp never steers layer 0"):
        to_gguf(make_vector(layers=(0, 1)), tmp_path / "v.gguf")
    resolved = SteeringVector.from_directions({2: torch.ones(3, D)}, site="block_input",
                                              method="actadd")
    for shift in (False, True):
        with pytest.raises(SteerlabError, match="position-resolved"):
            to_gguf(resolved, tmp_path / "v.gguf", shift_block_input=shift)
    spec = steerlab.SteeringSpec(make_vector(), positions="generation")
    with pytest.raises(SteerlabError, match="positions='generation'"):
        control_directions(spec)
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_target_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    target = tmp_path / "v.gguf"
    to_gguf(make_vector(), target, coefficient=1.0)
    before = target.read_bytes()

    def boom(self: object, **_: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        to_gguf(make_vector(seed=1), target, coefficient=5.0)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.gguf"]


def test_export_checks_the_model(tmp_path: Path, model: torch.nn.Module) -> None:
    out = to_gguf(make_vector(), tmp_path / "v.gguf", model=model)
    assert out.model_hint == "llama"
    wide = SteeringVector.from_directions({1: torch.ones(2 * D)})
    with pytest.raises(SteerlabError, match="hidden size 128 does not match"):
        to_gguf(wide, tmp_path / "w.gguf", model=model)
    assert not (tmp_path / "w.gguf").exists()


def test_model_hint() -> None:
    assert model_hint_for(make_vector()) == "llama"
    assert model_hint_for(SteeringVector.from_directions({1: torch.ones(2)})) == "unknown"
    assert model_hint_for(SteeringVector.from_directions({1: torch.ones(2)}),
                          tiny_model("gemma3", n_layers=2)) == "gemma3"


# ---- reading foreign and broken files -----------------------------------------------------------

def test_repeng_style_file(tmp_path: Path, model: torch.nn.Module) -> None:
    rng = np.random.default_rng(0)
    dirs = {k: rng.standard_normal(D).astype(np.float32) for k in (1, 2, 3)}
    path = write_foreign(tmp_path / "repeng.gguf", {f"direction.{k}": v for k, v in dirs.items()},
                         hint="llama")
    vec = from_gguf(path, model=model)
    assert vec.layers == [1, 2, 3] and vec.site == "block_output"
    for k, v in dirs.items():
        np.testing.assert_array_equal(vec.directions[k].numpy(), v)
    info = vec.manifest["gguf"]
    assert info["origin"] == "other" and info["model_hint"] == "llama"
    assert info["layer_count"] == 3 and vec.manifest["method"] == "gguf_import"


def test_cvector_generator_style_file_shift(tmp_path: Path, model: torch.nn.Module) -> None:
    # cvector-generator reads block il's output and names the result direction.{il+1}
    rng = np.random.default_rng(1)
    read_at = {il: rng.standard_normal(D).astype(np.float32) for il in range(N_LAYERS - 1)}
    path = write_foreign(tmp_path / "cvec.gguf",
                         {f"direction.{il + 1}": v for il, v in read_at.items()},
                         layer_count_int32=True)
    as_named = from_gguf(path)
    assert as_named.layers == [1, 2, 3]
    vec = from_gguf(path, model=model, shift=-1)
    assert vec.layers == [0, 1, 2] and vec.manifest["gguf"]["shift"] == -1
    for il, v in read_at.items():
        np.testing.assert_array_equal(vec.directions[il].numpy(), v)
    with pytest.raises(SteerlabError, match="below 0"):
        from_gguf(path, shift=-2)
    with pytest.raises(SteerlabError, match=r"out of range"):
        from_gguf(path, model=model, shift=1)  # layer 4 of a 4-layer model


def test_wrong_hidden_size(tmp_path: Path, model: torch.nn.Module) -> None:
    path = write_foreign(tmp_path / "w.gguf", {"direction.1": np.ones(32, np.float32)})
    with pytest.raises(SteerlabError, match="hidden size 32 does not match"):
        from_gguf(path, model=model)


@pytest.mark.parametrize(("tensors", "message"), [
    ({"direction.1": np.ones(D, np.float16)}, "F16, not F32"),
    ({"direction.1": np.ones((2, D), np.float32)}, r"shape \[2, 64\], not 1-D"),
    ({"direction.0": np.ones(D, np.float32)}, "direction.0: llama.cpp never steers layer 0"),
    ({"direction.x": np.ones(D, np.float32)}, "expected 'direction.<k>'"),
    ({"weights.1": np.ones(D, np.float32)}, "expected 'direction.<k>'"),
    ({"direction.1": np.ones(D, np.float32), "direction.2": np.ones(8, np.float32)},
     "one size"),
    ({"direction.1": np.full(D, np.nan, np.float32)}, "NaN"),
])
def test_bad_tensors(tmp_path: Path, tensors: dict[str, np.ndarray], message: str) -> None:
    path = write_foreign(tmp_path / "bad.gguf", tensors)
    with pytest.raises(SteerlabError, match=message) as err:
        from_gguf(path)
    assert "\n" not in str(err.value)


def test_trailing_unit_dims_are_1d_like_llamacpp(tmp_path: Path) -> None:
    # ggml_n_dims ignores trailing 1s: ne = [64, 1] is a 1-D vector to llama.cpp
    path = write_foreign(tmp_path / "col.gguf", {"direction.2": np.ones((1, D), np.float32)})
    assert from_gguf(path).directions[2].shape == (D,)


def test_broken_files(tmp_path: Path) -> None:
    good = to_gguf(make_vector(), tmp_path / "good.gguf").path
    data = good.read_bytes()
    cases = {
        "truncated-data.gguf": data[:-100],
        "truncated-header.gguf": data[:60],
        "random.gguf": np.random.default_rng(0).bytes(4096),
        "empty.gguf": b"",
        "magic-only.gguf": b"GGUF",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(SteerlabError) as err:
            from_gguf(path)
        text = str(err.value)
        assert "\n" not in text and name in text
        assert any(w in text for w in ("truncated", "not a GGUF")), text
    with pytest.raises(SteerlabError, match="not found"):
        from_gguf(tmp_path / "missing.gguf")
    with pytest.raises(SteerlabError, match="no direction tensors"):
        from_gguf(write_foreign(tmp_path / "none.gguf", {}))
    with pytest.raises(SteerlabError, match="not a control vector"):
        from_gguf(write_foreign(tmp_path / "model.gguf", {"direction.1": np.ones(4, np.float32)},
                                arch="llama"))


def test_read_control_vector_keeps_file_numbering(tmp_path: Path) -> None:
    out = to_gguf(make_vector(layers=(2, 3), site="block_input"), tmp_path / "v.gguf",
                  coefficient=1.0, shift_block_input=True)
    cv = read_control_vector(out.path)
    assert list(cv.directions) == [1, 2] and cv.n_embd == D
    assert cv.fields["general.architecture"] == "controlvector"


# ---- the llama.cpp buffer, without llama.cpp -----------------------------------------------------

def test_cvec_buffer_layout() -> None:
    buf = cvec_buffer({1: np.full(4, 1.0), 3: torch.full((4,), 3.0)}, n_embd=4, n_layer=5)
    assert buf.dtype == np.float32 and buf.shape == (4 * 4,)
    rows = buf.reshape(4, 4)  # row i is layer i+1
    assert rows[:, 0].tolist() == [1.0, 0.0, 3.0, 0.0]
    with pytest.raises(SteerlabError, match="layer 0"):
        cvec_buffer({0: np.ones(4)}, 4, 5)
    with pytest.raises(SteerlabError, match="out of range"):
        cvec_buffer({5: np.ones(4)}, 4, 5)
    with pytest.raises(SteerlabError, match="n_embd is 4"):
        cvec_buffer({1: np.ones(3)}, 4, 5)


def test_load_control_vectors_sums_scaled_files(tmp_path: Path) -> None:
    a = write_foreign(tmp_path / "a.gguf", {"direction.1": np.ones(D, np.float32),
                                            "direction.2": np.ones(D, np.float32)})
    b = write_foreign(tmp_path / "b.gguf", {"direction.2": np.full(D, 2.0, np.float32)})
    total = load_control_vectors([a, (b, 0.5)], n_embd=D)
    assert sorted(total) == [1, 2]
    assert total[1][0] == 1.0 and total[2][0] == 2.0
    with pytest.raises(SteerlabError, match="n_embd is 8"):
        load_control_vectors([a], n_embd=8)


def test_dequantize_gguf(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 64)).astype(np.float32)
    src = tmp_path / "q.gguf"
    writer = gguf.GGUFWriter(str(src), "llama")
    writer.add_uint32("llama.block_count", 2)
    writer.add_string("general.name", "tiny")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_array("tokenizer.ggml.scores", [0.5, 0.25, 0.0])
    writer.add_file_type(3)  # MOSTLY_Q4_1
    q = gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.w", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("norm", np.arange(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    dst = dequantize_gguf(src, tmp_path / "f32.gguf")
    reader = gguf.GGUFReader(str(dst))
    tensors = {t.name: t for t in reader.tensors}
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in tensors.values())
    np.testing.assert_allclose(np.asarray(tensors["blk.0.w"].data), weight, atol=0.05)
    np.testing.assert_array_equal(np.asarray(tensors["norm"].data), np.arange(64))
    assert reader.get_field("tokenizer.ggml.tokens").contents() == ["a", "b", "c"]
    assert reader.get_field("tokenizer.ggml.scores").contents() == [0.5, 0.25, 0.0]
    assert reader.get_field("general.name").contents() == "tiny"
    assert reader.get_field("llama.block_count").contents() == 2
    assert reader.get_field("general.file_type").contents() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f32.gguf", "q.gguf"]
