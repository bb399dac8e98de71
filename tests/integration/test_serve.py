"""The server for real: uvicorn on 127.0.0.1 (a free port, started and stopped here), the
``openai`` Python client, SmolLM2-135M and vectors extracted from the built-in optimism pairs.

Checks: non-streaming and streaming replies; a steered reply differs and equals steerlab's own
steered generation, the same request unsteered (no field, or ``steering: null``) equals the
unsteered model; 32 concurrent clients with 4 different vectors, several strengths and
positions, some unsteered, each get exactly what they get alone (the count of contaminated
replies is printed and must be 0); auth (401); every bad request → 400 with OpenAI's error
shape; a streaming client that disconnects frees its row and does not stall the others.
Requests are short (at most 10 new tokens except the disconnect test) and every call has a
timeout, so the file runs in about two minutes on two cores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch

import steerlab
from steerlab.model.load import LoadedModel
from steerlab.model.prompts import prompt_ids
from steerlab.scoring.generate import generate_ids
from steerlab.serve import background
from steerlab.serve.app import ServerConfig, create_app
from steerlab.serve.registry import VectorRegistry
from steerlab.steering.spec import SteeringSpec
from steerlab.util.io import sha256_file
from steerlab.vector import SteeringVector

pytestmark = pytest.mark.integration

KEY = "sk-test-steerlab"
MODEL = "smollm2-135m"
TIMEOUT = 120.0
NEW = 10  # new tokens per request in the comparisons
PROMPTS = (
    "Describe Mondays.",
    "What do you think about rain?",
    "My team lost the match yesterday. What now?",
    "Describe what the next ten years could look like.",
    "I am starting a new job tomorrow.",
    "Tell me about getting older.",
    "How was your day?",
    "What is the point of homework?",
)


@dataclass
class Served:
    url: str
    app: Any
    vectors: dict[str, Path]
    specs: dict[str, SteeringVector]

    def client(self, key: str | None = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or "none",
                             timeout=TIMEOUT, max_retries=0)

    @property
    def scheduler(self) -> Any:
        return self.app.state.server.scheduler


@pytest.fixture(scope="module")
def vectors(smollm2: LoadedModel, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, SteeringVector]:
    """Four different vectors: optimism (layers 8, 10, 12), its opposite, a random direction
    with optimism's calibration, and their normalised sum."""
    train = steerlab.load_dataset("builtin:optimism_pairs", split="train").subset(48, 0)
    optimism = steerlab.extract(smollm2, train, layers=[8, 10, 12], progress=False)
    torch.manual_seed(0)
    noise = SteeringVector({k: torch.randn(smollm2.hidden_size) * v.norm() / 24
                            for k, v in optimism.directions.items()}, optimism.manifest)
    return {"optimism": optimism, "pessimism": -optimism, "noise": noise,
            "mixed": SteeringVector({k: optimism.directions[k] + noise.directions[k]
                                     for k in optimism.layers}, optimism.manifest)}


@pytest.fixture(scope="module")
def served(smollm2: LoadedModel, vectors: dict[str, SteeringVector],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("vectors")
    paths = {name: vec.save(folder / f"{name}.safetensors") for name, vec in vectors.items()}
    registry = VectorRegistry.from_paths(paths, smollm2)
    config = ServerConfig(model_name=MODEL, api_key=KEY, max_batch=16, max_queue=64,
                          max_tokens=256, max_prompt_tokens=200, batch_wait_s=0.05)
    app = create_app(smollm2, registry, config)
    with background(app) as url:
        yield Served(url, app, paths, vectors)
    assert not app.state.server.scheduler.running, "the server did not stop"


def _chat(client: openai.OpenAI, prompt: str, steering: Any = "absent",
          max_tokens: int = NEW, **extra: Any) -> str:
    body = {} if steering == "absent" else {"steering": steering}
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        temperature=0, extra_body={**body, **extra})
    return r.choices[0].message.content or ""


def _reference(lm: LoadedModel, prompt: str, specs: list[SteeringSpec] | None = None,
               max_tokens: int = NEW) -> str:
    """What steerlab's own generation loop gives for the same chat prompt."""
    ids, instr = prompt_ids(lm.tokenizer, prompt)
    out = generate_ids(lm, [ids], row_steering=[specs or []], instruction_lengths=[instr],
                       max_new_tokens=max_tokens)[0]
    return str(lm.tokenizer.decode(out, skip_special_tokens=True))


OPT = {"vectors": [{"name": "optimism", "layers": [10], "strength": 0.3}]}


def test_models_and_vectors(served: Served) -> None:
    client = served.client()
    assert [m.id for m in client.models.list().data] == [MODEL]
    listed = httpx.get(f"{served.url}/v1/steering/vectors", timeout=30,
                       headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    assert {v["name"]: v["sha256"] for v in listed} == \
        {name: sha256_file(path) for name, path in served.vectors.items()}
    assert all(v["hidden_size"] == 576 and v["layers"] == [8, 10, 12] for v in listed)


def test_unsteered_equals_the_model_and_steering_changes_it(served: Served,
                                                            smollm2: LoadedModel) -> None:
    client = served.client()
    prompt = PROMPTS[0]
    plain = _reference(smollm2, prompt)
    assert _chat(client, prompt) == plain
    assert _chat(client, prompt, None) == plain
    steered = _chat(client, prompt, OPT)
    assert steered != plain
    spec = SteeringSpec(served.specs["optimism"], layers=[10], strength=0.3)
    assert steered == _reference(smollm2, prompt, [spec])
    xargs = _chat(client, prompt, vllm_xargs={"steering": json.dumps(OPT)})
    assert xargs == steered


def test_streaming_equals_non_streaming(served: Served) -> None:
    client = served.client()
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=NEW,
        temperature=0, stream=True, stream_options={"include_usage": True},
        extra_body={"steering": OPT})
    parts, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    full = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=NEW,
        temperature=0, extra_body={"steering": OPT})
    assert "".join(parts) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]
    # the wire format itself: SSE lines, ending with data: [DONE]
    with httpx.stream("POST", f"{served.url}/v1/completions", timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": MODEL, "prompt": "The weather today", "max_tokens": 4,
                            "temperature": 0, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(x.startswith("data: {") for x in lines[:-1])


def _mixes() -> list[tuple[str, Any]]:
    """32 (prompt, steering) requests: 4 vectors, several strengths/positions, some None."""
    configs: list[Any] = [
        None,
        {"vectors": [{"name": "optimism", "layers": [10], "strength": 0.3}]},
        {"vectors": [{"name": "pessimism", "layers": [8, 12], "strength": 0.2,
                      "positions": "generation"}]},
        {"vectors": [{"name": "noise", "layers": [10], "strength": 0.4}]},
        {"vectors": [{"name": "mixed", "layers": "12", "strength": 0.25,
                      "positions": "after_instruction"}]},
        {"vectors": [{"name": "optimism", "layers": [8], "strength": -0.2},
                     {"name": "noise", "layers": [12], "coefficient": 1.5}]},
        None,
        {"vectors": [{"name": "optimism", "layers": [10], "strength": 0.5}]},
    ]
    return [(PROMPTS[i % len(PROMPTS)], configs[(i + i // len(PROMPTS)) % len(configs)])
            for i in range(32)]


def test_32_concurrent_clients_each_get_what_they_get_alone(served: Served) -> None:
    client = served.client()
    requests = _mixes()
    assert sum(s is None for _, s in requests) >= 6
    assert len({json.dumps(s) for _, s in requests}) == 7  # None twice
    alone = [_chat(client, prompt, steering) for prompt, steering in requests]
    before = served.scheduler.stats()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        together = list(pool.map(lambda r: _chat(served.client(), *r), requests))
    seconds = time.perf_counter() - started
    after = served.scheduler.stats()
    contaminated = sum(a != b for a, b in zip(alone, together, strict=True))
    print(f"\n[serve] 32 concurrent clients: {contaminated} contaminated of 32; "
          f"{after['batches'] - before['batches']} batches, at most {after['max_live']} rows "
          f"at once, {seconds:.1f} s")
    assert contaminated == 0
    assert after["max_live"] >= 8, "the concurrent requests were not batched"
    # steering did act: each steered reply differs from the same prompt unsteered
    plain = {p: a for (p, s), a in zip(requests, alone, strict=True) if s is None}
    differs = [a != plain[p] for (p, s), a in zip(requests, alone, strict=True)
               if s is not None and p in plain]
    assert sum(differs) >= len(differs) * 3 // 4


def test_missing_or_wrong_key_is_401(served: Served) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        served.client("wrong").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert info.value.status_code == 401
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = httpx.post(f"{served.url}/v1/chat/completions", headers=headers, timeout=30,
                       json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{served.url}/v1/models", timeout=30).status_code == 401


BAD: list[tuple[dict[str, Any], str]] = [
    ({"steering": {"vectors": [{"name": "joy", "strength": 0.3}]}}, "unknown vector 'joy'"),
    ({"steering": {"vectors": [{"name": "optimism", "layers": [30], "strength": 0.3}]}},
     "out of range"),
    ({"steering": {"vectors": [{"name": "optimism", "layers": [11], "strength": 0.3}]}},
     "no direction for layer"),
    ({"steering": {"vectors": [{"name": "optimism", "strength": 0.3, "coefficient": 2}]}},
     "not both"),
    ({"steering": {"vectors": [{"name": "optimism", "positions": "middle"}]}}, "positions"),
    ({"vllm_xargs": {"steering": "{not json"}}, "not valid JSON"),
    ({"max_tokens": 1000}, "at most 256"),
    ({"messages": [{"role": "user", "content": "word " * 400}]}, "at most 200"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 2}, "top_p"),
    ({"n": 100}, "at most 16"),
]


@pytest.mark.parametrize(("change", "needle"), BAD)
def test_bad_requests_are_400_with_the_error_shape(served: Served, change: dict[str, Any],
                                                   needle: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            **change}
    with pytest.raises(openai.BadRequestError) as info:
        served.client().chat.completions.create(**{k: body.pop(k) for k in
                                                   ("model", "messages")}, extra_body=body)
    error = info.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and needle in error["message"]


def test_bad_json_is_400(served: Served) -> None:
    r = httpx.post(f"{served.url}/v1/chat/completions", content=b'{"model": ', timeout=30,
                   headers={"Authorization": f"Bearer {KEY}",
                            "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_invalid"


def test_a_disconnecting_stream_frees_its_row_and_does_not_stall_others(
        served: Served) -> None:
    client = served.client()
    requests = _mixes()[:4]
    alone = [_chat(client, p, s) for p, s in requests]
    before = served.scheduler.stats()
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPTS[3]}],
            "max_tokens": 250, "temperature": 0, "stream": True, "ignore_eos": True}
    with ThreadPoolExecutor(max_workers=4) as pool:
        with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body,
                          timeout=TIMEOUT, headers={"Authorization": f"Bearer {KEY}"}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]  # a few chunks, then hang up
            others = [pool.submit(_chat, served.client(), p, s) for p, s in requests]
        assert any('"content"' in x for x in got)
        together = [f.result(timeout=TIMEOUT) for f in others]
    assert together == alone
    deadline = time.monotonic() + 30
    while served.scheduler.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    after = served.scheduler.stats()
    assert after["running"] == 0
    assert after["finished_cancelled"] == before["finished_cancelled"] + 1


def test_a_client_that_hangs_up_on_a_non_streamed_request_frees_its_row(
        served: Served) -> None:
    before = served.scheduler.stats()["finished_cancelled"]
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPTS[2]}],
            "max_tokens": 250, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{served.url}/v1/chat/completions", json=body,
                   headers={"Authorization": f"Bearer {KEY}"},
                   timeout=httpx.Timeout(30, read=1.5))
    deadline = time.monotonic() + 30
    while served.scheduler.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served.scheduler.stats()["running"] == 0
    assert served.scheduler.stats()["finished_cancelled"] == before + 1
