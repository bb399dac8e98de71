"""Load Hugging Face decoder models by id, local directory, ``.gguf`` file or built-in alias.

Example:
    >>> lm = load_model("smollm2-135m")            # doctest: +SKIP
    >>> lm.n_layers, lm.hidden_size                # doctest: +SKIP
    (30, 576)

    A local directory loads the same way; here a tiny random-weight model saved to a temporary
    folder:

    >>> import tempfile
    >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = tiny_model("llama").save_pretrained(folder)
    ...     _ = tiny_tokenizer().save_pretrained(folder)
    ...     lm = load_model(folder)
    >>> lm.n_layers, lm.hidden_size
    (4, 64)
"""

from __future__ import annotations

import json
import os
import sys
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
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()                             # a tiny random-weight model
        >>> lm.model_id, lm.n_layers, lm.hidden_size, lm.pad_id in lm.stop_ids
        ('LlamaForCausalLM', 4, 64, True)
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


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_gguf(path: Path) -> None:
    """A one-line error unless ``path`` is a file that starts with the GGUF magic bytes."""
    if path.is_dir():
        raise SteerlabError(f"{path}: is a directory; expected a .gguf file")
    if not path.is_file():
        raise SteerlabError(f"{path}: GGUF file not found")
    with path.open("rb") as fh:
        head = fh.read(4)
    if head != b"GGUF":
        raise SteerlabError(f"{path}: not a GGUF file (it starts with {head!r}, not b'GGUF')")


def check_model_dir(path: Path) -> None:
    """A one-line error unless ``path`` holds a loadable Hugging Face model: a valid
    ``config.json`` of a known architecture and safetensors weights (never pickles).

    Example:
        >>> check_model_dir(Path("/tmp"))                      # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: /tmp: no config.json...
    """
    config = path / "config.json"
    if not config.is_file():
        raise SteerlabError(f"{path}: no config.json; not a Hugging Face model directory")
    try:
        fields = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SteerlabError(f"{config}: not valid JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise SteerlabError(f"{config}: expected a JSON object")
    from transformers import CONFIG_MAPPING

    model_type = fields.get("model_type")
    if model_type not in CONFIG_MAPPING:
        remote = " and asks for remote code (auto_map)" if fields.get("auto_map") else ""
        raise SteerlabError(f"{config}: architecture {model_type!r} is not built into "
                            f"transformers{remote}; steerlab never runs remote code from a "
                            "model directory")
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise SteerlabError(f"{path}: the weights are pickles ({', '.join(pickles[:3])}); "
                                "steerlab never unpickles files from a path: convert them to "
                                "safetensors in a trusted environment (save_pretrained)")
        raise SteerlabError(f"{path}: no *.safetensors weights")


def _complete(path: Path, loaded: tuple[Any, dict[str, Any]]) -> Any:
    """The model from ``from_pretrained(..., output_loading_info=True)``, refusing a checkpoint
    that leaves parameters newly initialised (random weights would steer nothing real)."""
    model, info = loaded
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise SteerlabError(f"{path}: the weights lack {len(missing)} parameter(s) of the "
                            f"architecture (e.g. {missing[0]}); not a complete checkpoint")
    return model


def _guarded(path: Path, load: Any, what: str = "model") -> Any:
    """Run a transformers load, turning its exceptions into one line naming ``path``."""
    try:
        return load()
    except SteerlabError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SteerlabError(f"{path}: cannot load the {what}: {first}") from None


def _offline() -> bool:
    """Whether the user switched the Hub off (``HF_HUB_OFFLINE``, read now, not at import)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or flag in {"1", "ON", "YES", "TRUE"}


def hub_cache_only(name: str) -> bool:
    """Whether Hugging Face id ``name`` must load from the local cache only (True), or may
    use the Hub (False); one :class:`SteerlabError` line when it can come from neither.

    Called for a name that is not a built-in alias nor a path. Left to itself the hub client
    retries an unreachable Hub five times, printing two lines each, before failing; instead:

    * in the local Hugging Face cache (its ``config.json``): load from the Hub when it answers
      (so updates arrive as before), else from the cache alone, silently;
    * not cached, and ``HF_HUB_OFFLINE`` set or the Hub unreachable (one quick request, no
      retries) or the Hub says no such repository: one line naming the name, what it is not,
      and the built-in aliases.

    Example:
        >>> hub_cache_only("no such model!")                  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: model 'no such model!': ... nor a valid Hugging Face id (...)
    """
    from huggingface_hub import model_info, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError

    known = f"built-in aliases: {', '.join(ALIASES)}"
    what = f"model {name!r}: not a built-in alias ({known}), not a local path"
    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError as exc:  # HFValidationError: not a valid repo id at all
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise SteerlabError(f"{what}, nor a valid Hugging Face id ({first})") from None
    if _offline():
        if cached:
            return True
        raise SteerlabError(f"{what}, and not in the local Hugging Face cache (HF_HUB_OFFLINE "
                            "is set, so the Hub was not asked)")
    try:
        model_info(name, timeout=10)
    except RepositoryNotFoundError:
        if cached:
            return True
        raise SteerlabError(f"{what}, and no such model on the Hugging Face Hub (a private or "
                            "gated one needs `hf auth login`)") from None
    except Exception as exc:  # any failure to ask: no network, a proxy, a timeout, ...
        if cached:
            return True
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise SteerlabError(f"{what}, not in the local Hugging Face cache, and the Hub cannot "
                            f"be reached ({first})") from None
    return False


def load_model(name: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32,
               pull_missing: bool = True,
               device_map: str | dict[str, Any] | None = None) -> LoadedModel:
    """Load a decoder LM: built-in alias, ``.gguf`` path, local directory or Hugging Face id.

    Aliases are pulled and cached on first use (``pull_missing=False`` raises instead).
    ``device_map`` places the weights as accelerate does: one device (``"cpu"``,
    ``"cuda:0"``), ``"auto"`` (spread over the GPUs, then CPU), or a dict of module name →
    device (``{"model.embed_tokens": 0, "model.layers.0": 0, ..., "lm_head": 1}``). Steering
    follows the blocks: each vector is cast to the device of the hidden states of the block it
    steers, so a vector on one GPU steers a block on another.

    Example:
        >>> lm = load_model("smollm2-135m")            # doctest: +SKIP
        >>> lm.tokenizer("hi").input_ids               # doctest: +SKIP
        >>> lm = load_model("smollm2-135m", device_map="auto")   # doctest: +SKIP

        A local directory, here a tiny random-weight GPT-2 placed on the CPU:

        >>> import tempfile
        >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = tiny_model("gpt2", n_layers=2).save_pretrained(folder)
        ...     _ = tiny_tokenizer().save_pretrained(folder)
        ...     lm = load_model(folder, device_map="cpu")
        >>> lm.n_layers, lm.device.type, lm.tokenizer.decode(lm.tokenizer("hi").input_ids)
        (2, 'cpu', 'hi')
    """
    named = isinstance(device_map, str) and bool(device_map.strip())
    mapped = isinstance(device_map, dict) and all(isinstance(k, str) for k in device_map)
    if device_map is not None and not (named or mapped):
        raise SteerlabError(f"device_map must be a device name, 'auto' or a dict of module "
                            f"name → device, got {device_map!r}")
    placement: dict[str, Any] = {} if device_map is None else {"device_map": device_map}

    def placed(load: Any, *args: Any, **kwargs: Any) -> Any:
        if device_map is None:
            return load(*args, **kwargs)
        try:
            return load(*args, **kwargs)
        except (RuntimeError, ValueError, AssertionError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SteerlabError(f"cannot place model {name!r} with device_map="
                                f"{device_map!r}: {first}") from None

    if not sys.stderr.isatty():  # no redrawn "Loading weights" bars in logs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    path = Path(name).expanduser()
    if name in ALIASES:
        if not is_pulled(name):
            if not pull_missing:
                raise SteerlabError(
                    f"model {name!r} is not cached; run: steerlab models pull {name}")
            print(f"model {name!r} is not cached yet: pulling it first (one time)",
                  file=sys.stderr, flush=True)
            pull(name, announce=True)
        directory = alias_dir(name)
        source = json.loads((directory / "steerlab_source.json").read_text())
        model = placed(AutoModelForCausalLM.from_pretrained, str(directory), dtype=dtype,
                       **placement)
        tok = AutoTokenizer.from_pretrained(str(directory))
        return _finish(model, tok, name, source.get("gguf_sha256"))
    if path.suffix == ".gguf":
        check_gguf(path)
        model, tok = _guarded(path, lambda: load_gguf(path, dtype))
        if isinstance(device_map, str) and device_map != "auto":
            model = placed(model.to, device_map)
        elif device_map is not None:
            from accelerate import dispatch_model, infer_auto_device_map

            mapping = infer_auto_device_map(model) if device_map == "auto" else device_map
            model = placed(dispatch_model, model, device_map=mapping)
        return _finish(model, tok, str(path), sha256_file(path))
    if path.is_dir():
        check_model_dir(path)
        model = _guarded(path, lambda: _complete(path, placed(
            AutoModelForCausalLM.from_pretrained, str(path), dtype=dtype, use_safetensors=True,
            output_loading_info=True, **placement)))
        tok = _guarded(path, lambda: AutoTokenizer.from_pretrained(str(path)), "tokenizer")
        return _finish(model, tok, str(path), None)
    if path.is_absolute() or name.startswith((".", "~")) or path.exists():
        raise SteerlabError(f"{path}: model directory not found"
                            if not path.exists() else f"{path}: not a model directory or .gguf")
    local = hub_cache_only(name)
    try:
        model = _complete(Path(name), placed(
            AutoModelForCausalLM.from_pretrained, name, dtype=dtype, use_safetensors=True,
            output_loading_info=True, local_files_only=local, **placement))
        tok = AutoTokenizer.from_pretrained(name, local_files_only=local)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ("" if "/" in name else
                f" (not a built-in alias: {', '.join(ALIASES)}; nor a local directory)")
        raise SteerlabError(f"cannot load model {name!r}{hint}: {first}") from None
    return _finish(model, tok, name, getattr(model.config, "_commit_hash", None))


def as_loaded(model_or_lm: LoadedModel | PreTrainedModel, tokenizer: Any = None) -> LoadedModel:
    """Wrap a bare HF model (and optional tokenizer) so every API accepts either.

    Example:
        >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
        >>> lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
        >>> as_loaded(lm) is lm, lm.n_layers
        (True, 4)
    """
    if isinstance(model_or_lm, LoadedModel):
        return model_or_lm
    name = getattr(model_or_lm.config, "_name_or_path", "") or type(model_or_lm).__name__
    return LoadedModel(model=model_or_lm, tokenizer=tokenizer, model_id=str(name))
