"""``load_model(..., device_map=...)`` (docs/SCALE.md): a single device and a hand-written
module → device map load the same weights, steer the same way, and serve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel, load_model
from steerlab.scoring.generate import generate_ids
from steerlab.serve.app import ServerConfig, create_app
from steerlab.serve.registry import VectorRegistry
from steerlab.steering.spec import SteeringSpec
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.vector import SteeringVector


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


HAND_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu",
            "lm_head": "cpu", **{f"model.layers.{i}": "cpu" for i in range(4)}}


@pytest.fixture(scope="module")
def vec() -> SteeringVector:
    torch.manual_seed(4)
    return SteeringVector.from_directions({1: torch.randn(64), 2: torch.randn(64)},
                                          resid_norms={"1": 8.0, "2": 8.0})


def _outputs(lm: LoadedModel, vec: SteeringVector) -> tuple[torch.Tensor, list[list[int]]]:
    ids = torch.tensor([lm.tokenizer("Tell me a story")["input_ids"]])
    with torch.inference_mode():
        logits = lm.model(ids.to(lm.device)).logits.cpu()
    prompts = [lm.tokenizer(t)["input_ids"] for t in ("Hello there", "The weather")]
    spec = SteeringSpec(vec, layers=[1, 2], strength=1.0)
    return logits, generate_ids(lm, prompts, spec, max_new_tokens=6)


@pytest.mark.parametrize("device_map", ["cpu", HAND_MAP])
def test_device_map_loads_the_same_model(model_dir: Path, vec: SteeringVector,
                                         device_map: str | dict[str, str]) -> None:
    plain = load_model(str(model_dir))
    placed = load_model(str(model_dir), device_map=device_map)
    assert all(p.device.type == "cpu" for p in placed.model.parameters())
    base_logits, base_steered = _outputs(plain, vec)
    logits, steered = _outputs(placed, vec)
    assert torch.equal(base_logits, logits)
    assert steered == base_steered


def test_a_placed_model_serves(model_dir: Path, vec: SteeringVector) -> None:
    lm = load_model(str(model_dir), device_map=HAND_MAP)
    app = create_app(lm, VectorRegistry({"v": vec}), ServerConfig(model_name="tiny"))
    with TestClient(app) as client:
        r = client.post("/v1/completions", json={
            "prompt": "Hello", "max_tokens": 3, "temperature": 0,
            "steering": {"vectors": [{"name": "v", "layers": [1], "strength": 1.0}]}})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("device_map", ["", 3, {1: "cpu"}])
def test_bad_device_maps_are_one_line_errors(model_dir: Path, device_map: object) -> None:
    with pytest.raises(SteerlabError, match="device_map must be"):
        load_model(str(model_dir), device_map=device_map)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_a_one_line_error(model_dir: Path) -> None:
    with pytest.raises(SteerlabError, match="cannot place model"):
        load_model(str(model_dir), device_map="cuda:0")
