"""repeng side of the PCA benchmark; runs inside ``bench/.venv-repeng`` (transformers < 5).

Started by ``bench/rows_repeng.py`` as a long-lived subprocess so that repeng and steerlab runs
can be interleaved while each keeps its model loaded. Protocol: one JSON command per stdin line,
one ``@@``-prefixed JSON answer per stdout line (everything else goes to stderr):

* start-up: ``argv = [model_dir, inputs.json]`` (``inputs.json``: ``texts`` interleaved
  positive, negative, ...; ``ids``: their token ids under steerlab; ``layers``) → ``{"ready":
  true, "retokenized_ok": n, "n_texts": m, "load_s": s}``
* ``{"cmd": "train", "n_pairs": n, "batch_size": b}`` → ``{"seconds": s}`` (only the
  ``ControlVector.train`` call is timed)
* ``{"cmd": "save", "path": p}`` → writes the last directions as JSON ``{layer: [floats]}``
* ``{"cmd": "quit"}``

The model is loaded from steerlab's safetensors cache through a patched copy of its config files:
transformers 5 records ``tokenizer_class: TokenizersBackend`` (unknown to transformers 4) and
``rope_parameters`` (transformers 4 would silently fall back to ``rope_theta = 10000``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from repeng import ControlVector, DatasetEntry
from transformers import AutoModelForCausalLM, AutoTokenizer


def patched_copy(model_dir: Path, out: Path) -> Path:
    """Symlink the model files into ``out`` with configs readable by transformers 4."""
    for item in model_dir.iterdir():
        if item.name not in ("config.json", "tokenizer_config.json"):
            (out / item.name).symlink_to(item)
    config = json.loads((model_dir / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    (out / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    if tok_config.get("tokenizer_class") == "TokenizersBackend":
        tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return out


def answer(payload: dict[str, Any]) -> None:
    print("@@" + json.dumps(payload), flush=True)


def serve(model: Any, tokenizer: Any, dataset: list[Any], layers: list[int]) -> None:
    """Answer train/save commands until quit."""
    directions: dict[int, Any] = {}
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "train":
            subset = dataset[: command["n_pairs"]]
            start = time.perf_counter()
            vector = ControlVector.train(model, tokenizer, subset, method="pca_diff",
                                         batch_size=command["batch_size"],
                                         hidden_layers=layers)
            seconds = time.perf_counter() - start
            directions = vector.directions
            answer({"seconds": seconds})
        elif command["cmd"] == "save":
            Path(command["path"]).write_text(json.dumps(
                {str(k): v.tolist() for k, v in directions.items()}))
            answer({"saved": command["path"]})
        else:
            answer({"bye": True})
            return


def main() -> None:
    model_dir, inputs_path = Path(sys.argv[1]), Path(sys.argv[2])
    inputs = json.loads(inputs_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        directory = patched_copy(model_dir, Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        model = AutoModelForCausalLM.from_pretrained(str(directory), torch_dtype=torch.float32)
        model.eval()
        load_s = time.perf_counter() - start
        texts, ids = inputs["texts"], inputs["ids"]
        same = sum(tokenizer(t)["input_ids"] == list(i) for t, i in zip(texts, ids, strict=True))
        dataset = [DatasetEntry(positive=texts[i], negative=texts[i + 1])
                   for i in range(0, len(texts), 2)]
        answer({"ready": True, "retokenized_ok": same, "n_texts": len(texts), "load_s": load_s,
                "threads": torch.get_num_threads(),
                "rope_theta": float(getattr(model.config, "rope_theta", 0.0))})
        serve(model, tokenizer, dataset, inputs["layers"])


if __name__ == "__main__":
    main()
