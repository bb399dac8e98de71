"""Rows: a steerlab vector exported to a llama.cpp control vector, run in real llama.cpp.

(i) llama.cpp greedy generation with the exported control vector vs without it, on the
    original Q4_1 GGUF and on its F32 dequantisation (target: steered ≥ 0.97 × unsteered
    tokens/s);
(ii) llama.cpp steered (F32 and Q4_1 GGUF) vs steerlab's own steered HF generation
    (``steerlab.generate`` at batch 1): the same prompt and vector, 64 new tokens; ratio =
    steerlab seconds ÷ llama.cpp seconds (report: this is why a user exports).

llama.cpp runs with its defaults (F16 KV cache) and torch's thread count, so both engines get
the same cores; generation is forced to 64 tokens in llama.cpp; HF greedy stops at an
end-of-turn token, so the row counts what it made (the note says when it is fewer than 64). The
vector: an optimism mean-difference vector at layer 10, strength 0.3, through the exported
GGUF file. Needs llama-cpp-python (``make llamacpp``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import Record, record, timed

import steerlab
from steerlab.export import to_gguf
from steerlab.export.llamacpp import LlamaCppModel, f32_gguf
from steerlab.model.aliases import fetch_gguf

ALIAS = "smollm2-135m"
LAYER = 10
STRENGTH = 0.3
NEW_TOKENS = 64
PROMPT = "Write a short note about topic number 0."


def _correlation(lm: Any, vec: Any, model_path: Path, vector_path: Path,
                 ids: list[int]) -> float:
    """Δ-logit correlation of llama.cpp (its defaults) with steerlab's hook (informative)."""
    with LlamaCppModel(model_path, n_ctx=256, kv_f32=False) as cpp:
        base = cpp.logits(ids)
        cpp.set_files([vector_path])
        d_cpp = cpp.logits(ids) - base
    coef = vec.coefficient_for_strength(LAYER, STRENGTH)
    with torch.inference_mode():
        base_hf = lm.model(torch.tensor([ids])).logits[0].numpy()
        with steerlab.steer(lm, vec, layers=[LAYER], coefficient=coef, positions="all"):
            d_hf = lm.model(torch.tensor([ids])).logits[0].numpy() - base_hf
    return float(np.corrcoef(d_cpp.ravel(), d_hf.ravel())[0, 1])


def llamacpp_rows(lm: Any, runs: int) -> list[Record]:
    """Per GGUF (F32, Q4_1): steered vs unsteered llama.cpp, and steered llama.cpp vs steerlab.

    Each repeat times, in turn, every llama.cpp variant and then ``steerlab.generate``, after
    one warm-up call of each.
    """
    train = steerlab.load_dataset("builtin:optimism_pairs", split="train")
    vec = steerlab.extract(lm, train, layers=[LAYER], progress=False)
    spec = steerlab.SteeringSpec(vec, layers=[LAYER], strength=STRENGTH)
    ids = LlamaCppModel.chat_ids(lm.tokenizer, PROMPT)
    threads = torch.get_num_threads()
    files = {"F32": f32_gguf(ALIAS), "Q4_1": fetch_gguf(ALIAS)}

    def hf() -> list[str]:
        return steerlab.generate(lm, [PROMPT], spec, max_new_tokens=NEW_TOKENS, batch_size=1)

    with tempfile.TemporaryDirectory() as tmp:
        exported = to_gguf(spec, Path(tmp) / "optimism.gguf")
        models = {name: LlamaCppModel(path, n_ctx=512, logits_all=False, kv_f32=False,
                                      n_threads=threads) for name, path in files.items()}
        try:
            def run(name: str, steered: bool) -> None:
                cpp = models[name]
                if steered:
                    cpp.set_files([exported.path])
                else:
                    cpp.set_directions(None)
                cpp.generate(ids, NEW_TOKENS, stop=False)

            variants = [(name, on) for name in models for on in (True, False)]
            for name, on in variants:
                run(name, on)  # warm-up
            text = hf()[0]  # warm-up; HF greedy stops at end of turn: count what it made
            hf_tokens = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
            times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
            hf_s: list[float] = []
            for _ in range(runs):
                for name, on in variants:
                    times[(name, on)].append(timed(lambda n=name, o=on: run(n, o)))
                hf_s.append(timed(hf))
        finally:
            for cpp in models.values():
                cpp.close()
        corr = {name: _correlation(lm, vec, path, exported.path, ids)
                for name, path in files.items()}
    records: list[Record] = []
    for name in models:
        on, off = times[(name, True)], times[(name, False)]
        records.append(record(
            f"llama.cpp generation with the exported control vector vs without ({name} GGUF, "
            f"64 new tokens, batch 1)", on, "llama.cpp unsteered", off, 0.97,
            f"ratio = steered tokens/s ÷ unsteered tokens/s; steered "
            f"{NEW_TOKENS / float(np.median(on)):.0f} tok/s; layer {LAYER}, strength "
            f"{STRENGTH}; llama.cpp defaults (F16 KV), {threads} threads"))
    for name in models:
        on = times[(name, True)]
        short = ("" if hf_tokens >= NEW_TOKENS - 2 else  # re-encoding may merge a token
                 f"; HF greedy stopped after ~{hf_tokens} tokens (its time covers fewer)")
        records.append(record(
            f"llama.cpp steered ({name} GGUF) vs steerlab.generate steered, batch 1, "
            f"64 new tokens", on, "steerlab.generate (HF fp32, hook)", hf_s, 0.0,
            f"report: ratio = steerlab seconds ÷ llama.cpp seconds (why a user exports); "
            f"steerlab {min(hf_tokens, NEW_TOKENS) / float(np.median(hf_s)):.0f} tok/s, "
            f"llama.cpp {NEW_TOKENS / float(np.median(on)):.0f} tok/s; Δ-logit correlation "
            f"with steerlab's hook at these settings {corr[name]:.4f}{short}"))
    return records
