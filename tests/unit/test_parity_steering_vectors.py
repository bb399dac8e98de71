"""Parity: steerlab's ``mean_diff`` against the ``steering-vectors`` library's CAA training.

``steering_vectors.train_steering_vector`` hooks the decoder blocks it finds by name
(``model.layers.{num}`` for Llama, ``transformer.h.{num}`` for GPT-2) and records their
outputs, so its layer ``k`` is the output of block ``k`` — steerlab's ``block_output`` site at
layer ``k``: the numbering maps one-to-one, no offset. It reads at ``read_token_index`` (default
-1, the last real token after its own padding adjustment) of the strings it is given; steerlab
reads the answer token, which is the last token of ``prefix + answer``. So we hand it exactly
those token sequences decoded back to text (checking they re-tokenize to the same ids) and
both libraries read the identical position.

Skipped when steering-vectors is not installed (``pip install --no-deps steering-vectors``).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from steerlab.data import ABItem, ContrastPair, load_dataset
from steerlab.extraction import extract, pair_sequences
from steerlab.model.load import as_loaded
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.vector import cosine

try:
    import steering_vectors as sv
except ImportError:  # a missing peer is a failure in CI (the Makefile installs it)
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    sv = pytest.importorskip("steering_vectors")

N_LAYERS = 6
LAYERS = [0, 2, 3, 5]


def _as_text_pairs(tok: Any, sequences: list[list[int]]) -> list[tuple[str, str]]:
    texts = [tok.decode(seq) for seq in sequences]
    for text, seq in zip(texts, sequences, strict=True):
        # steering-vectors re-tokenizes the strings: they must give back the same ids
        assert tok(text)["input_ids"] == seq
    return list(zip(texts[0::2], texts[1::2], strict=True))


def _parity(arch: str, items: list[Any], layers: list[int]) -> dict[int, float]:
    tok = tiny_tokenizer()
    model = tiny_model(arch, n_layers=N_LAYERS)
    lm = as_loaded(model, tok)
    ours = extract(lm, items, method="mean_diff", layers=layers, batch_size=6, progress=False)
    sequences, _ = pair_sequences(lm, items)
    samples = _as_text_pairs(tok, sequences)
    theirs = sv.train_steering_vector(model, tok, samples, layers=layers, read_token_index=-1,
                                      batch_size=1)
    assert sorted(theirs.layer_activations) == layers
    cosines = {}
    for k in layers:
        a, b = ours.directions[k], theirs.layer_activations[k].float()
        cosines[k] = cosine(a, b)
        assert float((a - b).norm()) <= 1e-5 * float(b.norm()), (arch, k)  # measured ~1e-7
    return cosines


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_parity_ab_items_answer_token(arch: str) -> None:
    items = [i for i in load_dataset("builtin:optimism").head(10) if isinstance(i, ABItem)]
    cosines = _parity(arch, items, LAYERS)
    assert all(c >= 0.9999 for c in cosines.values()), cosines


def test_parity_persona_yes_no() -> None:
    items = [i for i in load_dataset("builtin:optimism_statements").head(10)
             if isinstance(i, ABItem)]
    cosines = _parity("llama", items, [1, 4])
    assert all(c >= 0.9999 for c in cosines.values()), cosines


def test_parity_contrast_pairs_last_token() -> None:
    items = [i for i in load_dataset("builtin:optimism_pairs").head(10)
             if isinstance(i, ContrastPair)]
    cosines = _parity("llama", items, LAYERS)
    assert all(c >= 0.9999 for c in cosines.values()), cosines


def test_parity_detects_a_wrong_read_position() -> None:
    """Sanity check that the parity test has teeth: reading one token earlier disagrees."""
    tok = tiny_tokenizer()
    model = tiny_model("llama", n_layers=N_LAYERS)
    lm = as_loaded(model, tok)
    items = [i for i in load_dataset("builtin:optimism").head(10) if isinstance(i, ABItem)]
    ours = extract(lm, items, layers=[3], progress=False)
    sequences, _ = pair_sequences(lm, items)
    theirs = sv.train_steering_vector(model, tok, _as_text_pairs(tok, sequences), layers=[3],
                                      read_token_index=-2)
    # at -2 both texts share the prefix, so their difference vanishes
    assert theirs.layer_activations[3].norm() < 1e-5 < ours.directions[3].norm()
