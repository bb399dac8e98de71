"""Exported control vectors in real llama.cpp steer SmolLM2 the way steerlab's hook does.

The model: SmolLM2-135M's Q4_1 GGUF dequantised to F32 with gguf-py alone (cached), run by
llama-cpp-python with an F32 KV cache, against steerlab's cached fp32 HF model of the same
weights. The vector goes through the exported GGUF file (read back as llama.cpp's
``--control-vector`` loader reads it) into ``llama_set_adapter_cvec``.

Checks: unsteered logits agree (max |Δ| < 0.05); at each layer tried, the change in logits the
file causes in llama.cpp correlates >= 0.999 with the change steerlab's hook causes at the same
layer, and clearly less (< 0.99) when the hook is one layer off — so a numbering slip fails
the test; greedy generations with an optimism vector at ±0.3 move VADER sentiment the same way
in both engines. In CI a missing llama_cpp module or model fails instead of skipping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import steerlab
from steerlab.errors import SteerlabError
from steerlab.export import to_gguf
from steerlab.vector import SteeringVector
from tests.conftest import _missing

pytestmark = pytest.mark.integration

LAYERS = [5, 10, 20]
STRENGTH = 0.3
GEN_LAYER = 10
PROMPTS = (  # the demo's prompts
    "What do you think about Mondays?",
    "My team lost the match yesterday. What now?",
    "Describe what the next ten years could look like.",
    "I am starting a new job tomorrow.",
)
LOGIT_PROMPTS = ("What do you think about Mondays?", "Tell me about the weather in spring.")


@pytest.fixture(scope="module")
def cpp() -> Any:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        _missing("llama-cpp-python (make llamacpp)")
    from steerlab.export.llamacpp import LlamaCppModel, f32_gguf

    try:
        path = f32_gguf("smollm2-135m")
    except SteerlabError as exc:
        _missing(f"the SmolLM2 GGUF ({exc})")
    # one thread: on a busy 2-core machine llama.cpp's threads wait on each other at every
    # graph node (measured under load: 40 tokens in 4.7 s with 1 thread, 32 s with 2)
    model = LlamaCppModel(path, n_ctx=512, n_threads=1)
    yield model
    model.close()


@pytest.fixture(scope="module")
def optimism(smollm2: Any) -> SteeringVector:
    train = steerlab.load_dataset("builtin:optimism_pairs", split="train")
    return steerlab.extract(smollm2, train, layers=sorted({*LAYERS, GEN_LAYER}), progress=False)


@pytest.fixture(scope="module")
def prompt_ids(smollm2: Any, cpp: Any) -> list[list[int]]:
    return [cpp.chat_ids(smollm2.tokenizer, p) for p in LOGIT_PROMPTS]


def hf_logits(lm: Any, ids: list[list[int]], vec: SteeringVector | None = None,
              layer: int | None = None, coefficient: float = 1.0) -> np.ndarray:
    rows = []
    for seq in ids:
        with torch.inference_mode():
            if vec is None:
                out = lm.model(torch.tensor([seq])).logits[0]
            else:
                with steerlab.steer(lm, vec, layers=[layer], coefficient=coefficient,
                                    positions="all"):
                    out = lm.model(torch.tensor([seq])).logits[0]
        rows.append(out.float().numpy())
    return np.concatenate(rows)


def cpp_logits(cpp: Any, ids: list[list[int]]) -> np.ndarray:
    return np.concatenate([cpp.logits(seq) for seq in ids])


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def test_unsteered_logits_match(smollm2: Any, cpp: Any, prompt_ids: list[list[int]]) -> None:
    cpp.set_directions(None)
    delta = float(np.abs(cpp_logits(cpp, prompt_ids) - hf_logits(smollm2, prompt_ids)).max())
    print(f"\nunsteered llama.cpp (F32 GGUF) vs HF: max |Δ logit| = {delta:.2e}")
    assert delta < 0.05


def test_exported_vector_moves_logits_like_the_hook(smollm2: Any, cpp: Any, optimism: Any,
                                                    prompt_ids: list[list[int]],
                                                    tmp_path: Path) -> None:
    cpp.set_directions(None)
    base_cpp = cpp_logits(cpp, prompt_ids)
    base_hf = hf_logits(smollm2, prompt_ids)
    lines = []
    for k in LAYERS:
        out = to_gguf(optimism, tmp_path / f"opt{k}.gguf", layers=[k], strength=STRENGTH)
        c = out.coefficients[k]
        cpp.set_files([out.path])
        steered = cpp_logits(cpp, prompt_ids)
        d_cpp = steered - base_cpp
        hook = hf_logits(smollm2, prompt_ids, optimism, k, c)
        same = corr(d_cpp, hook - base_hf)
        gap = float(np.abs(steered - hook).max())
        off = {}
        for j in (k - 1, k + 1):
            moved = SteeringVector.from_directions({j: optimism.directions[k]})
            off[j] = corr(d_cpp, hf_logits(smollm2, prompt_ids, moved, j, c) - base_hf)
        lines.append(f"layer {k}: corr {same:.10f} (1 - corr = {1 - same:.1e}), "
                     f"max|Δ| vs hook {gap:.2e}, effect size max|Δ| "
                     f"{float(np.abs(d_cpp).max()):.2f}; one layer off: "
                     + ", ".join(f"{j}: {v:.3f}" for j, v in off.items()))
        assert same >= 0.999, lines[-1]
        assert gap < 0.05, lines[-1]
        assert all(v < 0.99 for v in off.values()), lines[-1]
        # the unit-vector file with the printed --control-vector-scaled value is the same
        unit = to_gguf(optimism, tmp_path / f"unit{k}.gguf", layers=[k], strength=STRENGTH,
                       unit=True)
        assert unit.scale is not None
        cpp.set_files([(unit.path, unit.scale)])
        np.testing.assert_allclose(cpp_logits(cpp, prompt_ids), steered, atol=1e-3)
    # all layers in one file: llama.cpp adds each after its block, like steerlab's hooks
    both = to_gguf(optimism, tmp_path / "all.gguf", layers=LAYERS, strength=STRENGTH)
    cpp.set_files([both.path])
    d_cpp = cpp_logits(cpp, prompt_ids) - base_cpp
    rows = []
    for seq in prompt_ids:
        with torch.inference_mode(), steerlab.steer(smollm2, optimism, layers=LAYERS,
                                                    strength=STRENGTH, positions="all"):
            rows.append(smollm2.model(torch.tensor([seq])).logits[0].float().numpy())
    together = corr(d_cpp, np.concatenate(rows) - base_hf)
    lines.append(f"layers {LAYERS} in one file: corr {together:.10f}")
    assert together >= 0.999, lines[-1]
    cpp.set_directions(None)
    print("\n" + "\n".join(lines))


def test_generation_shifts_the_same_way(smollm2: Any, cpp: Any, optimism: Any) -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    max_new = 40
    ids = [cpp.chat_ids(smollm2.tokenizer, p) for p in PROMPTS]
    scores: dict[str, dict[float, float]] = {"llama.cpp": {}, "steerlab": {}}
    same_text = 0
    for s in (-STRENGTH, 0.0, STRENGTH):
        spec = (steerlab.SteeringSpec(optimism, layers=[GEN_LAYER], strength=s) if s else None)
        hf_texts = steerlab.generate(smollm2, list(PROMPTS), spec, max_new_tokens=max_new,
                                     batch_size=len(PROMPTS))
        cpp.set_vector(spec)
        cpp_texts = [smollm2.tokenizer.decode(cpp.generate(seq, max_new),
                                              skip_special_tokens=True).strip() for seq in ids]
        same_text += sum(a == b for a, b in zip(hf_texts, cpp_texts, strict=True))
        for name, texts in (("llama.cpp", cpp_texts), ("steerlab", hf_texts)):
            scores[name][s] = float(np.mean([vader.polarity_scores(t)["compound"]
                                             for t in texts]))
    cpp.set_directions(None)
    shift = {name: v[STRENGTH] - v[-STRENGTH] for name, v in scores.items()}
    print("\nmean VADER compound at strength -0.3 / 0 / +0.3 (layer 10, greedy, 40 tokens):")
    for name, v in scores.items():
        print(f"  {name}: " + " / ".join(f"{v[s]:+.3f}" for s in sorted(v))
              + f"  shift {shift[name]:+.3f}")
    print(f"  identical texts llama.cpp vs steerlab: {same_text}/{3 * len(PROMPTS)}")
    assert shift["steerlab"] > 0, scores
    assert np.sign(shift["llama.cpp"]) == np.sign(shift["steerlab"]), scores
