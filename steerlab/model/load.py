"""Load Hugging Face decoder models by id, local directory, ``.gguf`` file or built-in alias.

Example:
    >>> lm = load_model("smollm2-135m")            # doctest: +SKIP
    >>> lm.n_layers, lm.hidden_size                # doctest: +SKIP
    (30, 576)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from steerlab.errors import SteerlabError
from steerlab.model.aliases import ALIASES, DEFAULT_MODEL, alias_dir, is_pulled, load_gguf, pull
from steerlab.model.arch import find_blocks
from steerlab.util.io import sha256_file

__all__ = ["DEFAULT_MODEL", "LoadedModel", "as_loaded", "load_model"]


@dataclass
class LoadedModel:
    """A model with its tokenizer and where it came from. Pass it anywhere steerlab wants a model.

    Example:
        >>> lm = load_model("smollm2-135m")            # doctest: +SKIP
        >>> lm.model_id                                # doctest: +SKIP
        'smollm2-135m'
    """

    model: PreTrainedModel
    tokenizer: Any
    model_id: str
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(find_blocks(self.model)[1])

    @property
    def hidden_size(self) -> int:
        size = getattr(self.model.config, "hidden_size", None)
        if size is None:
            size = self.model.get_input_embeddings().weight.shape[1]  # type: ignore[index]
        return int(size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def pad_id(self) -> int:
        """The id padded batches use: the tokenizer's pad token, else its EOS, else 0."""
        tok = self.tokenizer
        for value in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
            if value is not None:
                return int(value)
        return 0

    @property
    def stop_ids(self) -> frozenset[int]:
        """Token ids that end a generation: the generation config's and the tokenizer's EOS."""
        ids: set[int] = set()
        config = getattr(self.model, "generation_config", None)
        for value in (getattr(config, "eos_token_id", None),
                      getattr(self.tokenizer, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return frozenset(ids)


def _finish(model: PreTrainedModel, tokenizer: Any, model_id: str,
            revision: str | None) -> LoadedModel:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, revision=revision)


def load_model(name: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32,
               pull_missing: bool = True) -> LoadedModel:
    """Load a decoder LM: built-in alias, ``.gguf`` path, local directory or Hugging Face id.

    Aliases are pulled and cached on first use (``pull_missing=False`` raises instead).

    Example:
        >>> lm = load_model("smollm2-135m")            # doctest: +SKIP
        >>> lm.tokenizer("hi").input_ids               # doctest: +SKIP
    """
    path = Path(name).expanduser()
    if name in ALIASES:
        if not is_pulled(name):
            if not pull_missing:
                raise SteerlabError(
                    f"model {name!r} is not cached; run: steerlab models pull {name}")
            pull(name)
        directory = alias_dir(name)
        source = json.loads((directory / "steerlab_source.json").read_text())
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype)
        tok = AutoTokenizer.from_pretrained(str(directory))
        return _finish(model, tok, name, source.get("gguf_sha256"))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SteerlabError(f"{path}: GGUF file not found")
        model, tok = load_gguf(path, dtype)
        return _finish(model, tok, str(path), sha256_file(path))
    if path.is_dir():
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        tok = AutoTokenizer.from_pretrained(str(path))
        return _finish(model, tok, str(path), None)
    if path.is_absolute() or name.startswith((".", "~")) or path.exists():
        raise SteerlabError(f"{path}: model directory not found"
                            if not path.exists() else f"{path}: not a model directory or .gguf")
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ("" if "/" in name else
                f" (not a built-in alias: {', '.join(ALIASES)}; nor a local directory)")
        raise SteerlabError(f"cannot load model {name!r}{hint}: {first}") from None
    return _finish(model, tok, name, getattr(model.config, "_commit_hash", None))


def as_loaded(model_or_lm: LoadedModel | PreTrainedModel, tokenizer: Any = None) -> LoadedModel:
    """Wrap a bare HF model (and optional tokenizer) so every API accepts either.

    Example:
        >>> as_loaded(lm) is lm                        # doctest: +SKIP
        True
    """
    if isinstance(model_or_lm, LoadedModel):
        return model_or_lm
    name = getattr(model_or_lm.config, "_name_or_path", "") or type(model_or_lm).__name__
    return LoadedModel(model=model_or_lm, tokenizer=tokenizer, model_id=str(name))
