"""Tests for steerlab.model.arch (block discovery, layer specs) and the tiny test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from steerlab.errors import SteerlabError
from steerlab.model import arch as layers
from steerlab.model.arch import find_blocks, n_layers, register_block_path
from steerlab.testing.tiny import ARCHS, tiny_model, tiny_tokenizer
from steerlab.util.parse import resolve_layer, resolve_layers

EXPECTED_PATH = {
    "llama": "model.layers",
    "qwen2": "model.layers",
    "gemma3": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "mistral": "model.layers",
    "phi3": "model.layers",
    "opt": "model.decoder.layers",
}


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = dict(layers._BLOCK_PATHS)
    yield
    layers._BLOCK_PATHS.clear()
    layers._BLOCK_PATHS.update(saved)


def _config_layers(model: nn.Module) -> int:
    config = model.config  # type: ignore[union-attr]
    return int(getattr(config, "num_hidden_layers", None) or config.n_layer)


# --- tiny fixtures ---------------------------------------------------------------------------


def test_archs_cover_expected() -> None:
    assert set(ARCHS) == set(EXPECTED_PATH)
    assert len(ARCHS) == 8


def test_tiny_tokenizer_round_trips_and_has_chat_template() -> None:
    tok = tiny_tokenizer()
    assert tok is tiny_tokenizer()  # cached
    assert 300 <= len(tok) <= 520
    for text in ["(A", "(B", " Yes", " No", "Héllo, wörld! 😀 <tag>\n\t42"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.unk_token_id not in ids or tok.unk_token_id is None
        assert tok.decode(ids) == text
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]:
        assert len(tok.encode(special, add_special_tokens=False)) == 1
    assert tok.eos_token == "<|endoftext|>"
    assert tok.pad_token_id is not None
    assert tok.chat_template
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_model_is_reproducible() -> None:
    ids = tiny_tokenizer()("The sky is blue", return_tensors="pt").input_ids
    with torch.no_grad():
        a = tiny_model("llama", seed=1)(ids).logits
        b = tiny_model("llama", seed=1)(ids).logits
        c = tiny_model("llama", seed=2)(ids).logits
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_tiny_model_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown tiny arch"):
        tiny_model("nope")


# --- find_blocks -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_find_blocks_per_arch(arch: str) -> None:
    model = tiny_model(arch, n_layers=3)
    assert not model.training
    assert model.dtype == torch.float32
    assert model.config.vocab_size >= len(tiny_tokenizer())
    path, blocks = find_blocks(model)
    assert path == EXPECTED_PATH[arch]
    assert isinstance(blocks, nn.ModuleList)
    assert blocks is model.get_submodule(path)
    assert len(blocks) == _config_layers(model) == 3
    assert n_layers(model) == 3


@pytest.mark.parametrize("arch", ARCHS)
def test_block_hook_fires_once_per_forward(arch: str) -> None:
    model = tiny_model(arch)
    _, blocks = find_blocks(model)
    calls: list[torch.Size] = []

    def hook(_mod: nn.Module, _args: object, output: object) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        assert isinstance(hidden, torch.Tensor)
        calls.append(hidden.shape)

    handle = blocks[2].register_forward_hook(hook)
    ids = tiny_tokenizer()("Is the sky blue? (A) Yes (B) No", return_tensors="pt").input_ids
    try:
        with torch.no_grad():
            model(ids)
            assert len(calls) == 1
            model(ids)
            assert len(calls) == 2
    finally:
        handle.remove()
    assert calls[0][-1] == 64
    assert calls[0][-2] == ids.shape[1]


def test_find_blocks_ties_and_mixed_lists() -> None:
    root = nn.Module()
    root.a = nn.Module()
    root.a.deep = nn.ModuleList(nn.Linear(2, 2) for _ in range(3))
    root.shallow = nn.ModuleList(nn.Linear(2, 2) for _ in range(3))
    root.mixed = nn.ModuleList([nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU()])
    root.empty = nn.ModuleList()
    path, blocks = find_blocks(root)
    assert path == "shallow"
    assert blocks is root.shallow
    root.a.deep.append(nn.Linear(2, 2))
    assert find_blocks(root)[0] == "a.deep"


def test_find_blocks_none_found() -> None:
    with pytest.raises(SteerlabError, match="no decoder blocks found"):
        find_blocks(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


def test_find_blocks_explicit_path() -> None:
    model = tiny_model("llama")
    model.decoy = nn.ModuleList(nn.Identity() for _ in range(10))
    assert find_blocks(model)[0] == "model.layers"  # the list as long as the config's layers
    model.decoy = nn.ModuleList(nn.Identity() for _ in range(4))
    assert find_blocks(model)[0] == "model.layers"  # ... inside the language model first
    model.decoy = nn.ModuleList(nn.Identity() for _ in range(10))
    model.config.num_hidden_layers = 99  # no list fits the config: the longest one wins
    assert find_blocks(model)[0] == "decoy"
    path, blocks = find_blocks(model, path="model.layers")
    assert path == "model.layers"
    assert blocks is model.model.layers
    with pytest.raises(SteerlabError, match="not found"):
        find_blocks(model, path="model.nope")
    with pytest.raises(SteerlabError, match="not a ModuleList"):
        find_blocks(model, path="model.norm")


def test_register_block_path(clean_registry: None) -> None:
    model = tiny_model("gpt2")
    model.decoy = nn.ModuleList(nn.Identity() for _ in range(10))
    model.config.n_layer = 99  # no list fits the config: the longest one wins
    assert find_blocks(model)[0] == "decoy"
    register_block_path("gpt2", "transformer.h")
    path, blocks = find_blocks(model)
    assert (path, len(blocks)) == ("transformer.h", 4)
    assert n_layers(model) == 4
    # explicit path still wins over the registry
    assert find_blocks(model, path="decoy")[0] == "decoy"
    # other model types are unaffected
    other = tiny_model("llama")
    other.decoy = nn.ModuleList(nn.Identity() for _ in range(10))
    other.config.num_hidden_layers = 99
    assert find_blocks(other)[0] == "decoy"


# --- resolve_layer / resolve_layers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "n", "expected"),
    [
        (0, 30, 0),
        (29, 30, 29),
        (-1, 30, 29),
        (-30, 30, 0),
        ("12", 30, 12),
        (" -2 ", 30, 28),
        (0.0, 30, 0),
        (1.0, 30, 29),
        (0.5, 31, 15),
        ("0.5", 31, 15),
        ("1.0", 4, 3),
        (0.25, 5, 1),
    ],
)
def test_resolve_layer(spec: int | float | str, n: int, expected: int) -> None:
    assert resolve_layer(spec, n) == expected


def test_resolve_layer_out_of_range_message() -> None:
    with pytest.raises(SteerlabError) as info:
        resolve_layer(40, 30)
    assert str(info.value) == (
        "layer 40 out of range: model has 30 layers (valid 0..29 or -30..-1)"
    )


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (30, "out of range"),
        (-31, "out of range"),
        ("40", "out of range"),
        (1.5, "fraction"),
        (-0.5, "fraction"),
        ("2.5", "fraction"),
        (float("nan"), "fraction"),
        ("abc", "invalid layer"),
        ("", "invalid layer"),
        (True, "invalid layer"),
        (None, "invalid layer"),
    ],
)
def test_resolve_layer_errors(spec: object, match: str) -> None:
    with pytest.raises(SteerlabError, match=match):
        resolve_layer(spec, 30)  # type: ignore[arg-type]


def test_resolve_layer_no_layers() -> None:
    with pytest.raises(SteerlabError, match="no layers"):
        resolve_layer(0, 0)


@pytest.mark.parametrize(
    ("spec", "n", "expected"),
    [
        ("all", 4, [0, 1, 2, 3]),
        ("ALL", 3, [0, 1, 2]),
        ("8-20", 30, list(range(8, 21))),
        ("8-20:2", 30, [8, 10, 12, 14, 16, 18, 20]),
        ("8 - 20 : 5", 30, [8, 13, 18]),
        ("10,16", 30, [10, 16]),
        ("16, 10, 10", 30, [10, 16]),
        ("-1", 30, [29]),
        ("-3--1", 30, [27, 28, 29]),
        ("0.5", 31, [15]),
        ("0.0-0.5", 5, [0, 1, 2]),
        ("5-5", 30, [5]),
        ("0-3,-1", 30, [0, 1, 2, 3, 29]),
        (7, 30, [7]),
        (-1, 30, [29]),
        (0.5, 31, [15]),
        ([3, 1, 1, -1], 10, [1, 3, 9]),
        ((0.0, "1.0", "2-3"), 10, [0, 2, 3, 9]),
        (range(0, 6, 2), 10, [0, 2, 4]),
        ({2, 4}, 10, [2, 4]),
    ],
)
def test_resolve_layers(spec: object, n: int, expected: list[int]) -> None:
    assert resolve_layers(spec, n) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("8-40", "layer 40 out of range: model has 30 layers"),
        ("40", "out of range"),
        ([1, 99], "out of range"),
        ("20-8", "empty"),
        ("8-20:0", "step"),
        ("abc", "invalid layer"),
        ("1,abc", "invalid layer"),
        ("8-", "invalid layer"),
        ("1,,2", "invalid layer"),
        ([], "no layers"),
        ("", "invalid layer"),
        ([None], "invalid layer"),
        (object(), "invalid layer"),
    ],
)
def test_resolve_layers_errors(spec: object, match: str) -> None:
    with pytest.raises(SteerlabError, match=match):
        resolve_layers(spec, 30)  # type: ignore[arg-type]
