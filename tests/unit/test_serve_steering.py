"""The server's ``steering`` field and named vectors: schema, parsing, resolution, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.serve.registry import VectorRegistry, check_name, parse_vector_option
from steerlab.serve.steering import (
    UNSTEERED,
    SteeringRequest,
    parse_steering,
    parse_steering_json,
    resolve_steering,
)
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.util.io import sha256_file
from steerlab.vector import SteeringVector

N_LAYERS = 4


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return as_loaded(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def registry() -> VectorRegistry:
    torch.manual_seed(0)
    calibrated = SteeringVector.from_directions({k: torch.randn(64) for k in range(4)},
                                                resid_norms={str(k): 8.0 for k in range(4)})
    raw = SteeringVector.from_directions({1: torch.randn(64)})
    return VectorRegistry({"opt": calibrated, "raw": raw})


def test_parse_and_resolve_a_full_entry(registry: VectorRegistry) -> None:
    req = parse_steering({"vectors": [
        {"name": "opt", "layers": "1-2", "strength": 0.5, "positions": "generation"},
        {"name": "raw", "layers": [1], "coefficient": -2, "operator": "add"}]})
    specs = resolve_steering(req, registry, N_LAYERS, 64)
    assert [s.layers for s in specs] == [[1, 2], [1]]
    assert specs[0].strength == 0.5 and specs[0].positions == "generation"
    assert specs[1].coefficient == -2.0 and specs[1].vector is registry.get("raw")
    assert specs[0].operand(1) == pytest.approx(
        registry.get("opt").coefficient_for_strength(1, 0.5))


def test_default_layers_are_the_vectors_and_negative_layers_resolve(
        registry: VectorRegistry) -> None:
    specs = resolve_steering(parse_steering({"vectors": [{"name": "opt", "coefficient": 1}]}),
                             registry, N_LAYERS)
    assert specs[0].layers == [0, 1, 2, 3]
    specs = resolve_steering(parse_steering({"vectors": [{"name": "opt", "layers": -1,
                                                          "coefficient": 1}]}),
                             registry, N_LAYERS)
    assert specs[0].layers == [3]


@pytest.mark.parametrize("value", [None, {"vectors": []}, {}])
def test_null_and_empty_mean_unsteered(value: object, registry: VectorRegistry) -> None:
    assert resolve_steering(parse_steering(value), registry, N_LAYERS) == []


@pytest.mark.parametrize(("entry", "needle"), [
    ({"name": "nope", "coefficient": 1}, "unknown vector 'nope'; this server has: opt, raw"),
    ({"name": "opt", "layers": [7], "coefficient": 1}, "out of range"),
    ({"name": "raw", "layers": [2], "coefficient": 1}, "no direction for layer"),
    ({"name": "opt", "strength": 0.3, "coefficient": 1}, "not both"),
    ({"name": "raw", "strength": 0.3}, "no residual-norm calibration"),
    ({"name": "opt", "positions": "middle", "coefficient": 1}, "bad positions"),
    ({"name": "opt", "operator": "multiply", "coefficient": 1}, "unknown operator"),
    ({"name": "opt", "operator": "ablate", "strength": 1}, "ablate takes coefficient"),
    ({"name": "opt", "layers": "banana", "coefficient": 1}, "invalid layer"),
])
def test_bad_entries_are_one_line_errors(entry: dict[str, object], needle: str,
                                         registry: VectorRegistry) -> None:
    with pytest.raises(SteerlabError, match=r"steering\.vectors\.0") as info:
        resolve_steering(parse_steering({"vectors": [entry]}), registry, N_LAYERS, 64)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("value", "needle"), [
    ({"vectors": [{"name": "opt", "strenght": 0.3}]}, "strenght: Extra inputs"),
    ({"vectors": [{"layers": [1]}]}, "vectors.0.name: Field required"),
    ({"vectors": "opt"}, "vectors: Input should be a valid list"),
    ("opt", "steering: Input should be"),
    ({"vectors": [{"name": "opt", "strength": "lots"}]}, "strength: Input should be"),
    ({"vectors": [{"name": "opt", "coefficient": float("nan")}]}, "finite"),
    ({"vectors": [{"name": "opt", "preserve_norm": "yes"}]}, "preserve_norm"),
    ({"vectors": [{"name": "opt", "layers": [True]}]}, "layers"),
    ({"vectors": [{"name": "opt"}] * 17}, "at most 16"),
])
def test_schema_refusals(value: object, needle: str, registry: VectorRegistry) -> None:
    with pytest.raises(SteerlabError) as info:
        resolve_steering(parse_steering(value), registry, N_LAYERS, 64)
    assert needle in str(info.value)


def test_json_string_form_as_vllm_xargs_sends_it() -> None:
    text = '{"vectors": [{"name": "opt", "layers": [1], "strength": 0.3}]}'
    assert parse_steering_json(text).vectors[0].strength == 0.3
    assert parse_steering_json("null") == UNSTEERED
    with pytest.raises(SteerlabError, match=r"vllm_xargs\.steering: not valid JSON"):
        parse_steering_json("{'vectors': []}", "vllm_xargs.steering")
    with pytest.raises(SteerlabError, match="expected a JSON string"):
        parse_steering_json(3, "vllm_xargs.steering")  # type: ignore[arg-type]


def test_public_form_round_trips() -> None:
    req = parse_steering({"vectors": [{"name": "opt", "layers": [1], "strength": 0.3,
                                       "positions": "generation"}]})
    assert req.public() == {"vectors": [{"name": "opt", "layers": [1], "strength": 0.3,
                                         "positions": "generation"}]}
    assert SteeringRequest.model_validate(req.public()) == req


def test_wrong_width_is_refused(registry: VectorRegistry) -> None:
    with pytest.raises(SteerlabError, match="hidden size 64 does not match the model's 32"):
        resolve_steering(parse_steering({"vectors": [{"name": "opt", "coefficient": 1}]}),
                         registry, N_LAYERS, 32)


def test_registry_loads_files_checks_the_model_and_lists_sha(tmp_path: Path,
                                                             lm: LoadedModel) -> None:
    path = SteeringVector.from_directions({2: torch.ones(64)},
                                          resid_norms={"2": 3.0}).save(tmp_path / "v.safetensors")
    reg = VectorRegistry.from_paths({"v": path}, lm)
    (entry,) = reg.describe()
    assert entry["name"] == "v" and entry["layers"] == [2] and entry["hidden_size"] == 64
    assert entry["sha256"] == sha256_file(path) and entry["calibrated_layers"] == [2]
    wide = SteeringVector.from_directions({1: torch.ones(32)}).save(tmp_path / "w.safetensors")
    with pytest.raises(SteerlabError, match="hidden size 32 does not match"):
        VectorRegistry.from_paths({"w": wide}, lm)
    with pytest.raises(SteerlabError, match="vector file not found"):
        VectorRegistry.from_paths({"x": tmp_path / "missing.safetensors"}, lm)
    with pytest.raises(SteerlabError, match="given twice"):
        VectorRegistry.from_paths([("v", path), ("v", path)], lm)


def test_vector_options_and_names() -> None:
    assert parse_vector_option(" syc = a/b.safetensors ") == ("syc", Path("a/b.safetensors"))
    for bad in ("syc", "=x.safetensors", "syc=", "../x=y.safetensors", "a b=c"):
        with pytest.raises(SteerlabError):
            parse_vector_option(bad)
    with pytest.raises(SteerlabError, match="bad vector name"):
        check_name("x" * 65)
