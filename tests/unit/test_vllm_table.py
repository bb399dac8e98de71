"""The vLLM plugin's per-token maths, without vLLM: masks, the fused update, plans, the HTTP
rewrite. The same requests through steerlab's transformers-side terms are the oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from steerlab.errors import SteerlabError
from steerlab.scoring.generate import GenerationRow, Sampling
from steerlab.serve.registry import VectorRegistry
from steerlab.serve.vllm.batch import root_cause
from steerlab.serve.vllm.endpoint import SteeringFieldMiddleware, rewrite_body
from steerlab.serve.vllm.engine import VLLMBackend, steering_entry
from steerlab.serve.vllm.launch import server_command
from steerlab.serve.vllm.plugin import instruction_length, vector_paths
from steerlab.serve.vllm.table import (
    SteeringTable,
    TokenSpan,
    plan_request,
    steering_fingerprint,
)
from steerlab.steering.plan import PositionTracker, apply_terms, compile_terms
from steerlab.steering.spec import SteeringSpec
from steerlab.vector import SteeringVector

D = 8
N_LAYERS = 4


@pytest.fixture()
def registry() -> VectorRegistry:
    gen = torch.Generator().manual_seed(0)
    return VectorRegistry({
        name: SteeringVector.from_directions({k: torch.randn(D, generator=gen) for k in layers})
        for name, layers in {"a": [1, 2], "b": [2], "c": [1, 3]}.items()})


POSITIONS = ["all", "prompt", "generation", "after_instruction", "front", "last_prompt:2",
             "window:1:4", "window:3:"]


@pytest.mark.parametrize("positions", POSITIONS)
def test_masks_equal_the_position_tracker(registry: VectorRegistry, positions: str) -> None:
    plan = plan_request({"vectors": [{"name": "a", "layers": [1], "coefficient": 1.0,
                                      "positions": positions}]}, registry, N_LAYERS, D)
    (entry,) = plan.entries
    pos = np.arange(9)
    tracker = PositionTracker(prompt_lengths=[5], instruction_lengths=[3])
    tracker.set_call(torch.arange(9)[None], torch.ones(1, 9, dtype=torch.bool))
    expected = tracker.mask(positions, 1)[0].numpy()
    assert entry.mask(pos, prompt_length=5, instruction_length=3).tolist() == expected.tolist()


CASES = [
    {"vectors": [{"name": "a", "coefficient": 2.5}]},
    {"vectors": [{"name": "a", "layers": [2], "coefficient": -1.5, "positions": "generation"},
                 {"name": "b", "coefficient": 3.0, "positions": "prompt"}]},
    {"vectors": [{"name": "b", "operator": "ablate"},
                 {"name": "a", "layers": [2], "coefficient": 4.0}]},
    {"vectors": [{"name": "c", "operator": "clamp", "coefficient": 0.7,
                  "positions": "window:2:"}]},
    None,
]


def _reference(hidden: torch.Tensor, steering: dict | None, registry: VectorRegistry,
               layer: int, positions: np.ndarray, prompt: int) -> torch.Tensor:
    """One request's tokens through steerlab's own terms (a [1, T, d] batch)."""
    plan = plan_request(steering, registry, N_LAYERS, D)
    specs = [SteeringSpec(registry.get(v.name), layers=[layer] if layer in (
        registry.get(v.name).layers if v.layers is None else v.layers) else [],
        coefficient=v.coefficient, positions=v.positions, operator=v.operator)
        for v in plan.request.vectors]
    specs = [s for s in specs if s.layers]
    terms = compile_terms(specs, None, N_LAYERS).get(("block_output", layer), [])
    tracker = PositionTracker(prompt_lengths=[prompt], instruction_lengths=[prompt])
    tracker.set_call(torch.as_tensor(positions)[None], torch.ones(1, len(positions),
                                                                   dtype=torch.bool))
    return apply_terms(hidden[None], terms, tracker)[0]


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_flat_batch_update_equals_steerlab_terms(registry: VectorRegistry, layer: int) -> None:
    # five requests: prefill chunks and decode steps mixed in one flat batch, then padding
    spans_spec = [(0, 5, 0, 6), (5, 6, 7, 4), (6, 9, 3, 6), (9, 10, 12, 3), (10, 13, 0, 3)]
    positions = np.zeros(16, dtype=np.int64)
    for start, end, first, _ in spans_spec:
        positions[start:end] = np.arange(first, first + end - start)
    plans = [plan_request(c, registry, N_LAYERS, D) for c in CASES]
    spans = [TokenSpan(plan, s, e, prompt) for plan, (s, e, _, prompt)
             in zip(plans, spans_spec, strict=True)]
    table = SteeringTable(registry, layers=[1, 2, 3], max_tokens=32)
    table.fill([TokenSpan(plans[0], 0, 20, 3)], np.arange(32))  # stale rows must be cleared
    table.fill(spans, positions)
    gen = torch.Generator().manual_seed(1)
    hidden, residual = torch.randn(16, D, generator=gen), torch.randn(16, D, generator=gen)
    _, out = table.apply(table.index[layer], hidden, residual)
    assert out is not None
    full = hidden + out
    for case, (start, end, _, prompt) in zip(CASES, spans_spec, strict=True):
        expected = _reference(hidden[start:end] + residual[start:end], case, registry, layer,
                              positions[start:end], prompt)
        torch.testing.assert_close(full[start:end], expected, atol=1e-5, rtol=1e-5)
    # unsteered tokens (the last request and the padding) are bit-identical
    assert torch.equal(out[10:], residual[10:])


def test_layer_without_residual_gets_the_update_on_hidden(registry: VectorRegistry) -> None:
    plan = plan_request(CASES[0], registry, N_LAYERS, D)
    table = SteeringTable(registry, layers=[1], max_tokens=4)
    table.fill([TokenSpan(plan, 0, 2, 2)], np.arange(2))
    out, none = table.apply(0, torch.zeros(2, D), None)
    assert none is None
    torch.testing.assert_close(out[0], 2.5 * registry.get("a").directions[1])


@pytest.mark.parametrize(("steering", "message"), [
    ({"vectors": [{"name": "a", "preserve_norm": True}]}, "preserve_norm is not supported"),
    ({"vectors": [{"name": "a", "layers": [2], "coefficient": 1},
                  {"name": "b", "operator": "ablate"}]}, "listed before that layer's adds"),
    ({"vectors": [{"name": "b", "operator": "ablate"}, {"name": "a", "layers": [2],
                                                        "operator": "clamp"}]}, "at most one"),
    ({"vectors": [{"name": "zz"}]}, "unknown vector 'zz'"),
    ({"vectors": [{"name": "a", "layers": [7]}]}, "out of range"),
    ('{"vectors": [', "not valid JSON"),
])
def test_what_vllm_cannot_express_is_refused_in_one_line(registry, steering, message) -> None:
    with pytest.raises(SteerlabError, match=message) as info:
        plan_request(steering, registry, N_LAYERS, D)
    assert "\n" not in str(info.value)


def test_position_resolved_vectors_are_refused() -> None:
    reg = VectorRegistry({"pair": SteeringVector.from_directions({1: torch.ones(3, D)})})
    with pytest.raises(SteerlabError, match=r"position-resolved"):
        plan_request({"vectors": [{"name": "pair", "positions": "front"}]}, reg, N_LAYERS, D)


def test_fingerprint_covers_prompt_touching_steering_only(registry: VectorRegistry) -> None:
    def fp(steering: dict) -> str | None:
        return steering_fingerprint(plan_request(steering, registry, N_LAYERS, D), registry)

    base = {"vectors": [{"name": "a", "coefficient": 2.0}]}
    assert fp(base) == fp(json.loads(json.dumps(base)))
    assert fp(base) != fp({"vectors": [{"name": "a", "coefficient": 2.5}]})
    assert fp(base) != fp({"vectors": [{"name": "a", "coefficient": 2.0, "positions": "prompt"}]})
    assert fp({"vectors": [{"name": "a", "coefficient": 2.0, "positions": "generation"}]}) is None


def test_instruction_length_and_vector_paths() -> None:
    assert instruction_length([5, 6, 1, 2], [1, 2]) == 2
    assert instruction_length([5, 6, 1], [1, 2]) == 3
    assert vector_paths("") == []
    with pytest.raises(SteerlabError, match="NAME=PATH"):
        vector_paths("nopath")


def test_steering_field_is_rewritten_for_vllm() -> None:
    app = FastAPI()

    @app.post("/v1/completions")
    async def echo(request: Request) -> dict:
        return await request.json()

    app.add_middleware(SteeringFieldMiddleware)
    with TestClient(app) as client:
        got = client.post("/v1/completions", json={"prompt": "x", "steering": {
            "vectors": [{"name": "a", "coefficient": 1}]}}).json()
        assert json.loads(got["vllm_xargs"]["steering"]) == {"vectors": [
            {"name": "a", "coefficient": 1}]}
        assert "steering" not in got
        assert client.post("/v1/completions", json={"prompt": "x", "steering": None}).json() \
            == {"prompt": "x"}
        both = client.post("/v1/completions", json={
            "prompt": "x", "steering": {"vectors": []}, "vllm_xargs": {"steering": "{}"}})
        assert both.status_code == 400
        assert "not both" in both.json()["error"]["message"]
    assert rewrite_body(b"not json") == b"not json"


def test_server_command_allowlists_the_plugin(tmp_path, monkeypatch) -> None:
    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setenv("STEERLAB_VLLM_PYTHON", str(python))
    argv, env = server_command("/m", "m", {"a": "/v/a.safetensors"}, port=9000,
                               api_key="K", default_steering='{"vectors": []}')
    assert argv[0] == str(python) and "--api-key" in argv and argv[argv.index("--port") + 1] \
        == "9000"
    assert env["VLLM_PLUGINS"] == "steerlab"
    assert env["STEERLAB_VECTORS"] == "a=/v/a.safetensors"
    assert env["STEERLAB_DEFAULT_STEERING"] == '{"vectors": []}'


def test_backend_turns_rows_into_plugin_requests(registry: VectorRegistry) -> None:
    backend = VLLMBackend("some/hub-id")
    try:
        vec = registry.get("a")
        row = GenerationRow([5, 6, 7], 9, Sampling(temperature=0.7, top_k=5, seed=3),
                            [SteeringSpec(vec, layers=[1], strength=0.5, positions="prompt"),
                             SteeringSpec(vec, coefficient=2.0)], stop=frozenset({2}))
        req = backend.request(row)
        (first, second) = req["steering"]["vectors"]
        assert first["name"] == second["name"]  # one vector, saved once, content-named
        assert first == {"name": first["name"], "layers": [1], "strength": 0.5,
                         "positions": "prompt", "operator": "add"}
        assert second["coefficient"] == 2.0 and "layers" not in second
        assert req["stop_token_ids"] == [2] and req["ignore_eos"] is True
        assert (req["temperature"], req["top_k"], req["seed"]) == (0.7, 5, 3)
        assert backend.request(GenerationRow([1], 2))["steering"] is None
        # the saved file is the vector: a plan over it resolves like the original
        served = VectorRegistry.from_paths({first["name"]: backend._files[first["name"]]})
        torch.testing.assert_close(served.get(first["name"]).directions[1], vec.directions[1])
        assert not backend.serves(object())
    finally:
        backend.close()


def test_conditional_steering_is_refused_for_vllm(registry: VectorRegistry) -> None:
    from steerlab.steering.spec import Condition

    vec = registry.get("a")
    spec = SteeringSpec(vec, layers=[2], coefficient=1.0,
                        condition=Condition(vec, layer=1, threshold=0.0))
    with pytest.raises(SteerlabError, match="conditional"):
        steering_entry(spec, "x")


def test_root_cause_picks_the_error_lines() -> None:
    log = "INFO start\nERROR AssertionError: Not enough NUMA nodes\nRuntimeError: Engine core " \
          "initialization failed. See root cause above."
    assert root_cause(log) == "ERROR AssertionError: Not enough NUMA nodes"
    assert root_cause("a\nb") == "a | b"
