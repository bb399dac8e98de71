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

Every check is a :class:`~steerlab.testing.findings.Finding`; a
:class:`~steerlab.errors.SteerlabError` raised by steerlab is a refusal (the user would see it),
anything else that fails is a finding that is not ok. The tiny-model coverage run
(:mod:`steerlab.testing.coverage`) and ``steerlab doctor`` both call this.

Example:
    >>> from steerlab.testing.tiny import tiny_model
    >>> report = check_model(tiny_model("llama", n_layers=2))
    >>> report.verdict
    'exact'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from steerlab.errors import SteerlabError
from steerlab.extraction.record import record
from steerlab.model.arch import declared_layers, find_blocks
from steerlab.model.load import as_loaded
from steerlab.scoring.generate import Decoder, GenerationRow
from steerlab.steering.hooks import steer
from steerlab.steering.spec import SteeringSpec
from steerlab.testing.anatomy import describe, text_config
from steerlab.testing.findings import Finding, ModelReport, crashed, refused
from steerlab.testing.hand_reference import (
    Hooked,
    capture,
    hand_hook,
    hf_generate,
    hidden_states_of,
    logits_of,
    max_diff,
    output_hidden,
    plain_forward,
    reference_loop,
    teacher_forced,
)
from steerlab.vector import SteeringVector

__all__ = ["check_block_output", "check_blocks_run_once", "check_extraction", "check_generate",
           "check_model", "check_padded_rows"]

#: Logits of steerlab's steering vs the hand-written reference (same arithmetic: usually 0).
TOL = 1e-4
#: Below this max |Δ logits| a steering counts as having done nothing.
NOOP = 1e-5
GEN_TOKENS = 3
PROMPT_LEN = 6


def _vector(width: int, norm: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(width, generator=generator)
    return v / v.norm() * max(norm, 1e-3)


def check_block_output(model: nn.Module, blocks: nn.ModuleList, ids: torch.Tensor,
                       layer: int, vector: torch.Tensor, base: Any,
                       outputs: dict[int, list[torch.Tensor]]) -> list[Finding]:
    """Steerlab vs the hand hook at ``layer`` (logits), the steering moves the logits, and
    ``hidden_states[layer+1]`` is exactly ``h + v`` where it is the block's output."""
    name = f"block {layer} output"
    spec = SteeringVector.from_directions({layer: vector})
    after: list[torch.Tensor] = []

    def keep(_m: Any, _a: Any, output: Any) -> None:  # runs after steerlab's hook
        hidden = output_hidden(output)
        if hidden is not None:
            after.append(hidden.detach().float().clone())

    try:
        with steer(model, spec, layers=[layer], coefficient=1.0), \
                Hooked(blocks, {layer: keep}):
            got = plain_forward(model, ids, hidden=True)
    except SteerlabError as exc:
        return [refused(name, exc)]
    except Exception as exc:
        return [crashed(name, exc)]
    with Hooked(blocks, {layer: hand_hook(vector)}):
        ref = plain_forward(model, ids, hidden=True)
    base_logits, got_logits, ref_logits = logits_of(base), logits_of(got), logits_of(ref)
    error = max_diff(got_logits, ref_logits)
    delta = max_diff(got_logits, base_logits)
    ref_delta = max_diff(ref_logits, base_logits)
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
        site_error = max_diff(after[0], block_out[0] + vector.float())
        ok = site_error <= TOL
        findings.append(Finding(f"block {layer} h+v", ok, "block output = h + v" if ok
                                else "block output is not h + v", site_error))
    states, steered = hidden_states_of(base), hidden_states_of(got)
    if states is not None and steered is not None and len(block_out) == 1 and \
            len(states) == len(blocks) + 1:
        if max_diff(states[layer + 1], block_out[0]) <= 1e-6:
            hs_error = max_diff(steered[layer + 1].float(), states[layer + 1].float() +
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
        return refused("extraction", exc)
    except Exception as exc:
        return crashed("extraction", exc)
    error = 0.0
    for k in layers:
        got = batches[0].acts[k][0]
        want = outputs[k][0][0, -1] if outputs.get(k) else None
        if want is None and states is not None:
            want = states[k + 1][0, -1]
        if want is not None:
            error = max(error, max_diff(got, want))
    ok = error <= TOL
    return Finding("extraction", ok, "record() reads the block output" if ok else
                   "record() reads something other than the block output", error)


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
                tokens, logits = hf_generate(model, prompt, GEN_TOKENS)
        except SteerlabError as exc:
            findings.append(refused(name, exc))
            continue
        except Exception as exc:
            findings.append(crashed(name, exc))
            continue
        ref = reference_loop(model, blocks, prompt, tokens, layer, vector, positions)
        plain = teacher_forced(model, prompt, tokens)
        error = max_diff(logits, ref)
        delta = max_diff(ref, plain)
        if delta <= NOOP:
            findings.append(Finding(name, False, "the reference itself does not move",
                                    error, delta, noop=True))
            continue
        moved = max_diff(logits, plain)
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
        return refused(name, exc)
    except Exception as exc:
        return crashed(name, exc)
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
            got = logits_of(plain_forward(model, ids, mask))
    except SteerlabError as exc:
        return refused(name, exc)
    except Exception as exc:
        return crashed(name, exc)
    with Hooked(blocks, {layer: hand_hook(vector, mask.float() * coefs[:, None])}):
        ref = logits_of(plain_forward(model, ids, mask))
    plain = logits_of(plain_forward(model, ids, mask))
    real = mask.bool()
    error = max_diff(got[real], ref[real])
    delta = max_diff(got[real], plain[real])
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
        report.findings.append(refused("blocks", exc))
        return report
    path, blocks = find_blocks(model)
    text = text_config(model)
    vocab = int(getattr(text, "vocab_size", None) or 512)
    if prompt is None:
        generator = torch.Generator().manual_seed(seed)
        prompt = torch.randint(3, min(vocab, 512), (1, PROMPT_LEN), generator=generator)
    n = len(blocks)
    chosen = list(range(n)) if layers is None else [int(k) for k in layers]
    report.layers = chosen
    base, outputs = capture(model, blocks, prompt)
    states = hidden_states_of(base)
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
                                            hidden_states_of(base)))
    firsts: dict[str, int] = {}
    for k in chosen:
        firsts.setdefault(str(k) if every_layer else type(blocks[k]).__name__, k)
    if generation:
        try:
            tokens, logits = hf_generate(model, prompt, GEN_TOKENS)
            plain = reference_loop(model, blocks, prompt, tokens, None, None, "all")
            base_error = max_diff(logits, plain)
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
