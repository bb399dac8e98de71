"""Run steering vectors in real llama.cpp (llama-cpp-python, the optional ``llamacpp`` extra).

Two pieces:

* :func:`dequantize_gguf` / :func:`f32_gguf`: a quantised GGUF (e.g. SmolLM2's Q4_1) turned into
  an F32 GGUF with gguf-py alone (every KV field copied, each tensor through
  ``gguf.quants.dequantize``), cached under ``<cache>/gguf/``. On the F32 file llama.cpp computes
  in fp32 like steerlab's cached HF model, so logits can be compared directly (on the quantised
  file llama.cpp also quantises activations).
* :class:`LlamaCppModel`: a ``llama_cpp.Llama`` with a control vector set through
  ``llama_set_adapter_cvec`` (one ``n_embd × (n_layer − 1)`` buffer, layer k at offset
  ``n_embd·(k−1)``, always passed in full; the KV cache is reset before every evaluation),
  full logits (``logits_all=True``, ``eval``, ``scores``) and greedy generation.
  :func:`load_control_vectors` builds that buffer from GGUF files exactly as llama.cpp's
  ``common_control_vector_load`` does (``--control-vector`` / ``--control-vector-scaled``).

Example:
    >>> import steerlab
    >>> from steerlab.export.llamacpp import LlamaCppModel, f32_gguf      # doctest: +SKIP
    >>> cpp = LlamaCppModel(f32_gguf("smollm2-135m"))                     # doctest: +SKIP
    >>> cpp.set_vector(vec, layers=[10], strength=0.3)                    # doctest: +SKIP
    >>> cpp.generate(cpp.chat_ids(lm.tokenizer, "Describe Mondays."), 40)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerlab.errors import SteerlabError
from steerlab.export.gguf import LayerArg, control_directions, finish_gguf, read_control_vector
from steerlab.steering.spec import SteeringSpec
from steerlab.util.io import atomic_path
from steerlab.util.vocabulary import Operator
from steerlab.vector import SteeringVector

__all__ = [
    "LlamaCppModel",
    "cvec_buffer",
    "dequantize_gguf",
    "f32_gguf",
    "import_llama_cpp",
    "load_control_vectors",
]

LLAMA_FTYPE_ALL_F32 = 0
GGML_TYPE_F32 = 0
INSTALL_HINT = ("llama-cpp-python is not installed: `make llamacpp` builds it once from source "
                "(~15 min on 2 cores), caches the wheel under ~/.cache/steerlab/wheels and "
                "installs it (`pip install steerlab[llamacpp]` builds it too)")


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or a one-line :class:`SteerlabError` saying how to get it."""
    try:
        import llama_cpp
    except ImportError:
        raise SteerlabError(INSTALL_HINT) from None
    return llama_cpp


# ---- F32 GGUF ---------------------------------------------------------------------------------

def dequantize_gguf(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write ``dst``: ``src`` with every tensor dequantised to F32 (gguf-py only), atomically.

    KV fields are copied as they are (``general.file_type`` becomes ALL_F32, the alignment is
    gguf-py's default); tensors keep their names and shapes.

    Example:
        >>> dequantize_gguf("SmolLM2.Q4_1.gguf", "SmolLM2.F32.gguf")         # doctest: +SKIP
        PosixPath('SmolLM2.F32.gguf')
    """
    import gguf
    from gguf.quants import dequantize

    source, target = Path(src), Path(dst)
    try:
        reader = gguf.GGUFReader(str(source))
    except (OSError, ValueError, IndexError, KeyError) as exc:
        raise SteerlabError(f"{source}: not a readable GGUF ({exc})") from None
    arch_field = reader.get_field("general.architecture")
    if arch_field is None:
        raise SteerlabError(f"{source}: GGUF has no general.architecture")
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    with atomic_path(target, what="F32 GGUF") as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        for key, fld in reader.fields.items():
            if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment"):
                continue
            vtype = fld.types[0]
            sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            value: Any = fld.contents()
            if key == "general.file_type":
                value = LLAMA_FTYPE_ALL_F32
            writer.add_key_value(key, value, vtype, sub_type=sub)
        for tensor in reader.tensors:
            data = dequantize(np.asarray(tensor.data), tensor.tensor_type)
            dims = [int(d) for d in reversed(tensor.shape.tolist())]
            writer.add_tensor(tensor.name, np.ascontiguousarray(data, dtype=np.float32)
                              .reshape(dims))
        finish_gguf(writer)
    return target


def f32_gguf(alias: str = "smollm2-135m") -> Path:
    """The built-in alias's GGUF dequantised to F32, made once and cached in ``<cache>/gguf/``.

    Example:
        >>> f32_gguf("smollm2-135m").name                                  # doctest: +SKIP
        'SmolLM2-135M-Instruct.F32.gguf'
    """
    from steerlab.model.aliases import ALIASES, cache_root, fetch_gguf

    if alias not in ALIASES:
        raise SteerlabError(f"unknown model alias {alias!r}; known: {', '.join(ALIASES)}")
    stem = ALIASES[alias].gguf_name.removesuffix(".gguf")
    for suffix in (".Q4_1", ".Q4_K_M", ".q4_k_m", "-q4_k_m", ".Q8_0"):
        stem = stem.removesuffix(suffix)
    target = cache_root() / "gguf" / f"{stem}.F32.gguf"
    if target.is_file():
        return target
    return dequantize_gguf(fetch_gguf(alias), target)


# ---- control vector buffers -------------------------------------------------------------------

def cvec_buffer(directions: Mapping[int, Any], n_embd: int, n_layer: int) -> np.ndarray:
    """The ``llama_set_adapter_cvec`` buffer: ``n_embd × (n_layer − 1)`` floats from layer 1.

    Layer k (block-output numbering, 1 <= k < n_layer) sits at offset ``n_embd·(k−1)``; layers
    not given are zero; several entries for one layer would add up (llama.cpp sums them).

    Example:
        >>> cvec_buffer({2: np.ones(3)}, n_embd=3, n_layer=4).reshape(3, 3)[1].tolist()
        [1.0, 1.0, 1.0]
    """
    buf = np.zeros((max(n_layer - 1, 0), n_embd), dtype=np.float32)
    for layer, vec in directions.items():
        k = int(layer)
        arr = (vec.detach().cpu().numpy() if isinstance(vec, torch.Tensor)
               else np.asarray(vec)).astype(np.float32).reshape(-1)
        if arr.shape[0] != n_embd:
            raise SteerlabError(f"layer {k}: control vector has {arr.shape[0]} values, the "
                                f"model's n_embd is {n_embd}")
        if k == 0:
            raise SteerlabError("layer 0: llama.cpp never steers layer 0 (steer layers >= 1)")
        if not 0 < k < n_layer:
            raise SteerlabError(f"layer {k} out of range: llama.cpp steers layers 1..{n_layer - 1}"
                                f" of this {n_layer}-layer model")
        buf[k - 1] += arr
    return buf.reshape(-1)


def load_control_vectors(files: Iterable[str | os.PathLike[str] | tuple[Any, float]],
                         n_embd: int | None = None) -> dict[int, np.ndarray]:
    """Sum control vector files as llama.cpp's ``--control-vector[-scaled] FILE[:S]`` does.

    Each entry is a path (scale 1) or ``(path, scale)``. Returns ``{layer: vector}`` in the
    files' numbering (what llama.cpp applies). Files are checked like llama.cpp checks them.

    Example:
        >>> import tempfile, torch
        >>> from steerlab.export.gguf import to_gguf
        >>> from steerlab.vector import SteeringVector
        >>> vec = SteeringVector.from_directions({2: torch.ones(4)})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = to_gguf(vec, folder + "/syc.gguf").path
        ...     summed = load_control_vectors([(path, 0.5), path])  # FILE:0.5 plus FILE
        >>> list(summed), summed[2].tolist()
        ([2], [1.5, 1.5, 1.5, 1.5])
    """
    total: dict[int, np.ndarray] = {}
    for entry in files:
        path, scale = entry if isinstance(entry, tuple) else (entry, 1.0)
        cv = read_control_vector(path)
        if n_embd is not None and cv.n_embd != n_embd:
            raise SteerlabError(f"{cv.path}: control vectors have {cv.n_embd} values, the model's "
                                f"n_embd is {n_embd}")
        for k, vec in cv.directions.items():
            add = vec.astype(np.float32) * np.float32(scale)
            total[k] = total[k] + add if k in total else add
    return dict(sorted(total.items()))


_PARAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def _model_params(llama_cpp: Any, **fields: Any) -> Iterator[None]:
    """Set fields of ``llama_model_params`` that ``llama_cpp.Llama`` does not expose.

    ``Llama.__init__`` starts from ``llama_cpp.llama_cpp.llama_model_default_params()``; for the
    duration of the ``with`` that function returns defaults with ``fields`` changed.
    """
    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params

    def patched() -> Any:
        params = original()
        for name, value in fields.items():
            if hasattr(params, name):
                setattr(params, name, value)
        return params

    with _PARAMS_LOCK:
        module.llama_model_default_params = patched
        try:
            yield
        finally:
            module.llama_model_default_params = original


# ---- the model --------------------------------------------------------------------------------

class LlamaCppModel:
    """A GGUF model in llama.cpp with an optional control vector; logits and greedy decoding.

    ``logits_all=True`` keeps every position's logits (needed for :meth:`logits`);
    generation works either way. ``kv_f32`` keeps the KV cache in F32 (llama.cpp's default is
    F16, which alone moves SmolLM2's logits by up to ~0.05 from the fp32 HF model; with F32
    the F32 GGUF matches it to ~1e-4). ``extra_bufts=False`` (the default) turns off llama.cpp's
    extra CPU buffer types (weight repacking, AMX; llama-cli's ``--no-repack``): a natively
    built wheel on a Sapphire Rapids host whose sandbox does not grant AMX tile state dies
    with SIGILL on the first quantised (Q4_1) matmul otherwise. ``n_threads`` defaults to
    torch's thread count so timings are comparable with steerlab's HF model.

    Example:
        >>> cpp = LlamaCppModel("SmolLM2-135M-Instruct.F32.gguf")          # doctest: +SKIP
        >>> cpp.logits([1, 2, 3]).shape                                    # doctest: +SKIP
        (3, 49152)
    """

    def __init__(self, path: str | os.PathLike[str], *, n_ctx: int = 1024,
                 n_threads: int | None = None, logits_all: bool = True, seed: int = 0,
                 kv_f32: bool = True, extra_bufts: bool = False, verbose: bool = False
                 ) -> None:
        self.llama_cpp = import_llama_cpp()
        source = Path(path)
        if not source.is_file():
            raise SteerlabError(f"{source}: GGUF file not found")
        threads = n_threads or max(1, torch.get_num_threads())
        kv = {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if kv_f32 else {}
        try:
            with _model_params(self.llama_cpp, use_extra_bufts=extra_bufts):
                self.llm = self.llama_cpp.Llama(model_path=str(source), n_ctx=n_ctx,
                                                n_threads=threads, n_threads_batch=threads,
                                                logits_all=logits_all, seed=seed,
                                                verbose=verbose, **kv)
        except (ValueError, RuntimeError) as exc:
            raise SteerlabError(f"{source}: llama.cpp could not load it ({exc})") from None
        self.path = source
        self.logits_all = logits_all
        self.n_embd = int(self.llm.n_embd())
        self.n_vocab = int(self.llm.n_vocab())
        self.n_layer = int(self.llama_cpp.llama_model_n_layer(self.llm.model))
        self.n_ctx = n_ctx
        self._vocab = self.llama_cpp.llama_model_get_vocab(self.llm.model)
        self._buffer: np.ndarray | None = None

    # -- steering --
    def set_directions(self, directions: Mapping[int, Any] | None) -> None:
        """Set the control vector ``{layer: vector}`` (block-output numbering); None clears.

        The full buffer is always passed (llama.cpp keeps old values for layers past ``len``);
        the layer range is narrowed to the layers that are non-zero, as llama-cli's
        ``--control-vector-layer-range`` does, so unsteered layers get no add node.
        """
        buf = (None if not directions else
               np.ascontiguousarray(cvec_buffer(directions, self.n_embd, self.n_layer)))
        active = ([] if buf is None else
                  [k for k in range(1, self.n_layer)
                   if buf[(k - 1) * self.n_embd:k * self.n_embd].any()])
        if buf is None or not active:
            rc = self.llama_cpp.llama_set_adapter_cvec(self.llm.ctx, None, 0, self.n_embd, 0, 0)
            self._buffer = None
        else:
            ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            rc = self.llama_cpp.llama_set_adapter_cvec(self.llm.ctx, ptr, buf.size, self.n_embd,
                                                       min(active), max(active))
            self._buffer = buf  # keep it alive for as long as llama.cpp may read it
        if rc != 0:
            raise SteerlabError(f"llama_set_adapter_cvec failed (status {rc})")
        self.llm.reset()

    def set_vector(self, vector: SteeringVector | SteeringSpec | None, *,
                   layers: LayerArg = None,
                   coefficient: float | None = None, strength: float | None = None,
                   positions: str = "all", operator: Operator = "add") -> dict[int, float]:
        """Apply a steerlab vector (or SteeringSpec) as llama.cpp's control vector.

        The same translation as :func:`steerlab.export.to_gguf`: returns the coefficient used
        per layer. ``vector=None`` clears.
        """
        if vector is None:
            self.set_directions(None)
            return {}
        directions, coefficients = control_directions(
            vector, layers=layers, coefficient=coefficient, strength=strength,
            positions=positions, operator=operator)
        self.set_directions(directions)
        return coefficients

    def set_files(self, files: Iterable[str | os.PathLike[str] | tuple[Any, float]]) -> None:
        """Apply control vector GGUF files as ``--control-vector[-scaled]`` would."""
        self.set_directions(load_control_vectors(files, n_embd=self.n_embd))

    # -- evaluation --
    def _check_ids(self, ids: Sequence[int], extra: int = 0) -> list[int]:
        tokens = [int(t) for t in ids]
        if not tokens:
            raise SteerlabError("llama.cpp needs at least one token")
        if len(tokens) + extra > self.n_ctx:
            raise SteerlabError(f"{len(tokens)} + {extra} tokens exceed n_ctx={self.n_ctx}")
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            raise SteerlabError(f"token ids {bad[:5]} outside the vocabulary ({self.n_vocab})")
        return tokens

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position, ``[len(ids), n_vocab]`` float32 (fresh KV cache)."""
        if not self.logits_all:
            raise SteerlabError("logits() needs LlamaCppModel(..., logits_all=True)")
        tokens = self._check_ids(ids)
        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32)

    def _last_logits(self) -> np.ndarray:
        if self.logits_all:
            return np.asarray(self.llm.scores[self.llm.n_tokens - 1])
        ptr = self.llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, end of turn) of this model's vocabulary."""
        return bool(self.llama_cpp.llama_vocab_is_eog(self._vocab, int(token)))

    def generate(self, ids: Sequence[int], max_new_tokens: int = 48, *,
                 stop_ids: Iterable[int] | None = None, stop: bool = True) -> list[int]:
        """Greedy (argmax) continuation of ``ids``: the new token ids (fresh KV cache).

        Stops after an end-of-generation token (not returned) when ``stop``; ``stop_ids``
        overrides which tokens stop (default: llama.cpp's end-of-generation tokens).
        """
        tokens = self._check_ids(ids, max_new_tokens)
        stops = None if stop_ids is None else {int(t) for t in stop_ids}
        self.llm.reset()
        self.llm.eval(tokens)
        out: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(np.argmax(self._last_logits()))
            if stop and (nxt in stops if stops is not None else self.is_eog(nxt)):
                break
            out.append(nxt)
            if len(out) == max_new_tokens:
                break
            self.llm.eval([nxt])
        return out

    @staticmethod
    def chat_ids(tokenizer: Any, prompt: Any, system: str | None = None) -> list[int]:
        """Prompt ids exactly as ``steerlab.generate`` builds them (one way: model.prompts)."""
        from steerlab.model.prompts import prompt_ids

        return prompt_ids(tokenizer, prompt, True, system)[0]

    def close(self) -> None:
        """Free the llama.cpp model and context."""
        self.llm.close()
        self._buffer = None

    def __enter__(self) -> LlamaCppModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
