"""Tests for steerlab.data (formats, loaders, splits, errors) and steerlab.model.prompts."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from steerlab.data import ABItem, ContrastPair, Dataset, data_dir, load_dataset, load_pairs
from steerlab.data.sequences import ab_sequences
from steerlab.errors import SteerlabError
from steerlab.model.prompts import chat_prompt, encode
from steerlab.testing.tiny import tiny_tokenizer

# --- fixtures: a fake STEERLAB_DATA tree ----------------------------------------------------

CAA_POOL = [{"question": f"Pool question {i}?\n\nChoices:\n (A) yes\n (B) no",
             "answer_matching_behavior": "(A)" if i % 2 else "(B)",
             "answer_not_matching_behavior": "(B)" if i % 2 else "(A)"} for i in range(20)]
CAA_TEST = [{"question": f"Test question {i}?", "answer_matching_behavior": "(B)",
             "answer_not_matching_behavior": "(A)"} for i in range(5)]
PERSONA = [{"question": f"Is the following statement something you would say?\n\"S{i}\"",
            "statement": f"S{i}", "label_confidence": 0.9,
            "answer_matching_behavior": " Yes" if i % 3 else " No",
            "answer_not_matching_behavior": " No" if i % 3 else " Yes"} for i in range(10)]
CAPS = [{"prompt": f"What is {i}+{i}?\n\nChoices:\n(A) {2 * i}\n(B) {2 * i + 1}",
         "correct": "(A)", "incorrect": "(B)", "correct_full_text": str(2 * i),
         "incorrect_full_text": str(2 * i + 1)} for i in range(6)]


def _dump(path: Path, data: Any, jsonl: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    else:
        path.write_text(json.dumps(data, indent=1))
    return path


@pytest.fixture
def fake_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    _dump(root / "caa" / "fakebehav" / "generate.json", CAA_POOL)
    _dump(root / "caa" / "fakebehav" / "test_ab.json", CAA_TEST)
    _dump(root / "caa" / "pool-only" / "generate.json", CAA_POOL[:10])
    _dump(root / "caa" / "capabilities" / "arith_ab.json", CAPS)
    _dump(root / "mwe" / "persona" / "fakepersona.jsonl", PERSONA, jsonl=True)
    _dump(root / "mwe" / "advanced-ai-risk" / "fakerisk.jsonl", PERSONA[:4], jsonl=True)
    monkeypatch.setenv("STEERLAB_DATA", str(root))
    return root


def _counts(ds: Dataset) -> Counter[Any]:
    return Counter(ds.items)


# --- formats ----------------------------------------------------------------------------------


def test_caa_format(fake_data: Path) -> None:
    ds = load_dataset("caa:fakebehav", split="test")
    assert ds.kind == "ab" and len(ds) == 5
    assert ds[0] == ABItem("Test question 0?", "(B)", "(A)")
    assert len(ds.sha256) == 64
    everything = load_dataset("caa:fakebehav", split="all")
    assert len(everything) == 25
    assert len(load_dataset("caa:fakebehav")) == 16  # the default: train (80 % of the pool)
    assert everything.sha256 == ds.sha256


def test_caa_without_test_file_is_cut_from_pool(fake_data: Path) -> None:
    parts = [load_dataset("caa:pool-only", split=s) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [6, 2, 2]


def test_persona_jsonl_keeps_leading_space(fake_data: Path) -> None:
    ds = load_dataset("mwe:fakepersona", split="all")
    assert len(ds) == 10
    assert ds[1].matching == " Yes" and ds[1].not_matching == " No"  # type: ignore[union-attr]
    assert ds[0].matching == " No"  # type: ignore[union-attr]
    assert len(load_dataset("mwe:fakerisk", split="all")) == 4  # advanced-ai-risk subfolder


def test_capabilities_format(fake_data: Path) -> None:
    ds = load_dataset("capabilities:arith")
    assert len(ds) == 6
    assert ds[2] == ABItem(CAPS[2]["prompt"], "(A)", "(B)")


def test_file_path_and_pairs_format(tmp_path: Path) -> None:
    path = _dump(tmp_path / "pairs.json", [{"positive": "Love", "negative": "Hate"},
                                           {"positive": "Weddings", "negative": " "}])
    ds = load_dataset(str(path))
    assert ds.kind == "pairs"
    assert list(ds) == [ContrastPair("Love", "Hate"), ContrastPair("Weddings", " ")]
    mem = load_pairs([("Love", "Hate")])
    assert mem.kind == "pairs" and mem[0] == ContrastPair("Love", "Hate")
    assert mem.sha256 != load_pairs([("Hate", "Love")]).sha256


@pytest.mark.parametrize("name,kind,answer", [
    ("builtin:optimism", "ab", "(A)"),
    ("builtin:optimism_statements", "ab", " Yes"),
    ("builtin:optimism_pairs", "pairs", None),
    ("builtin:actadd_pairs", "pairs", None),
])
def test_builtin_datasets_load(name: str, kind: str, answer: str | None) -> None:
    ds = load_dataset(name)
    assert ds.kind == kind
    assert len(ds) >= 8
    if answer is not None:
        answers = {item.matching for item in ds} | {item.not_matching for item in ds}  # type: ignore[union-attr]
        assert answer in answers
    if name == "builtin:actadd_pairs":
        assert ds[0] == ContrastPair("Love", "Hate")


# --- splits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["builtin:optimism", "caa:fakebehav", "mwe:fakepersona"])
def test_splits_disjoint_deterministic_and_complete(spec: str, fake_data: Path) -> None:
    full = load_dataset(spec, split="all")
    parts = {s: load_dataset(spec, split=s, seed=3) for s in ("train", "val", "test")}
    assert all(len(p) > 0 for p in parts.values())
    assert sum(len(p) for p in parts.values()) == len(full)
    assert _counts(parts["train"]) + _counts(parts["val"]) + _counts(parts["test"]) \
        == _counts(full)
    for s, part in parts.items():
        assert part.split == s
        assert load_dataset(spec, split=s, seed=3).items == part.items  # deterministic
    if spec != "caa:fakebehav":  # its test split is the fixed test_ab.json
        other = load_dataset(spec, split="test", seed=4)
        assert other.items != parts["test"].items
    else:
        assert load_dataset(spec, split="test", seed=4).items == parts["test"].items
        assert load_dataset(spec, split="train", seed=4).items != parts["train"].items


def test_split_errors() -> None:
    with pytest.raises(SteerlabError, match="unknown split 'dev'"):
        load_dataset("builtin:optimism", split="dev")
    with pytest.raises(SteerlabError, match="val_fraction"):
        load_dataset("builtin:optimism", split="train", val_fraction=1.5)


def test_subset_and_head() -> None:
    ds = load_dataset("builtin:optimism")
    assert ds.subset(10, seed=1).items == ds.subset(10, seed=1).items
    assert set(ds.subset(10, seed=1).items) <= set(ds.items)
    assert len(ds.subset(10)) == 10 and ds.subset(10**6) is ds
    assert ds.head(3).items == ds.items[:3]


# --- malformed files ---------------------------------------------------------------------------


def _error(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SteerlabError) as exc:
        load_dataset(str(path))
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_malformed_missing_field(tmp_path: Path) -> None:
    bad = [CAA_POOL[0], CAA_POOL[1], {"question": "Q?", "answer_matching_behavior": "(A)"}]
    message = _error(tmp_path, "missing.json", json.dumps(bad))
    assert "item 2" in message
    assert "'answer_not_matching_behavior'" in message
    assert "expected a string" in message and "got keys answer_matching_behavior, question" \
        in message


def test_malformed_wrong_type(tmp_path: Path) -> None:
    bad = [CAA_POOL[0], {**CAA_POOL[1], "question": 42}]
    message = _error(tmp_path, "type.json", json.dumps(bad))
    assert "item 1" in message and "field 'question'" in message
    assert "expected a non-empty string" in message and "got int" in message
    bad_pair = [{"positive": "a", "negative": ""}]
    message = _error(tmp_path, "pair.json", json.dumps(bad_pair))
    assert "item 0" in message and "field 'negative'" in message and "got str ''" in message


def test_malformed_item_not_object(tmp_path: Path) -> None:
    message = _error(tmp_path, "notobj.json", json.dumps([CAA_POOL[0], "just a string"]))
    assert "item 1" in message and "expected a JSON object, got str" in message


def test_malformed_same_answers(tmp_path: Path) -> None:
    bad = [{**CAA_POOL[0], "answer_not_matching_behavior": CAA_POOL[0]["answer_matching_behavior"]}]
    assert "item 0" in _error(tmp_path, "same.json", json.dumps(bad))


def test_invalid_json_names_line(tmp_path: Path) -> None:
    message = _error(tmp_path, "broken.json", '[\n  {"question": "Q?",\n  oops\n]')
    assert "invalid JSON at line 3" in message
    lines = [json.dumps(r) for r in PERSONA[:3]]
    lines.insert(2, "{not json")
    message = _error(tmp_path, "broken.jsonl", "\n".join(lines) + "\n")
    assert "line 3: invalid JSON" in message


def test_not_a_list(tmp_path: Path) -> None:
    message = _error(tmp_path, "obj.json", json.dumps({"question": "Q?"}))
    assert "expected a JSON list of items, got dict" in message


def test_empty_and_binary_files(tmp_path: Path) -> None:
    assert "no items" in _error(tmp_path, "empty.json", "[]")
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SteerlabError, match="not UTF-8"):
        load_dataset(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SteerlabError, match="file not found"):
        load_dataset(str(tmp_path / "nope.json"))


# --- name resolution -------------------------------------------------------------------------


def test_missing_steerlab_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERLAB_DATA", str(tmp_path / "missing"))
    with pytest.raises(SteerlabError, match=r"STEERLAB_DATA=.*missing: not a directory"):
        data_dir()
    with pytest.raises(SteerlabError, match="not a directory"):
        load_dataset("caa:sycophancy")


def test_unknown_names(fake_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_dir() == fake_data
    with pytest.raises(SteerlabError, match=r"unknown CAA behaviour 'nope'.*known: fakebehav, "
                                            r"pool-only"):
        load_dataset("caa:nope")
    with pytest.raises(SteerlabError, match="unknown CAA behaviour 'capabilities'"):
        load_dataset("caa:capabilities")
    with pytest.raises(SteerlabError, match=r"unknown mwe dataset 'nope'.*fakepersona"):
        load_dataset("mwe:nope")
    with pytest.raises(SteerlabError, match=r"unknown capabilities dataset 'nope'.*known: arith"):
        load_dataset("capabilities:nope")
    with pytest.raises(SteerlabError, match=r"unknown built-in dataset 'nope'.*optimism"):
        load_dataset("builtin:nope")
    with pytest.raises(SteerlabError, match="unknown dataset scheme 'hf'"):
        load_dataset("hf:foo")
    with pytest.raises(SteerlabError, match="invalid dataset name"):
        load_dataset("builtin:../optimism")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("STEERLAB_DATA", str(empty))
    with pytest.raises(SteerlabError, match=r"unknown CAA behaviour 'x'.*known: none"):
        load_dataset("caa:x")


# --- prompts -----------------------------------------------------------------------------------


def _no_template() -> Any:
    tok = copy.deepcopy(tiny_tokenizer())
    tok.chat_template = None
    return tok


def test_chat_prompt_fallback_without_template() -> None:
    class Bare:
        chat_template = None

    assert chat_prompt(Bare(), "Hi?", "(") == "Question: Hi?\nAnswer: ("
    assert chat_prompt(Bare(), "Hi?", system="Be nice.") == "Be nice.\n\nQuestion: Hi?\nAnswer:"
    assert chat_prompt(_no_template(), "Hi?") == "Question: Hi?\nAnswer:"


def test_chat_prompt_with_template() -> None:
    tok = tiny_tokenizer()
    text = chat_prompt(tok, "Hi?", "(", system="Be nice.")
    assert text == ("<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n"
                    "<|im_start|>assistant\n(")


@pytest.mark.parametrize("templated", [True, False])
def test_ab_sequences_letter_token(templated: bool) -> None:
    tok = tiny_tokenizer() if templated else _no_template()
    item = ABItem("Is the sky blue?\n\nChoices:\n (A) Yes\n (B) No", "(A)", "(B)")
    ab = ab_sequences(tok, item)
    assert tok.decode([ab.matching_id]).strip() == "A"
    assert tok.decode([ab.not_matching_id]).strip() == "B"
    assert tok.decode(ab.prefix).endswith("(")
    # the answer is the assistant's prefill ("Answer: (A" without a template)
    assert tok.decode(ab.matching) == chat_prompt(tok, item.question, "(A")
    assert ab.matching[-1] == ab.matching_id and ab.not_matching[:-1] == ab.prefix
    assert ab.prefix == encode(tok, chat_prompt(tok, item.question, "(A)"))[:len(ab.prefix)]


@pytest.mark.parametrize("templated", [True, False])
def test_ab_sequences_yes_no(templated: bool) -> None:
    tok = tiny_tokenizer() if templated else _no_template()
    ab = ab_sequences(tok, ABItem("Is the following statement something you would say?\n\"X\"",
                                  " Yes", " No"))
    yes, no = tok.decode([ab.matching_id]).strip(), tok.decode([ab.not_matching_id]).strip()
    assert yes.startswith("Y") and "Yes".startswith(yes)
    assert no.startswith("N") and "No".startswith(no)
    assert tok.decode(ab.matching).startswith(chat_prompt(tok, "Is the following statement "
                                                               "something you would say?\n\"X\""))


def test_ab_sequences_answers_that_do_not_differ() -> None:
    with pytest.raises(SteerlabError, match="do not differ"):
        ab_sequences(tiny_tokenizer(), ABItem("Q?", "(A)", " (A) "))
