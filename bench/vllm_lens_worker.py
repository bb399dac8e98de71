"""Runs one vllm-lens job in the vLLM venv (``bench/rows_vllm.py`` starts it; never imported).

vllm-lens (UK AISI, MIT) is the peer plugin the steerlab plugin is compared with: installed with
``--no-deps --ignore-requires-python`` into ``bench/.vllm-lens`` (it declares Python >= 3.12 and
the CUDA vllm) and put on ``PYTHONPATH`` for this process only, so it never loads in the
project's own vLLM runs. The job is the same as ``steerlab.serve.vllm.batch``'s, except each
request's steering is ``{"vector": PATH, "layer": L, "coefficient": C}`` and becomes a
``vllm_lens.SteeringVector`` (added to the layer output at every position).

Example:
    $ PYTHONPATH=bench/.vllm-lens .venv-vllm/bin/python bench/vllm_lens_worker.py JOB OUT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    job = json.loads(Path(sys.argv[1]).read_text())
    import vllm
    from vllm import LLM, SamplingParams
    from vllm_lens import SteeringVector as LensVector

    from steerlab.vector import SteeringVector

    started = time.perf_counter()
    llm = LLM(job["model"], dtype="float32", max_model_len=1024, seed=0,
              **job.get("engine", {}))
    ready = time.perf_counter()
    cache: dict[str, SteeringVector] = {}

    def params(request: dict) -> SamplingParams:
        extra = None
        lens = request.get("lens")
        if lens:
            vec = cache.setdefault(lens["vector"], SteeringVector.load(lens["vector"]))
            direction = vec.directions[lens["layer"]].float()[None]
            extra = {"apply_steering_vectors": [LensVector(
                activations=direction, layer_indices=[lens["layer"]],
                scale=float(lens["coefficient"]))]}
        return SamplingParams(max_tokens=request["max_tokens"], temperature=0.0,
                              ignore_eos=True, extra_args=extra)

    phases, seconds = [], []
    for phase in job["phases"]:
        prompts = [{"prompt_token_ids": r["prompt_token_ids"]} for r in phase]
        t0 = time.perf_counter()
        results = llm.generate(prompts, [params(r) for r in phase], use_tqdm=False)
        seconds.append(time.perf_counter() - t0)
        phases.append([{"token_ids": list(r.outputs[0].token_ids)} for r in results])
    Path(sys.argv[2]).write_text(json.dumps({
        "phases": phases, "seconds": seconds, "engine_start_s": ready - started,
        "vllm_version": vllm.__version__}))
