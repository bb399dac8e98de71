"""Does steering work on this model? Steerlab's hooks held against hand-written references.

:func:`check_model` runs, on any decoder (a tiny random one from :mod:`steerlab.testing.zoo`
or the user's own, for ``steerlab doctor``):

* **blocks** — steerlab's blocks (:func:`~steerlab.model.arch.find_blocks`), width, final norm,
  the kind of each block; each block must run exactly once per forward.
* **block output** — at every checked layer k, the logits under ``steerlab.steer`` (add v at
  block k's output) against a hand-written forward hook that adds v to the block's output
  (max |Δ| ≤ ``tol``); the steering must move the logits (a silent no-op fails); and, where
  ``output_hidden_states[k+1]`` is block k's output, it must be exactly ``h + v`` there.
* **extraction** — :func:`~steerlab.extraction.record.record` reads block k's output (what
  ``output_hidden_states[k+1]`` holds), not some tensor inside the block.
* **generate** — ``positions="prompt"`` and ``"generation"`` under ``model.generate`` with
  the KV cache, and under steerlab's own cached decoder, against a no-cache reference loop
  that adds v by absolute position with a hand-written hook.
* **padded batch** — per-row specs (+1·v, none, −2·v) in one left-padded batch against the
  hand-written hook adding each row's own multiple at its real tokens.

Every check is a :class:`Finding`; a :class:`~steerlab.errors.SteerlabError` raised by
steerlab is a refusal (the user would see it), anything else that fails is a finding that is
not ok. The tiny-model coverage run (:mod:`steerlab.testing.coverage`) and ``steerlab doctor``
both call this.

Example:
    >>> from steerlab.testing.tiny import tiny_model
    >>> report = check_model(tiny_model("llama", n_layers=2))
    >>> report.verdict
    'exact'
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from steerlab.errors import SteerlabError
from steerlab.extraction.record import record
from steerlab.model.arch import declared_layers, find_blocks, model_width
from steerlab.model.load import as_loaded
from steerlab.scoring.generate import Decoder, GenerationRow
from steerlab.steering.hooks import steer
from steerlab.steering.spec import SteeringSpec
from steerlab.vector import SteeringVector

__all__ = ["Finding", "ModelReport", "check_model", "describe", "hand_hook"]

#: Logits of steerlab's steering vs the hand-written reference (same arithmetic: usually 0).
TOL = 1e-4
#: Below this max |Δ logits| a steering counts as having done nothing.
NOOP = 1e-5
GEN_TOKENS = 3
PROMPT_LEN = 6

_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f", "final_norm",
               "layer_norm", "layernorm")
_HYBRID_WORDS = ("mamba", "ssm", "linearattention", "linear_attention", "recurrent", "rglru",
                 "shortconv", "rwkv", "lstm", "deltanet", "gateddelta", "retention",
                 "lightning", "kda", "mixer")
_MOE_WORDS = ("expert", "router", "sparsemoe")


@dataclass
class Finding:
    """One check: what was checked, whether it held, and the numbers behind it.

    ``error`` is the largest |difference| from the reference, ``delta`` the largest change the
    steering made; ``refused`` marks a loud refusal: a :class:`~steerlab.errors.SteerlabError`
    from steerlab, or the model itself failing the unsteered baseline of a check.
    """

    name: str
    ok: bool
    detail: str = ""
    error: float | None = None
    delta: float | None = None
    refused: bool = False
    noop: bool = False


@dataclass
class ModelReport:
    """What :func:`check_model` found: the model's structure and one finding per check."""

    model_type: str
    blocks_path: str = ""
    n_blocks: int = 0
    width: int | None = None
    final_norm: str | None = None
    kinds: dict[str, list[int]] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)

    @property
    def refusal(self) -> str | None:
        """The first refusal steerlab raised, if any."""
        return next((f.detail for f in self.findings if f.refused), None)

    @property
    def failures(self) -> list[Finding]:
        """Findings that neither held nor were refused."""
        return [f for f in self.findings if not f.ok and not f.refused]

    @property
    def verdict(self) -> str:
        """``exact`` (every check held), ``refused`` (steerlab said no, loudly), ``no-op``
        (a steering silently changed nothing) or ``mismatch`` (it silently changed the wrong
        thing, or a check failed otherwise)."""
        if any(f.noop for f in self.failures):
            return "no-op"
        if self.failures:
            return "mismatch"
        if self.refusal is not None:
            return "refused"
        return "exact"


# ---- the hand-written reference -----------------------------------------------------------
def hand_hook(vector: torch.Tensor, weight: torch.Tensor | None = None) -> Callable[..., Any]:
    """A forward hook that adds ``weight[b, t] · vector`` (``vector`` everywhere when no
    weight) to a block's output hidden states — written without any steerlab code, as the
    reference steerlab's steering is held against.

    Example:
        >>> hook = hand_hook(torch.ones(2))
        >>> hook(None, (), (torch.zeros(1, 1, 2), "cache"))[0].tolist()
        [[[1.0, 1.0]]]
    """
    def hook(_module: Any, _args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            hidden, rest = output, None
        elif isinstance(output, tuple | list) and output and \
                isinstance(output[0], torch.Tensor):
            hidden, rest = output[0], output[1:]
        else:
            raise TypeError(f"block output is a {type(output).__name__}")
        add = vector.to(hidden.dtype)
        if weight is not None:
            add = weight.to(hidden.device, hidden.dtype)[..., None] * add
        hidden = hidden + add
        if rest is None:
            return hidden
        return [hidden, *rest] if isinstance(rest, list) else (hidden, *rest)
    return hook


class _Hooked:
    """Hand hooks on some blocks for the duration of a ``with``."""

    def __init__(self, blocks: nn.ModuleList, hooks: dict[int, Callable[..., Any]]):
        self.handles = [blocks[k].register_forward_hook(h) for k, h in hooks.items()]

    def __enter__(self) -> _Hooked:
        return self

    def __exit__(self, *_exc: object) -> None:
        for handle in self.handles:
            handle.remove()


# ---- running the model ----------------------------------------------------------------------
def _accepts(model: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None = None,
             hidden: bool = False, like_generate: bool = False) -> Any:
    """One no-cache forward; with a mask (or ``like_generate``) the position ids are passed
    explicitly, counted over real tokens from 0 as ``generate`` passes them (RoBERTa-style
    models would otherwise count from ``padding_idx + 1`` and differ from ``generate`` even
    unsteered)."""
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"input_ids": ids.to(device)}
    if like_generate and mask is None:
        mask = torch.ones_like(ids)
    if mask is not None:
        kwargs["attention_mask"] = mask.to(device)
        if _accepts(model, "position_ids"):
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp_min(0).to(device)
    if _accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    if hidden:
        kwargs["output_hidden_states"] = True
    with torch.no_grad():
        return model(**kwargs)


def _logits(output: Any) -> torch.Tensor:
    logits = output["logits"] if hasattr(output, "keys") else output[0]
    return logits.float()


def _hidden_states(output: Any) -> tuple[torch.Tensor, ...] | None:
    keys = output.keys() if hasattr(output, "keys") else ()
    found = output["hidden_states"] if "hidden_states" in keys else None
    if isinstance(found, tuple | list) and all(isinstance(h, torch.Tensor) for h in found):
        return tuple(found)
    return None


def _max(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return math.inf
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _output_hidden(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _capture(model: nn.Module, blocks: nn.ModuleList, ids: torch.Tensor
             ) -> tuple[Any, dict[int, list[torch.Tensor]]]:
    """An unsteered forward (hidden states on) and every block output it produced."""
    seen: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(blocks))}

    def keep(k: int) -> Callable[..., None]:
        def hook(_m: Any, _a: Any, output: Any) -> None:
            hidden = _output_hidden(output)
            if hidden is not None:
                seen[k].append(hidden.detach().float().clone())
        return hook

    handles = [b.register_forward_hook(keep(k)) for k, b in enumerate(blocks)]
    try:
        out = _forward(model, ids, hidden=True)
    finally:
        for handle in handles:
            handle.remove()
    return out, seen


# ---- describing the model -------------------------------------------------------------------
def _final_norm(model: nn.Module, path: str) -> str | None:
    parent_path = path.rsplit(".", 1)[0] if "." in path else ""
    parent = model.get_submodule(parent_path) if parent_path else model
    for name in _NORM_NAMES:
        module = getattr(parent, name, None)
        if isinstance(module, nn.Module) and not isinstance(module, nn.ModuleList):
            prefix = f"{parent_path}." if parent_path else ""
            return f"{prefix}{name} ({type(module).__name__})"
    return None


def describe(model: nn.Module) -> ModelReport:
    """Blocks, width, final norm, block kinds and notable features (MoE routers, sliding
    windows, hybrid SSM / linear-attention blocks) of ``model``; no forward is run.

    Example:
        >>> from steerlab.testing.tiny import tiny_model
        >>> describe(tiny_model("llama", n_layers=2)).kinds
        {'LlamaDecoderLayer': [0, 1]}
    """
    config = getattr(model, "config", None)
    report = ModelReport(model_type=str(getattr(config, "model_type", type(model).__name__)))
    path, blocks = find_blocks(model)
    report.blocks_path, report.n_blocks = path, len(blocks)
    report.width = model_width(model)
    report.final_norm = _final_norm(model, path)
    for k, block in enumerate(blocks):
        report.kinds.setdefault(type(block).__name__, []).append(k)
    report.features = _features(model, blocks)
    return report


def _text_config(model: nn.Module) -> Any:
    config: Any = getattr(model, "config", None)
    get_text = getattr(config, "get_text_config", None)
    return get_text() if callable(get_text) else config


def _span(indices: Sequence[int]) -> str:
    return ",".join(str(i) for i in indices) if len(indices) <= 6 else \
        f"{indices[0]}..{indices[-1]} ({len(indices)})"


def _features(model: nn.Module, blocks: nn.ModuleList) -> list[str]:
    out: list[str] = []
    moe: dict[str, list[int]] = {}
    mixers: dict[str, list[int]] = {}
    for k, block in enumerate(blocks):
        for name, module in block.named_modules():
            if not name or type(module).__module__.startswith("torch."):
                continue
            cls = type(module).__name__
            low = cls.lower()
            if any(w in low for w in _MOE_WORDS) or low.endswith(("moe", "moeblock")):
                moe.setdefault(cls, []).append(k)
            if any(w in low for w in _HYBRID_WORDS) and not any(
                    w in low for w in ("norm", "rotary", "embedding", "mlp")):
                mixers.setdefault(cls, []).append(k)
    if moe:
        out.append("MoE: " + ", ".join(f"{cls} in blocks {_span(sorted(set(ks)))}"
                                       for cls, ks in moe.items()))
    if mixers:
        out.append("state-space / linear-attention / recurrent: " + ", ".join(
            f"{cls} in blocks {_span(sorted(set(ks)))}" for cls, ks in mixers.items()))
    kinds: dict[str, list[int]] = {}
    for k, block in enumerate(blocks):
        kinds.setdefault(type(block).__name__, []).append(k)
    if len(kinds) > 1:
        out.append("hybrid: " + ", ".join(f"{cls} in blocks {_span(ks)}"
                                          for cls, ks in kinds.items()))
    text = _text_config(model)
    window = getattr(text, "sliding_window", None)
    types = getattr(text, "layer_types", None)
    if isinstance(types, list | tuple) and types and len(set(map(str, types))) > 1:
        counts = Counter(str(t) for t in types)
        out.append("layer types " + ", ".join(f"{t} ×{n}" for t, n in counts.items()))
    if isinstance(window, int) and window > 0:
        out.append(f"sliding window {window}")
    return out


# ---- the checks ----------------------------------------------------------------------------
def _vector(width: int, norm: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(width, generator=generator)
    return v / v.norm() * max(norm, 1e-3)


def _refused(name: str, exc: SteerlabError) -> Finding:
    return Finding(name, False, f"steerlab refuses: {exc}", refused=True)


def _crashed(name: str, exc: BaseException) -> Finding:
    text = " ".join(str(exc).split())[:160]
    return Finding(name, False, f"{type(exc).__name__}: {text}")


def check_block_output(model: nn.Module, blocks: nn.ModuleList, ids: torch.Tensor,
                       layer: int, vector: torch.Tensor, base: Any,
                       outputs: dict[int, list[torch.Tensor]]) -> list[Finding]:
    """Steerlab vs the hand hook at ``layer`` (logits), the steering moves the logits, and
    ``hidden_states[layer+1]`` is exactly ``h + v`` where it is the block's output."""
    name = f"block {layer} output"
    spec = SteeringVector.from_directions({layer: vector})
    after: list[torch.Tensor] = []

    def keep(_m: Any, _a: Any, output: Any) -> None:  # runs after steerlab's hook
        hidden = _output_hidden(output)
        if hidden is not None:
            after.append(hidden.detach().float().clone())

    try:
        with steer(model, spec, layers=[layer], coefficient=1.0), \
                _Hooked(blocks, {layer: keep}):
            got = _forward(model, ids, hidden=True)
    except SteerlabError as exc:
        return [_refused(name, exc)]
    except Exception as exc:
        return [_crashed(name, exc)]
    with _Hooked(blocks, {layer: hand_hook(vector)}):
        ref = _forward(model, ids, hidden=True)
    base_logits, got_logits, ref_logits = _logits(base), _logits(got), _logits(ref)
    error = _max(got_logits, ref_logits)
    delta = _max(got_logits, base_logits)
    ref_delta = _max(ref_logits, base_logits)
    findings = []
    if ref_delta <= NOOP:
        findings.append(Finding(name, False, "adding v at this block does not reach the logits "
                                "(even by hand)", error, delta, noop=True))
    elif delta <= NOOP:
        findings.append(Finding(name, False, "steerlab's steering changed nothing (silent "
                                "no-op)", error, delta, noop=True))
    else:
        ok = error <= TOL
        findings.append(Finding(name, ok, "logits = hand hook" if ok else
                                "logits differ from the hand-written hook", error, delta))
    block_out = outputs.get(layer) or []
    if len(after) == 1 and len(block_out) == 1:
        # the same fp32 addition the hook makes: exact, however large the residual is
        site_error = _max(after[0], block_out[0] + vector.float())
        ok = site_error <= TOL
        findings.append(Finding(f"block {layer} h+v", ok, "block output = h + v" if ok
                                else "block output is not h + v", site_error))
    states, steered = _hidden_states(base), _hidden_states(got)
    if states is not None and steered is not None and len(block_out) == 1 and \
            len(states) == len(blocks) + 1:
        if _max(states[layer + 1], block_out[0]) <= 1e-6:
            hs_error = _max(steered[layer + 1].float(), states[layer + 1].float() +
                            vector.float())
            ok = hs_error <= TOL
            if ok:
                findings.append(Finding(f"block {layer} hidden_states", True,
                                        "output_hidden_states[k+1] = h + v", hs_error))
            elif findings[-1].ok and findings[-1].name.endswith("h+v"):
                # the block's output is h + v, but transformers records hidden_states on a
                # module inside the block (before the block's own output hooks run)
                findings.append(Finding(f"block {layer} hidden_states", True,
                                        "note: output_hidden_states[k+1] is recorded inside "
                                        "the block and shows the unsteered value", hs_error))
            else:
                findings.append(Finding(f"block {layer} hidden_states", False,
                                        "output_hidden_states[k+1] is not h + v", hs_error))
        elif layer < len(blocks) - 1:
            findings.append(Finding(f"block {layer} hidden_states", True,
                                    "note: output_hidden_states[k+1] is not block k's output "
                                    "here"))
    return findings


def check_blocks_run_once(outputs: dict[int, list[torch.Tensor]]) -> list[Finding]:
    """Each block runs exactly once per forward (else 'its output' is not one site)."""
    findings = []
    for k, seen in outputs.items():
        if len(seen) != 1:
            findings.append(Finding(f"block {k} calls", False,
                                    f"block {k} ran {len(seen)} times in one forward"))
    return findings


def check_extraction(model: nn.Module, ids: torch.Tensor, layers: Sequence[int],
                     outputs: dict[int, list[torch.Tensor]],
                     states: tuple[torch.Tensor, ...] | None) -> Finding:
    """``record`` reads each block's output (``hidden_states[k+1]`` where HF reports it)."""
    try:
        batches = list(record(model, [ids[0].tolist()], layers=list(layers), read="last"))
    except SteerlabError as exc:
        return _refused("extraction", exc)
    except Exception as exc:
        return _crashed("extraction", exc)
    error = 0.0
    for k in layers:
        got = batches[0].acts[k][0]
        want = outputs[k][0][0, -1] if outputs.get(k) else None
        if want is None and states is not None:
            want = states[k + 1][0, -1]
        if want is not None:
            error = max(error, _max(got, want))
    ok = error <= TOL
    return Finding("extraction", ok, "record() reads the block output" if ok else
                   "record() reads something other than the block output", error)


def _generate(model: nn.Module, ids: torch.Tensor, new: int) -> tuple[torch.Tensor,
                                                                       torch.Tensor]:
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False,
                              num_beams=1, output_logits=True, return_dict_in_generate=True,
                              eos_token_id=None, pad_token_id=0, use_cache=True,
                              repetition_penalty=1.0, no_repeat_ngram_size=0)
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device),  # type: ignore[operator]
                             attention_mask=torch.ones_like(ids).to(device),
                             generation_config=config)
    logits = torch.stack([x[0].float() for x in out.logits])
    return out.sequences[0, ids.shape[1]:].cpu(), logits.cpu()


def _reference_loop(model: nn.Module, blocks: nn.ModuleList, prompt: torch.Tensor,
                    tokens: torch.Tensor, layer: int | None, vector: torch.Tensor | None,
                    positions: str) -> torch.Tensor:
    """No-cache reference: the logits after each prefix prompt + tokens[:t], v added by hand
    at the absolute positions ``positions`` selects (``prompt``: < prompt length;
    ``generation``: the rest)."""
    plen = prompt.shape[1]
    rows = []
    for t in range(len(tokens)):
        seq = torch.cat([prompt, tokens[None, :t]], dim=1)
        hooks = {}
        if layer is not None and vector is not None:
            pos = torch.arange(seq.shape[1])
            weight = (pos < plen) if positions == "prompt" else (pos >= plen)
            hooks[layer] = hand_hook(vector, weight[None].float())
        with _Hooked(blocks, hooks):
            rows.append(_logits(_forward(model, seq, like_generate=True))[0, -1].cpu())
    return torch.stack(rows)


def _teacher_forced(model: nn.Module, prompt: torch.Tensor, tokens: torch.Tensor
                    ) -> torch.Tensor:
    """Unsteered logits after each prefix prompt + tokens[:t], from one causal forward."""
    seq = torch.cat([prompt, tokens[None, :-1]], dim=1) if len(tokens) > 1 else prompt
    logits = _logits(_forward(model, seq, like_generate=True))[0].cpu()
    return logits[prompt.shape[1] - 1:]


def check_generate(model: nn.Module, blocks: nn.ModuleList, prompt: torch.Tensor,
                   layer: int, vector: torch.Tensor, base_error: float) -> list[Finding]:
    """``positions="prompt"`` / ``"generation"`` under ``model.generate`` (KV cache) and under
    steerlab's cached decoder, against the no-cache reference loop."""
    findings = []
    tol = max(TOL, 10 * base_error)
    spec_vector = SteeringVector.from_directions({layer: vector})
    for positions in ("prompt", "generation"):
        name = f"generate {positions} @ {layer}"
        try:
            with steer(model, spec_vector, layers=[layer], coefficient=1.0,
                       positions=positions):
                tokens, logits = _generate(model, prompt, GEN_TOKENS)
        except SteerlabError as exc:
            findings.append(_refused(name, exc))
            continue
        except Exception as exc:
            findings.append(_crashed(name, exc))
            continue
        ref = _reference_loop(model, blocks, prompt, tokens, layer, vector, positions)
        plain = _teacher_forced(model, prompt, tokens)
        error = _max(logits, ref)
        delta = _max(ref, plain)
        if delta <= NOOP:
            findings.append(Finding(name, False, "the reference itself does not move",
                                    error, delta, noop=True))
            continue
        moved = _max(logits, plain)
        if moved <= NOOP:
            findings.append(Finding(name, False, "steering under generate changed nothing",
                                    error, moved, noop=True))
            continue
        ok = error <= tol
        findings.append(Finding(name, ok, "generate = no-cache reference" if ok else
                                "cached generate differs from the no-cache reference",
                                error, moved))
        findings.append(_check_decoder(model, prompt, layer, spec_vector, positions, ref))
    return findings


def _check_decoder(model: nn.Module, prompt: torch.Tensor, layer: int,
                   vector: SteeringVector, positions: str, ref: torch.Tensor) -> Finding:
    """steerlab's own cached decoder picks the reference loop's greedy tokens."""
    name = f"steerlab.generate {positions} @ {layer}"
    spec = SteeringSpec(vector, layers=[layer], coefficient=1.0, positions=positions)
    row = GenerationRow(prompt[0].tolist(), max_new_tokens=len(ref), stop=frozenset())
    try:
        with Decoder(as_loaded(model), [row], spec) as decoder:  # type: ignore[arg-type]
            while not decoder.finished:
                decoder.step()
            got = decoder.outputs[0]
    except SteerlabError as exc:
        return _refused(name, exc)
    except Exception as exc:
        return _crashed(name, exc)
    want = ref.argmax(-1).tolist()
    ok = got[:1] == want[:1]  # later tokens follow the decoder's own choices
    return Finding(name, ok, "first token = reference" if ok else
                   f"tokens {got} vs reference greedy {want}")


def check_padded_rows(model: nn.Module, blocks: nn.ModuleList, width: int, layer: int,
                      vector: torch.Tensor, vocab: int, seed: int = 1) -> Finding:
    """Per-row specs (+1·v, none, −2·v) in one left-padded batch vs the hand hook."""
    name = f"per-row padded batch @ {layer}"
    lengths = (PROMPT_LEN, PROMPT_LEN - 2, PROMPT_LEN - 1)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), PROMPT_LEN, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, PROMPT_LEN - n:] = torch.randint(3, vocab, (n,), generator=generator)
        mask[row, PROMPT_LEN - n:] = 1
    coefs = torch.tensor([1.0, 0.0, -2.0])
    sv = SteeringVector.from_directions({layer: vector})
    row_specs = [[SteeringSpec(sv, layers=[layer], coefficient=float(c))] if c else []
                 for c in coefs]
    try:
        with steer(model, row_specs=row_specs):
            got = _logits(_forward(model, ids, mask))
    except SteerlabError as exc:
        return _refused(name, exc)
    except Exception as exc:
        return _crashed(name, exc)
    with _Hooked(blocks, {layer: hand_hook(vector, mask.float() * coefs[:, None])}):
        ref = _logits(_forward(model, ids, mask))
    plain = _logits(_forward(model, ids, mask))
    real = mask.bool()
    error = _max(got[real], ref[real])
    delta = _max(got[real], plain[real])
    if delta <= NOOP:
        return Finding(name, False, "per-row steering changed nothing", error, delta, noop=True)
    ok = error <= TOL
    return Finding(name, ok, "each row = hand hook with its own coefficient" if ok else
                   "per-row steering differs from the hand hook", error, delta)


def check_model(model: nn.Module, layers: Sequence[int] | None = None,
                vectors: dict[int, torch.Tensor] | None = None,
                prompt: torch.Tensor | None = None, seed: int = 0,
                generation: bool = True, every_layer: bool = False) -> ModelReport:
    """Run every check on ``model`` at ``layers`` (default: every block) and return the
    report. ``vectors[k]`` is the vector for layer k (default: a random direction scaled to
    the mean residual norm at k); ``prompt`` a ``[1, T]`` id tensor (default: random ids).
    Generation and padded-batch checks run at the first layer of each block kind among
    ``layers`` (at every one of them with ``every_layer``).

    Example:
        >>> from steerlab.testing.tiny import tiny_model
        >>> check_model(tiny_model("gpt2", n_layers=2), layers=[0]).verdict
        'exact'
    """
    try:
        report = describe(model)
    except SteerlabError as exc:
        report = ModelReport(str(getattr(getattr(model, "config", None), "model_type", "?")))
        report.findings.append(_refused("blocks", exc))
        return report
    path, blocks = find_blocks(model)
    text = _text_config(model)
    vocab = int(getattr(text, "vocab_size", None) or 512)
    if prompt is None:
        generator = torch.Generator().manual_seed(seed)
        prompt = torch.randint(3, min(vocab, 512), (1, PROMPT_LEN), generator=generator)
    n = len(blocks)
    chosen = list(range(n)) if layers is None else [int(k) for k in layers]
    report.layers = chosen
    base, outputs = _capture(model, blocks, prompt)
    states = _hidden_states(base)
    expected = declared_layers(model)
    if states is not None and len(states) != n + 1:
        report.findings.append(Finding("blocks", False, f"found {n} blocks at '{path}' but "
                                       f"output_hidden_states has {len(states)} entries"))
        return report
    if states is None and expected is not None and expected != n:
        report.findings.append(Finding("blocks", False, f"found {n} blocks at '{path}' but the "
                                       f"config declares {expected} layers"))
        return report
    report.findings.append(Finding("blocks", True, f"{n} blocks at '{path}'"))
    report.findings += check_blocks_run_once(outputs)
    if report.failures:
        return report
    width = report.width or int(outputs[0][0].shape[-1])
    if vectors is None:
        vectors = {k: _vector(width, float(outputs[k][0].norm(dim=-1).mean()), seed + k)
                   for k in chosen}
    for k in chosen:
        report.findings += check_block_output(model, blocks, prompt, k, vectors[k], base,
                                              outputs)
    report.findings.append(check_extraction(model, prompt, chosen, outputs,
                                            _hidden_states(base)))
    firsts: dict[str, int] = {}
    for k in chosen:
        firsts.setdefault(str(k) if every_layer else type(blocks[k]).__name__, k)
    if generation:
        try:
            tokens, logits = _generate(model, prompt, GEN_TOKENS)
            plain = _reference_loop(model, blocks, prompt, tokens, None, None, "all")
            base_error = _max(logits, plain)
        except Exception as exc:
            text = " ".join(str(exc).split())[:120]
            report.findings.append(Finding("generate (unsteered)", False,
                                           f"model.generate fails unsteered: "
                                           f"{type(exc).__name__}: {text}", refused=True))
            base_error = math.nan
        if not math.isnan(base_error):
            scale = float(logits.abs().max()) if logits.numel() else 1.0
            if base_error > 1e-2 * max(1.0, scale):
                report.findings.append(Finding(
                    "generate (unsteered)", False, f"cached generate differs from the no-cache "
                    f"forward even unsteered (max |Δ| {base_error:.2g})", base_error,
                    refused=True))
            else:
                for k in firsts.values():
                    report.findings += check_generate(model, blocks, prompt, k, vectors[k],
                                                      base_error)
    for k in firsts.values():
        report.findings.append(check_padded_rows(model, blocks, width, k, vectors[k],
                                                 min(vocab, 512)))
    return report
