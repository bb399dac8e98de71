"""The OpenAI-compatible API on a tiny model (in-process client): shapes, streaming, steering
fields, defaults, auth, every bad request → 400 in OpenAI's error shape, 429, the CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.model.prompts import prompt_ids
from steerlab.scoring.generate import Decoder, GenerationRow
from steerlab.serve.app import ServerConfig, create_app
from steerlab.serve.registry import VectorRegistry
from steerlab.serve.steering import parse_steering
from steerlab.steering.spec import SteeringSpec
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.vector import SteeringVector

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "Tell me a story about a robot."}]


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return as_loaded(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def vec() -> SteeringVector:
    torch.manual_seed(2)
    return SteeringVector.from_directions({k: torch.randn(64) for k in range(4)},
                                          resid_norms={str(k): 8.0 for k in range(4)})


@pytest.fixture(scope="module")
def client(lm: LoadedModel, vec: SteeringVector) -> Iterator[TestClient]:
    registry = VectorRegistry({"opt": vec, "raw": SteeringVector.from_directions(
        {1: torch.randn(64)})})
    config = ServerConfig(model_name="tiny", api_key=KEY, max_tokens=32, max_prompt_tokens=64,
                          max_batch=8, batch_wait_s=0.0)
    with TestClient(create_app(lm, registry, config), headers=AUTH) as c:
        yield c


def _greedy(lm: LoadedModel, messages: Any, n: int, specs: list[SteeringSpec] | None = None,
            chat: bool = True) -> str:
    ids, instr = prompt_ids(lm.tokenizer, messages, chat=chat)
    with Decoder(lm, [GenerationRow(ids, n, steering=specs or [],
                                    instruction_length=instr)]) as decoder:
        while not decoder.finished:
            decoder.step()
        out = decoder.outputs[0]
    return str(lm.tokenizer.decode(out, skip_special_tokens=True))


def _chat(client: TestClient, **body: Any) -> Any:
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 8, "temperature": 0, **body}
    return client.post("/v1/chat/completions", json=body)


def _assert_error(response: Any, status: int, needle: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert needle in body["error"]["message"], body["error"]["message"]
    assert "\n" not in body["error"]["message"]
    return dict(body["error"])


STEER = {"vectors": [{"name": "opt", "layers": [1], "strength": 2.0}]}


def test_chat_completion_shape_and_greedy_text(client: TestClient, lm: LoadedModel) -> None:
    r = _chat(client)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and choice["index"] == 0
    assert choice["finish_reason"] in ("stop", "length")
    assert choice["message"]["content"] == _greedy(lm, HELLO, 8)
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(prompt_ids(lm.tokenizer, HELLO)[0])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["steering"] is None


def test_steering_changes_output_and_null_equals_unsteered(client: TestClient, lm: LoadedModel,
                                                           vec: SteeringVector) -> None:
    plain = _chat(client).json()["choices"][0]["message"]["content"]
    steered = _chat(client, steering=STEER).json()
    text = steered["choices"][0]["message"]["content"]
    assert text != plain
    assert text == _greedy(lm, HELLO, 8, [SteeringSpec(vec, layers=[1], strength=2.0)])
    assert steered["steering"] == STEER
    assert _chat(client, steering=None).json()["choices"][0]["message"]["content"] == plain
    assert _chat(client, steering={"vectors": []}).json()["choices"][0]["message"][
        "content"] == plain
    xargs = _chat(client, vllm_xargs={"steering": json.dumps(STEER)}).json()
    assert xargs["choices"][0]["message"]["content"] == text


def test_server_default_applies_only_without_a_field(client: TestClient) -> None:
    plain = _chat(client).json()["choices"][0]["message"]["content"]
    steered = _chat(client, steering=STEER).json()["choices"][0]["message"]["content"]
    assert client.get("/v1/steering").json() == {"vectors": []}
    try:
        assert client.put("/v1/steering", json=STEER).json() == STEER
        assert client.get("/v1/steering").json() == STEER
        default = _chat(client).json()
        assert default["choices"][0]["message"]["content"] == steered
        assert default["steering"] == STEER
        explicit = _chat(client, steering=None).json()
        assert explicit["choices"][0]["message"]["content"] == plain
        _assert_error(client.put("/v1/steering", json={"vectors": [{"name": "zzz"}]}), 400,
                      "unknown vector 'zzz'")
        _assert_error(client.put("/v1/steering", content=b"{nope"), 400, "not valid JSON")
        assert client.get("/v1/steering").json() == STEER  # a bad PUT changes nothing
    finally:
        client.put("/v1/steering", json={"vectors": []})
    assert _chat(client).json()["choices"][0]["message"]["content"] == plain


def _sse(client: TestClient, url: str, body: dict[str, Any]) -> list[str]:
    with client.stream("POST", url, json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return [line for line in r.iter_lines() if line]


def test_streaming_chat_equals_non_streaming(client: TestClient) -> None:
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 8, "temperature": 0,
            "steering": STEER}
    lines = _sse(client, "/v1/chat/completions", {**body, "stream": True,
                                                  "stream_options": {"include_usage": True}})
    assert lines[-1] == "data: [DONE]" and all(x.startswith("data: ") for x in lines)
    chunks = [json.loads(x[6:]) for x in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] in ("stop", "length") and all(f is None for f in finish[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1
    full = client.post("/v1/chat/completions", json=body).json()
    assert text == full["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == full["usage"]


def test_text_completions_plain_prompt_ids_and_lists(client: TestClient,
                                                     lm: LoadedModel) -> None:
    r = client.post("/v1/completions", json={"prompt": "The weather today is", "max_tokens": 6,
                                             "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == _greedy(lm, "The weather today is", 6, chat=False)
    ids = lm.tokenizer("The weather today is")["input_ids"]
    by_ids = client.post("/v1/completions", json={"prompt": ids, "max_tokens": 6,
                                                  "temperature": 0}).json()
    assert by_ids["choices"][0]["text"] == body["choices"][0]["text"]
    many = client.post("/v1/completions", json={"prompt": ["Hi", "The weather today is"],
                                                "max_tokens": 6, "temperature": 0}).json()
    assert [c["index"] for c in many["choices"]] == [0, 1]
    assert many["choices"][1]["text"] == body["choices"][0]["text"]
    lines = _sse(client, "/v1/completions", {"prompt": "The weather today is", "max_tokens": 6,
                                             "temperature": 0, "stream": True})
    chunks = [json.loads(x[6:]) for x in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == body["choices"][0]["text"]


def test_default_completion_budget_is_16_capped(client: TestClient) -> None:
    body = client.post("/v1/completions", json={"prompt": "Hi", "temperature": 0}).json()
    assert body["usage"]["completion_tokens"] <= 16


def test_stop_strings_cut_streamed_and_full_replies_alike(client: TestClient) -> None:
    full = client.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 16,
                                                "temperature": 0}).json()["choices"][0]["text"]
    assert len(full) >= 4
    stop = full[2:4]
    cut = client.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 16,
                                               "temperature": 0, "stop": [stop]}).json()
    choice = cut["choices"][0]
    assert choice["text"] == full[:full.index(stop)] and choice["finish_reason"] == "stop"
    lines = _sse(client, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 16,
                                             "temperature": 0, "stop": stop, "stream": True})
    chunks = [json.loads(x[6:]) for x in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]


def test_n_choices_are_seeded_and_distinct_indices(client: TestClient) -> None:
    body = {"messages": HELLO, "max_tokens": 6, "temperature": 1.0, "seed": 3, "n": 3}
    first = _chat(client, **body).json()
    again = _chat(client, **body).json()
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in first["choices"]] == \
        [c["message"]["content"] for c in again["choices"]]


def test_models_vectors_health(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny"
    assert models["data"][0]["steering_vectors"] == ["opt", "raw"]
    vectors = client.get("/v1/steering/vectors").json()["data"]
    assert [v["name"] for v in vectors] == ["opt", "raw"]
    assert vectors[0]["layers"] == [0, 1, 2, 3] and vectors[0]["hidden_size"] == 64
    assert set(vectors[0]) >= {"name", "layers", "hidden_size", "sha256"}
    assert client.get("/health", headers={"Authorization": ""}).json()["status"] == "ok"


@pytest.mark.parametrize("headers", [{"Authorization": ""}, {"Authorization": "Bearer nope"},
                                     {"Authorization": f"Basic {KEY}"},
                                     {"Authorization": KEY}])
@pytest.mark.parametrize("route", ["/v1/models", "/v1/chat/completions", "/v1/steering"])
def test_missing_or_wrong_key_is_401(client: TestClient, headers: dict[str, str],
                                     route: str) -> None:
    method = client.get if route != "/v1/chat/completions" else client.post
    r = method(route, headers=headers) if method is client.get else \
        client.post(route, headers=headers, content=b"{bad json")
    err = _assert_error(r, 401, "API key")
    assert err["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"


BAD_CHAT: list[tuple[dict[str, Any], str]] = [
    ({"steering": {"vectors": [{"name": "nope", "strength": 1}]}}, "unknown vector 'nope'"),
    ({"steering": {"vectors": [{"name": "opt", "layers": [40], "strength": 1}]}}, "out of range"),
    ({"steering": {"vectors": [{"name": "opt", "strength": 1, "coefficient": 1}]}}, "not both"),
    ({"steering": {"vectors": [{"name": "raw", "strength": 1}]}}, "calibration"),
    ({"steering": {"vectors": [{"name": "opt", "strength": 1, "positions": "x"}]}},
     "bad positions"),
    ({"steering": {"vectors": [{"name": "opt", "operator": "mul"}]}}, "unknown operator"),
    ({"steering": {"vectors": [{"name": "opt", "strenght": 1}]}}, "Extra inputs"),
    ({"steering": "optimism"}, "steering"),
    ({"vllm_xargs": {"steering": "{not json"}}, "vllm_xargs.steering: not valid JSON"),
    ({"vllm_xargs": {"steering": json.dumps(STEER)}, "steering": STEER}, "not both"),
    ({"max_tokens": 33}, "at most 32"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": None, "max_completion_tokens": 1000}, "at most 32"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, "differ"),
    ({"messages": [{"role": "user", "content": "word " * 200}]}, "at most 64"),
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -5}, "top_k"),
    ({"temperature": "hot"}, "temperature"),
    ({"n": 0}, "n"),
    ({"n": 9}, "at most 8"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user", "content": 5}]}, "content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "only text parts"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "last message"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4 stop"),
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"logit_bias": {"5": 3}}, "logit_bias"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"stream_options": {"include_usage": True}}, "stream_options needs stream"),
]


@pytest.mark.parametrize(("change", "needle"), BAD_CHAT)
def test_bad_chat_requests_are_400(client: TestClient, change: dict[str, Any],
                                   needle: str) -> None:
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 4, **change}
    err = _assert_error(client.post("/v1/chat/completions", json=body), 400, needle)
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "needle"), [
    (b"{bad json", "not valid JSON"),
    (b"", "body"),
    (b"[1, 2]", "body"),
    (b'{"messages": "hi"}', "messages"),
    (b'{"model": "tiny"}', "messages: Field required"),
])
def test_bad_json_bodies_are_400(client: TestClient, body: bytes, needle: str) -> None:
    r = client.post("/v1/chat/completions", content=body,
                    headers={**AUTH, "Content-Type": "application/json"})
    _assert_error(r, 400, needle)


@pytest.mark.parametrize(("change", "needle"), [
    ({"prompt": ""}, "empty"),
    ({"prompt": []}, "empty"),
    ({"prompt": [10_000]}, "out of range"),
    ({"prompt": [[]]}, "no tokens"),
    ({"prompt": 5}, "prompt"),
    ({"echo": True}, "echo"),
    ({"best_of": 2}, "best_of"),
    ({"logprobs": 2}, "logprobs"),
    ({"suffix": "x"}, "suffix"),
    ({"prompt": ["a"] * 9}, "at most 8"),
])
def test_bad_completion_requests_are_400(client: TestClient, change: dict[str, Any],
                                         needle: str) -> None:
    body = {"prompt": "Hello", "max_tokens": 4, **change}
    _assert_error(client.post("/v1/completions", json=body), 400, needle)


def test_unknown_model_is_404_and_unknown_route_is_error_shaped(client: TestClient) -> None:
    assert _assert_error(_chat(client, model="gpt-4"), 404, "not served")["code"] == \
        "model_not_found"
    _assert_error(client.get("/v1/nothing"), 404)
    _assert_error(client.get("/v1/chat/completions"), 405)


def test_unknown_openai_fields_are_ignored(client: TestClient) -> None:
    r = _chat(client, user="someone", metadata={"a": "b"}, store=False, presence_penalty=0)
    assert r.status_code == 200, r.text


def test_full_queue_is_429(lm: LoadedModel) -> None:
    config = ServerConfig(model_name="tiny", max_batch=1, max_queue=0, max_cohorts=1,
                          batch_wait_s=0.0, max_tokens=10_000)
    app = create_app(lm, None, config)
    with TestClient(app) as c:
        server = app.state.server
        started = threading.Event()
        ids = lm.tokenizer("Hello")["input_ids"]
        busy = server.scheduler.submit(GenerationRow(ids, 10_000, stop=frozenset()),
                                       sink=lambda e: started.set())
        assert started.wait(30)
        r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        err = _assert_error(r, 429, "busy")
        assert err["type"] == "rate_limit_error" and r.headers["retry-after"] == "1"
        server.scheduler.cancel(busy)
        assert busy.wait(timeout=30).finish_reason == "cancelled"  # its row is free again
        assert c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code \
            == 200


def test_bad_default_steering_is_refused_at_start(lm: LoadedModel) -> None:
    with pytest.raises(SteerlabError, match="unknown vector 'zzz'"):
        create_app(lm, None, ServerConfig(model_name="x", default_steering=parse_steering(
            {"vectors": [{"name": "zzz"}]})))
    with pytest.raises(SteerlabError, match="max_batch"):
        ServerConfig(model_name="x", max_batch=0)


# ---- the command -------------------------------------------------------------------------------
def _cli(monkeypatch: pytest.MonkeyPatch, lm: LoadedModel, args: list[str]) -> Any:
    import typer
    from typer.testing import CliRunner

    import steerlab.model.load
    import steerlab.serve
    from steerlab.cli import serve as serve_cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(steerlab.model.load, "load_model",
                        lambda name, device_map=None: seen.update(model=name, dm=device_map)
                        or lm)
    monkeypatch.setattr(steerlab.serve, "run", lambda app, **kw: seen.update(app=app, **kw))
    app = typer.Typer()
    app.command()(serve_cli.command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["command", *args])
    return result, seen


def test_cli_builds_the_server(monkeypatch: pytest.MonkeyPatch, lm: LoadedModel,
                               vec: SteeringVector, tmp_path: Path) -> None:
    path = vec.save(tmp_path / "opt.safetensors")
    steering = json.dumps({"vectors": [{"name": "opt", "layers": [1], "strength": 0.5}]})
    result, seen = _cli(monkeypatch, lm, ["--model", "tiny-model", "--vector", f"opt={path}",
                                          "--port", "8123", "--api-key", "k", "--max-batch",
                                          "4", "--default-steering", steering,
                                          "--device-map", '{"model": "cpu"}'])
    assert result.exit_code == 0, result.output
    assert seen["model"] == "tiny-model" and seen["dm"] == {"model": "cpu"}
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    with TestClient(seen["app"]) as c:
        assert c.get("/v1/models").status_code == 401
        headers = {"Authorization": "Bearer k"}
        assert c.get("/v1/steering", headers=headers).json()["vectors"][0]["strength"] == 0.5
        assert c.get("/v1/models", headers=headers).json()["data"][0]["id"] == "tiny-model"


@pytest.mark.parametrize(("args", "needle"), [
    (["--vector", "opt"], "expected NAME=PATH"),
    (["--vector", "opt=/nonexistent.safetensors"], "file not found"),
    (["--default-steering", "{bad"], "not valid JSON"),
    (["--default-steering", '{"vectors": [{"name": "zzz"}]}'], "not given with --vector"),
    (["--port", "0"], "--port"),
    (["--device-map", "{bad"], "--device-map"),
])
def test_cli_refuses_bad_options_before_loading(monkeypatch: pytest.MonkeyPatch,
                                                lm: LoadedModel, args: list[str],
                                                needle: str) -> None:
    result, seen = _cli(monkeypatch, lm, args)
    assert isinstance(result.exception, SteerlabError) and needle in str(result.exception)
    assert "model" not in seen
