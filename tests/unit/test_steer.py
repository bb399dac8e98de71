"""Tests for steerlab.steering: hook hygiene, operators, positions (cache, padding), per-row specs.

Everything runs on the tiny random models of ``steerlab.testing.tiny`` (fp32, eager attention, CPU).
Block outputs are read with two extra hooks per call: one registered *before* entering
``steer`` (sees the raw block output) and one registered *inside* it (sees the steered output),
so each test can compare the exact delta the engine applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import nn

from steerlab.errors import SteerlabError
from steerlab.model.arch import find_blocks
from steerlab.steering.hooks import SteeringHandle, attach, steer
from steerlab.steering.plan import PositionTracker, compile_terms
from steerlab.steering.spec import Positions, SteeringSpec, parse_positions
from steerlab.testing.tiny import ARCHS, tiny_model, tiny_tokenizer
from steerlab.vector import SteeringVector

D = 64  # tiny_model hidden size
N_LAYERS = 4
PAD = 0  # tiny_tokenizer: <|endoftext|> is pad, bos and eos
ROWS = [[5, 17, 42, 99, 120, 7, 61], [33, 8, 250], [71, 64, 200, 13, 9]]
PARITY_ATOL = 1e-5



@pytest.fixture(autouse=True)
def _no_grad():  # these tests never backpropagate (kept local: never leak grad mode)
    with torch.no_grad():
        yield


# --- helpers ---------------------------------------------------------------------------------


def _vec(layers: Sequence[int], seed: int = 0, *, site: str = "block_output",
         n_pos: int | None = None, scale: float = 1.0, **extra: Any) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    shape = (n_pos, D) if n_pos else (D,)
    return SteeringVector.from_directions(
        {k: scale * torch.randn(shape, generator=gen) for k in layers}, site=site, **extra)


def _left(rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return {"input_ids": ids, "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp_min(0)}


def _right(rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _hook_ids(model: nn.Module) -> dict[str, tuple[list[int], list[int]]]:
    return {name: (list(m._forward_hooks), list(m._forward_pre_hooks))
            for name, m in model.named_modules()}


def _assert_no_hooks(model: nn.Module) -> None:
    for name, module in model.named_modules():
        assert not module._forward_hooks, f"forward hook left on {name or 'model'}"
        assert not module._forward_pre_hooks, f"forward pre-hook left on {name or 'model'}"
        assert not module._forward_hooks_with_kwargs, name
        assert not module._forward_pre_hooks_with_kwargs, name


def _block(model: nn.Module, k: int) -> nn.Module:
    return find_blocks(model)[1][k]


def _first(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else value[0]


@contextmanager
def _record(block: nn.Module, *, pre: bool = False, first: bool = False
            ) -> Iterator[list[torch.Tensor]]:
    """Record the block's hidden-state output (or input with ``pre``) of every call; ``first``
    runs the output hook before every hook already there (steerlab's included)."""
    seen: list[torch.Tensor] = []
    if pre:
        def pre_hook(_m: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
            seen.append(args[0] if args else kw["hidden_states"])
        handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            seen.append(_first(out))
        handle = block.register_forward_hook(hook, prepend=first)
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def _deltas(model: nn.Module, layer: int, *steer_args: Any, pre: bool = False,
            **steer_kwargs: Any) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """(raw, steered) hidden states of block ``layer`` per call while steering is active.

    Steerlab's output hook runs before any other forward hook of the block (so transformers'
    own output_hidden_states recording sees h + v): the raw output is read by a hook put
    first after the steering started."""
    block = _block(model, layer)
    if pre:
        with _record(block, pre=True) as raw, steer(model, *steer_args, **steer_kwargs), \
                _record(block, pre=True) as steered:
            yield raw, steered
        return
    with steer(model, *steer_args, **steer_kwargs), _record(block, first=True) as raw, \
            _record(block) as steered:
        yield raw, steered


def _generate(model: nn.Module, rows: Sequence[Sequence[int]], *, use_cache: bool = True,
              new: int = 4, **steer_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy generation; returns (raw per-step logits [B, new, V], sequences [B, T + new])."""
    batch = _left(rows)
    batch.pop("position_ids")
    kwargs = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False,
              "use_cache": use_cache, "output_logits": True, "return_dict_in_generate": True,
              "pad_token_id": PAD, "top_k": None, "top_p": None, "temperature": None}
    if steer_kwargs:
        with steer(model, **steer_kwargs):
            out = model.generate(**batch, **kwargs)
    else:
        out = model.generate(**batch, **kwargs)
    return torch.stack(out.logits, 1), out.sequences


def _forward(model: nn.Module, batch: dict[str, torch.Tensor], **steer_kwargs: Any
             ) -> torch.Tensor:
    if steer_kwargs:
        with steer(model, **steer_kwargs):
            return model(**batch, use_cache=False).logits
    return model(**batch, use_cache=False).logits


@pytest.fixture(scope="module")
def llama() -> nn.Module:
    return tiny_model("llama")


# --- 1. hook hygiene -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("site", ["block_output", "block_input"])
def test_hooks_removed_bit_identical(arch: str, site: str) -> None:
    model = tiny_model(arch)
    _assert_no_hooks(model)
    batch = _left(ROWS)
    before = model(**batch).logits
    vec = _vec([1, 2], site=site, scale=2.0)
    with steer(model, vec, coefficient=3.0) as handle:
        assert isinstance(handle, SteeringHandle)
        steered = model(**batch).logits
    real = batch["attention_mask"].bool()
    assert not torch.allclose(steered[real], before[real], atol=1e-3), "steering had no effect"
    _assert_no_hooks(model)
    assert torch.equal(model(**batch).logits, before)

    with pytest.raises(RuntimeError, match="boom"), steer(model, vec, coefficient=3.0):
        assert not torch.equal(model(**batch).logits, before)
        raise RuntimeError("boom")
    _assert_no_hooks(model)
    assert torch.equal(model(**batch).logits, before)


def test_hooks_removed_when_a_hook_raises(llama: nn.Module) -> None:
    batch = _left(ROWS)
    before = llama(**batch).logits
    rows = [[SteeringSpec(_vec([1]), coefficient=2.0)], []]  # 2 rows for a batch of 3
    with pytest.raises(SteerlabError, match="per-row"), steer(llama, row_specs=rows):
        llama(**batch)
    _assert_no_hooks(llama)
    assert torch.equal(llama(**batch).logits, before)


def test_attach_remove_idempotent_and_nested(llama: nn.Module) -> None:
    batch = _left(ROWS)
    before = llama(**batch).logits
    outer, inner = _vec([1], seed=1), _vec([2], seed=2)
    with steer(llama, outer, coefficient=2.0):
        only_outer = llama(**batch).logits
        with steer(llama, inner, coefficient=2.0):
            both = llama(**batch).logits
        assert torch.equal(llama(**batch).logits, only_outer)
    assert not torch.allclose(both, only_outer)
    with steer(llama, [SteeringSpec(outer, coefficient=2.0), SteeringSpec(inner, coefficient=2.0)]):
        assert torch.allclose(llama(**batch).logits, both, atol=1e-6)
    handle = attach(llama, outer, coefficient=2.0)
    assert torch.equal(llama(**batch).logits, only_outer)
    handle.remove()
    handle.remove()
    _assert_no_hooks(llama)
    assert torch.equal(llama(**batch).logits, before)


def test_failed_attach_leaves_no_hooks(llama: nn.Module) -> None:
    before = _hook_ids(llama)
    with pytest.raises(SteerlabError):
        attach(llama, _vec([1]), strength=0.5)  # no calibration
    with pytest.raises(SteerlabError):
        attach(llama, _vec([1]), layers=[3])
    assert _hook_ids(llama) == before


# --- 2. the add operator is exact ---------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_add_block_output_exact(arch: str) -> None:
    model = tiny_model(arch)
    layer, c = 2, 2.5
    vec = _vec([layer], seed=3)
    batch = _left(ROWS)
    with _deltas(model, layer, vec, coefficient=c) as (raw, steered):
        model(**batch)
    (a,), (b,) = raw, steered
    real = batch["attention_mask"].bool()
    expected = torch.where(real[..., None], a + c * vec.directions[layer], a)
    assert torch.equal(b, expected)
    assert torch.equal(b[~real], a[~real])  # pads untouched


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_add_block_input_shifts_input(arch: str) -> None:
    model = tiny_model(arch)
    layer, c = 2, -1.5
    vec = _vec([layer], seed=4, site="block_input")
    ids = torch.tensor([ROWS[0]])
    with _record(_block(model, layer - 1)) as prev_out, \
            _deltas(model, layer, vec, coefficient=c, pre=True) as (raw, steered):
        logits_in = model(ids).logits
    assert torch.equal(steered[0], raw[0] + c * vec.directions[layer])
    assert torch.equal(raw[0], prev_out[0])  # block k-1's output itself is untouched
    # block_input k acts like block_output k-1 (nothing sits between blocks in these archs)
    out_vec = SteeringVector.from_directions({layer - 1: vec.directions[layer]})
    with steer(model, out_vec, coefficient=c):
        logits_out = model(ids).logits
    assert torch.allclose(logits_in, logits_out, atol=1e-6)


# --- 3. position parity: cache, batching, padding -----------------------------------------------


PARITY_POSITIONS = ["all", "prompt", "generation", "last_prompt:2", "window:1:4",
                    "after_instruction"]
INSTRUCTION = [4, 2, 3]


def _spec_kwargs(vec: SteeringVector, positions: str, rows: Sequence[int]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"spec": vec, "coefficient": 4.0, "positions": positions}
    if positions == "after_instruction":
        kwargs["instruction_lengths"] = [INSTRUCTION[i] for i in rows]
    return kwargs


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_parity_cache_and_batch(arch: str) -> None:
    model = tiny_model(arch)
    vec = _vec([1, 2], seed=5)
    plain, _ = _generate(model, ROWS)
    for positions in PARITY_POSITIONS:
        cached, seq = _generate(model, ROWS, **_spec_kwargs(vec, positions, [0, 1, 2]))
        uncached, seq_nc = _generate(model, ROWS, use_cache=False,
                                     **_spec_kwargs(vec, positions, [0, 1, 2]))
        assert torch.equal(seq, seq_nc), positions
        assert torch.allclose(cached, uncached, atol=PARITY_ATOL), positions
        assert not torch.allclose(cached, plain, atol=1e-3), f"{positions}: no effect"
        for i, row in enumerate(ROWS):
            alone, seq_1 = _generate(model, [row], **_spec_kwargs(vec, positions, [i]))
            assert torch.equal(seq_1[0], seq[i, -seq_1.shape[1]:]), (positions, i)
            assert torch.allclose(alone[0], cached[i], atol=PARITY_ATOL), (positions, i)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "opt", "gemma3"])
def test_forward_parity_padding(arch: str) -> None:
    model = tiny_model(arch)
    vec = _vec([1, 3], seed=6)
    front = _vec([2], seed=7, n_pos=3)
    cases: list[dict[str, Any]] = [
        {"spec": vec, "coefficient": 3.0, "positions": "all"},
        {"spec": vec, "coefficient": 3.0, "positions": "window:1:3"},
        {"spec": vec, "coefficient": 3.0, "positions": "window:2:"},
        {"spec": vec, "coefficient": 3.0, "positions": "last_prompt:2"},
        {"spec": front, "coefficient": 2.0, "positions": "front"},
    ]
    left, right = _left(ROWS), _right(ROWS)
    width = left["input_ids"].shape[1]
    for kwargs in cases:
        lefts = _forward(model, left, **kwargs)
        rights = _forward(model, right, **kwargs)
        for i, row in enumerate(ROWS):
            alone = _forward(model, {"input_ids": torch.tensor([row])}, **kwargs)[0]
            n = len(row)
            assert torch.allclose(rights[i, :n], alone, atol=PARITY_ATOL), (kwargs, i)
            assert torch.allclose(lefts[i, width - n:], alone, atol=PARITY_ATOL), (kwargs, i)


# --- 4. front: position-resolved vectors ---------------------------------------------------------


def test_front_rows_align_with_first_real_token(llama: nn.Module) -> None:
    layer, n_pos = 1, 3
    vec = _vec([layer], seed=8, n_pos=n_pos)
    rows = [ROWS[0], ROWS[1], [44, 45]]  # 7, 3 and 2 real tokens
    batch = _left(rows)
    with _deltas(llama, layer, vec, positions="front") as (raw, steered):
        llama(**batch)
    delta = steered[0] - raw[0]
    width = batch["input_ids"].shape[1]
    for i, row in enumerate(rows):
        start = width - len(row)
        assert torch.equal(delta[i, :start], torch.zeros(start, D)), "pads touched"
        for p in range(len(row)):
            want = vec.directions[layer][p] if p < n_pos else torch.zeros(D)
            assert torch.allclose(delta[i, start + p], want, atol=1e-5), (i, p)
    # a plain [d] vector with front goes to the first real token only
    plain = _vec([layer], seed=9)
    with _deltas(llama, layer, plain, positions="front") as (raw, steered):
        llama(**batch)
    touched = (steered[0] - raw[0]).abs().sum(-1) > 0
    first = torch.zeros_like(touched)
    for i, row in enumerate(rows):
        first[i, width - len(row)] = True
    assert torch.equal(touched, first)


# --- 5. per-row specs ---------------------------------------------------------------------------


def test_row_specs_equal_separate_runs(llama: nn.Module) -> None:
    vec = _vec([1, 2], seed=10)
    row_specs = [[SteeringSpec(vec, coefficient=2.0)], [], [SteeringSpec(vec, coefficient=-3.0)]]
    plan = compile_terms([], row_specs, N_LAYERS)
    assert [len(plan[("block_output", k)]) for k in (1, 2)] == [1, 1]  # fused per layer
    term = plan[("block_output", 1)][0]
    assert term.row_operand is not None and term.row_operand.tolist() == [2.0, 0.0, -3.0]
    batch = _left(ROWS)
    width = batch["input_ids"].shape[1]
    with steer(llama, row_specs=row_specs):
        together = llama(**batch).logits
    for i, row in enumerate(ROWS):
        specs = row_specs[i]
        alone = _forward(llama, {"input_ids": torch.tensor([row])},
                         **({"spec": specs} if specs else {}))[0]
        assert torch.allclose(together[i, width - len(row):], alone, atol=PARITY_ATOL), i
    plain = _forward(llama, {"input_ids": torch.tensor([ROWS[1]])})[0]
    assert torch.allclose(together[1, width - len(ROWS[1]):], plain, atol=PARITY_ATOL)


def test_row_specs_keep_each_rows_order_and_global_first(llama: nn.Module) -> None:
    a, b, g = _vec([1], seed=11), _vec([1], seed=12), _vec([1], seed=13)
    add_a = SteeringSpec(a, coefficient=3.0)
    ablate_b = SteeringSpec(b, operator="ablate")
    clamp_a = SteeringSpec(a, operator="clamp", coefficient=1.0)
    glob = SteeringSpec(g, coefficient=1.5)
    row_specs = [[add_a, ablate_b], [ablate_b, add_a], [clamp_a, ablate_b, add_a]]
    batch = _left(ROWS)
    width = batch["input_ids"].shape[1]
    with _deltas(llama, 1, glob, row_specs=row_specs) as (_raw, steered):
        together = llama(**batch).logits
    b_hat = b.directions[1] / b.directions[1].norm()
    # row 0 ends with ablate_b: no b component left; row 1 ends with add_a: some b component
    assert (steered[0][0] @ b_hat).abs().max() < 1e-4
    assert (steered[0][1, width - 3:] @ b_hat).abs().min() > 1e-3
    for i, row in enumerate(ROWS):
        alone = _forward(llama, {"input_ids": torch.tensor([row])}, spec=[glob, *row_specs[i]])
        assert torch.allclose(together[i, width - len(row):], alone[0], atol=PARITY_ATOL), i


def test_row_specs_generate_match_separate(llama: nn.Module) -> None:
    vec = _vec([2], seed=14)
    row_specs = [[SteeringSpec(vec, coefficient=4.0, positions="generation")], [],
                 [SteeringSpec(vec, coefficient=-4.0)]]
    together, seq = _generate(llama, ROWS, row_specs=row_specs)
    for i, row in enumerate(ROWS):
        kwargs = {"spec": row_specs[i]} if row_specs[i] else {}
        alone, seq_1 = _generate(llama, [row], **kwargs) if kwargs else _generate(llama, [row])
        assert torch.equal(seq_1[0], seq[i, -seq_1.shape[1]:])
        assert torch.allclose(alone[0], together[i], atol=PARITY_ATOL), i


# --- 6. operators and composition ----------------------------------------------------------------


def test_composition_order_ablate_clamp_preserve_norm(llama: nn.Module) -> None:
    layer = 2
    vec = _vec([layer], seed=15, scale=0.5)
    v = vec.directions[layer]
    v_hat = v / v.norm()
    ids = torch.tensor([ROWS[0]])
    window = "window:1:4"
    steered_pos = torch.zeros(len(ROWS[0]), dtype=torch.bool)
    steered_pos[1:4] = True

    def run(specs: list[SteeringSpec]) -> tuple[torch.Tensor, torch.Tensor]:
        with _deltas(llama, layer, specs) as (raw, steered):
            llama(ids)
        return raw[0][0], steered[0][0]

    add = SteeringSpec(vec, coefficient=3.0, positions=window)
    ablate = SteeringSpec(vec, operator="ablate", positions=window)
    raw, add_then_ablate = run([add, ablate])
    _, ablate_then_add = run([ablate, add])
    assert not torch.allclose(add_then_ablate, ablate_then_add, atol=1e-3)
    assert (add_then_ablate[steered_pos] @ v_hat).abs().max() < 1e-4
    assert torch.allclose(ablate_then_add[steered_pos] @ v_hat,
                          torch.full((3,), 3.0 * float(v.norm())), atol=1e-4)
    for out in (add_then_ablate, ablate_then_add):
        assert torch.equal(out[~steered_pos], raw[~steered_pos])
    assert (raw[steered_pos] @ v_hat).abs().min() > 1e-3  # the ablation had something to remove

    _, half = run([SteeringSpec(vec, operator="ablate", coefficient=0.5)])
    assert torch.allclose(half @ v_hat, 0.5 * (raw @ v_hat), atol=1e-5)

    _, clamped = run([SteeringSpec(vec, operator="clamp", coefficient=-2.0, positions=window)])
    assert torch.allclose(clamped[steered_pos] @ v_hat, torch.full((3,), -2.0), atol=1e-5)
    assert torch.equal(clamped[~steered_pos], raw[~steered_pos])
    # the orthogonal part is kept
    ortho = clamped - (clamped @ v_hat)[:, None] * v_hat
    ortho_raw = raw - (raw @ v_hat)[:, None] * v_hat
    assert torch.allclose(ortho, ortho_raw, atol=1e-5)

    _, kept = run([SteeringSpec(vec, coefficient=8.0, positions=window, preserve_norm=True)])
    _, grown = run([SteeringSpec(vec, coefficient=8.0, positions=window)])
    assert torch.allclose(kept.norm(dim=-1), raw.norm(dim=-1), rtol=1e-5)
    assert not torch.allclose(grown.norm(dim=-1)[steered_pos], raw.norm(dim=-1)[steered_pos],
                              rtol=1e-2)
    assert not torch.allclose(kept[steered_pos], raw[steered_pos], atol=1e-3)
    assert torch.equal(kept[~steered_pos], raw[~steered_pos])


# --- 7. calibrated strength ---------------------------------------------------------------------


def test_strength_uses_resid_norm_calibration(llama: nn.Module) -> None:
    layer = 1
    vec = _vec([layer], seed=16, resid_norms={str(layer): 10.0})
    ids = torch.tensor([ROWS[2]])
    with _deltas(llama, layer, vec, strength=0.5) as (raw, steered):
        llama(ids)
    norms = (steered[0] - raw[0]).norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, 5.0), rtol=1e-4)
    with _deltas(llama, layer, vec, strength=-0.2, operator="clamp") as (raw, steered):
        llama(ids)
    v_hat = vec.directions[layer] / vec.directions[layer].norm()
    assert torch.allclose(steered[0] @ v_hat, torch.full((1, 5), -2.0), atol=1e-5)

    uncalibrated = _vec([layer], seed=16)
    with pytest.raises(SteerlabError, match="calibration"), \
            steer(llama, uncalibrated, strength=0.5):
        pass
    with pytest.raises(SteerlabError, match="calibration"), \
            steer(llama, uncalibrated, strength=0.5, operator="clamp"):
        pass
    with pytest.raises(SteerlabError, match="ablate"):
        SteeringSpec(vec, operator="ablate", strength=0.5)
    _assert_no_hooks(llama)


# --- 8. errors ----------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo[SteerlabError]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


def test_errors_are_one_line(llama: nn.Module) -> None:
    vec = _vec([1])
    with pytest.raises(SteerlabError) as exc:
        SteeringSpec(vec, operator="multiply")
    assert "multiply" in _one_line(exc)
    for bad in ("everywhere", "window:3:2", "window:-1:2", "window:a:b", "last_prompt:0",
                "last_prompt:x", "window", ""):
        with pytest.raises(SteerlabError) as exc:
            SteeringSpec(vec, positions=bad)
        _one_line(exc)
    with pytest.raises(SteerlabError) as exc:
        SteeringSpec(vec, coefficient=1.0, strength=1.0)
    _one_line(exc)
    with pytest.raises(SteerlabError) as exc:
        SteeringSpec(vec, coefficient=float("nan"))
    _one_line(exc)
    with pytest.raises(SteerlabError) as exc, steer(llama, vec, layers=[2]):
        pass
    assert "[2]" in _one_line(exc)
    with pytest.raises(SteerlabError) as exc, steer(llama, _vec([7])):
        pass
    assert "out of range" in _one_line(exc)
    wide = SteeringVector.from_directions({1: torch.ones(D * 2)})
    with pytest.raises(SteerlabError) as exc, steer(llama, wide):
        pass
    assert "hidden size" in _one_line(exc)
    with pytest.raises(SteerlabError) as exc, \
            steer(llama, row_specs=[[SteeringSpec(vec)], [SteeringSpec(vec)]]):
        llama(**_left(ROWS))
    assert "rows" in _one_line(exc)
    with pytest.raises(SteerlabError) as exc, steer(llama, row_specs=[[], []]):
        llama(**_left(ROWS))  # wrong length even when no row steers
    _one_line(exc)
    with pytest.raises(SteerlabError) as exc:
        SteeringVector.from_directions({1: torch.tensor([1.0, float("nan")])})
    assert "NaN" in _one_line(exc)
    with pytest.raises(SteerlabError) as exc:
        SteeringVector.from_directions({1: torch.tensor([1.0, float("inf")])})
    _one_line(exc)
    with pytest.raises(SteerlabError) as exc, steer(llama, vec, positions="after_instruction"):
        llama(torch.tensor([ROWS[0]]))
    assert "instruction_lengths" in _one_line(exc)
    front = _vec([1], n_pos=3)
    with pytest.raises(SteerlabError) as exc, steer(llama, front, positions="all"):
        pass
    assert "front" in _one_line(exc)
    with pytest.raises(SteerlabError) as exc, steer(llama, front, positions="front",
                                                    operator="ablate"):
        pass
    _one_line(exc)
    zero = SteeringVector.from_directions({1: torch.zeros(D)})
    with pytest.raises(SteerlabError) as exc, steer(llama, zero, operator="clamp"):
        pass
    _one_line(exc)
    with pytest.raises(SteerlabError) as exc, steer(llama, SteeringSpec(vec), coefficient=2.0):
        pass
    _one_line(exc)
    with pytest.raises(SteerlabError) as exc, steer(llama, SteeringSpec(vec), positions="prompt"):
        pass
    _one_line(exc)
    with pytest.raises(SteerlabError) as exc, steer(llama, [vec]):  # type: ignore[list-item]
        pass
    _one_line(exc)
    with pytest.raises(SteerlabError) as exc:
        SteeringSpec(torch.ones(D))  # type: ignore[arg-type]
    _one_line(exc)
    _assert_no_hooks(llama)


def test_each_operator_names_its_number() -> None:
    vec = SteeringVector.from_directions({0: torch.ones(D)}, resid_norms={"0": 8.0})
    add = SteeringSpec(vec, strength=0.5)
    clamp = SteeringSpec(vec, strength=0.5, operator="clamp")
    ablate = SteeringSpec(vec, coefficient=0.25, operator="ablate")
    assert add.operand(0) == add.coefficient_at(0) == vec.coefficient_for_strength(0, 0.5)
    assert clamp.operand(0) == clamp.clamp_target(0) == 4.0  # 0.5 × the residual norm
    assert ablate.operand(0) == ablate.ablation_fraction() == 0.25
    assert SteeringSpec(vec, operator="ablate").ablation_fraction() == 1.0
    for spec, wrong in ((add, "clamp_target"), (clamp, "coefficient_at")):
        with pytest.raises(SteerlabError, match="operand"):
            getattr(spec, wrong)(0)
    with pytest.raises(SteerlabError, match="operand"):
        add.ablation_fraction()


def test_parse_positions() -> None:
    assert parse_positions("all") == Positions("all")
    assert parse_positions("last_prompt:3") == Positions("last_prompt", count=3)
    assert parse_positions("window:2:5") == Positions("window", start=2, stop=5)
    assert parse_positions("window:2:") == Positions("window", start=2)
    assert parse_positions("after_instruction") == Positions("after_instruction")
    for text in ("all", "front", "last_prompt:3", "window:2:5", "window:2:"):
        assert str(parse_positions(text)) == text  # the text form round-trips
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_positions("all").kind = "prompt"  # type: ignore[misc]
    for bad in ("last_prompt:0", "window:5:2", "window:-1:", "everywhere", "last_prompt:x"):
        with pytest.raises(SteerlabError, match="bad positions"):
            parse_positions(bad)
    with pytest.raises(SteerlabError, match="bad positions"):
        Positions("window", start=3, stop=3)


# --- 9. prompt vs generation under the KV cache -------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_and_prompt_per_call(arch: str, use_cache: bool) -> None:
    model = tiny_model(arch)
    layer, c, new = 1, 2.0, 3
    vec = _vec([layer], seed=17)
    v = c * vec.directions[layer]
    batch = _left(ROWS)
    batch.pop("position_ids")
    real = batch["attention_mask"].bool()
    width = real.shape[1]
    kwargs = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False,
              "use_cache": use_cache, "pad_token_id": PAD}
    for positions in ("generation", "prompt", "last_prompt:2"):
        with _deltas(model, layer, vec, coefficient=c, positions=positions) as (raw, steered):
            model.generate(**batch, **kwargs)
        assert len(raw) == new
        for step, (a, b) in enumerate(zip(raw, steered, strict=True)):
            delta = b - a
            length = delta.shape[1]
            assert length == (width if step == 0 or not use_cache else 1) + (
                0 if use_cache else step)
            # which (row, column) of this call holds a prompt token / a real token
            col = torch.arange(width + step)[-length:]
            is_prompt = (col < width)[None].expand(len(ROWS), -1)
            is_real = real[:, col.clamp(max=width - 1)] | ~is_prompt
            if positions == "generation":
                want = is_real & ~is_prompt
            elif positions == "prompt":
                want = is_real & is_prompt
            else:
                want = is_real & is_prompt & (col >= width - 2)[None]
            expected = torch.where(want[..., None], v, torch.zeros(D))
            assert torch.allclose(delta, expected, atol=1e-5), (positions, step)
            if step == 0 and positions == "generation":
                assert torch.equal(b, a)  # prefill untouched
            if step > 0 and use_cache and positions != "generation":
                assert torch.equal(b, a)  # decode steps untouched


def test_tracker_direct_use() -> None:
    tracker = PositionTracker(prompt_lengths=[2, 3])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    tracker.observe(None, mask, past_len=0, batch=2, length=4, device=torch.device("cpu"))
    assert tracker.real_index is not None
    assert tracker.real_index.tolist() == [[0, 0, 1, 2], [0, 1, 2, 3]]
    assert tracker.mask("prompt").tolist() == [[False, True, True, False],
                                               [True, True, True, False]]
    assert tracker.mask("generation").tolist() == [[False, False, False, True],
                                                   [False, False, False, True]]


# --- gradients and dtype casts inside one context ------------------------------------------------


def test_grad_after_inference_mode_in_same_context() -> None:
    model = tiny_model("llama").to(torch.bfloat16)
    vec = _vec([1], seed=18)
    ids = torch.tensor([ROWS[0]])
    with steer(model, vec, operator="ablate"):
        with torch.inference_mode():
            model(ids)
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            model(inputs_embeds=embeds).logits.float().sum().backward()
    assert embeds.grad is not None and torch.isfinite(embeds.grad.float()).all()


def test_tiny_tokenizer_pad_is_zero() -> None:
    assert tiny_tokenizer().pad_token_id == PAD


# --- cache offset: read from whatever transformers passes, refuse when unsure -------------------


class _FakeCache:
    def __init__(self, n: int) -> None:
        self.n = n

    def get_seq_length(self) -> int:
        return self.n


def test_cache_offset_sources_and_conflicts() -> None:
    from steerlab.model.arch import cache_offset

    mask = torch.ones(2, 7, dtype=torch.long)
    assert cache_offset({}, 3) == 0
    assert cache_offset({"cache_position": torch.tensor([5])}, 1) == 5  # transformers <= 5.23
    assert cache_offset({"cache": _FakeCache(6)}, 1, mask) == 6  # 5.24: renamed to cache=
    assert cache_offset({"past_key_values": _FakeCache(6)}, 1, mask) == 6
    assert cache_offset({"some_future_name": _FakeCache(4)}, 3, mask) == 4  # any cache object
    assert cache_offset({}, 2, mask) == 5  # the 2-D mask covers cached + new tokens
    with pytest.raises(SteerlabError, match="cannot tell how many tokens are cached"):
        cache_offset({"cache": _FakeCache(2)}, 1, mask)  # mask says 6, cache says 2
    with pytest.raises(SteerlabError, match="cannot read the KV-cache length"):
        cache_offset({"cache": object()}, 1)


def test_steering_refuses_an_unreadable_cache(llama: nn.Module) -> None:
    """A cache steerlab cannot read must stop the forward, not steer the wrong tokens."""
    vec = _vec([1], seed=3)
    parent = llama.get_submodule(find_blocks(llama)[0].rsplit(".", 1)[0])
    with steer(llama, vec, coefficient=1.0, positions="prompt"), \
            pytest.raises(SteerlabError, match="KV-cache length"):
        parent(input_ids=torch.tensor([[5, 6]]), cache=object())


def test_no_deprecation_warning_from_own_cache_calls() -> None:
    """steerlab passes the KV cache under the keyword the running transformers declares."""
    import warnings

    from steerlab.extraction.record import record_pairs

    model = tiny_model("llama")
    prefix = list(range(5, 15))
    seqs = [[*prefix, 20, 21], [*prefix, 22], [*prefix, 23, 24], [*prefix, 25]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        batches = list(record_pairs(model, seqs, [1]))  # continues a shared-prefix KV cache
    assert sum(len(b.lengths) for b in batches) == 4
