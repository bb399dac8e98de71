"""Tests for steerlab.extract: recording (truncated, padding-aware) and the four methods."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from sklearn.decomposition import PCA
from torch import nn

from steerlab.data import ABItem, ContrastPair, load_dataset, load_pairs
from steerlab.data.sequences import ab_sequences
from steerlab.errors import SteerlabError
from steerlab.extraction import extract, pair_sequences
from steerlab.extraction.methods.mean_diff import MeanDiff
from steerlab.extraction.methods.pca import pca_direction
from steerlab.extraction.methods.probe import probe_direction
from steerlab.extraction.record import record
from steerlab.model.arch import find_blocks
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.testing.tiny import ARCHS, tiny_model, tiny_tokenizer
from steerlab.vector import cosine

N_LAYERS = 4
ATOL = 1e-5


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return as_loaded(tiny_model("llama", n_layers=N_LAYERS), tiny_tokenizer())


@pytest.fixture(scope="module")
def ab_items() -> list[ABItem]:
    items = load_dataset("builtin:optimism").head(7).items
    return [i for i in items if isinstance(i, ABItem)]


@pytest.fixture(scope="module")
def pair_items() -> list[ContrastPair]:
    items = load_dataset("builtin:optimism_pairs").head(8).items
    return [i for i in items if isinstance(i, ContrastPair)]


def _hidden_states(model: nn.Module, seq: list[int]) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([seq]), output_hidden_states=True)
    return tuple(out.hidden_states)


def _without_final_norm(model: nn.Module) -> nn.Module:
    """A copy whose last hidden state is the raw output of the last block (no final norm)."""
    clone = copy.deepcopy(model)
    base = clone.get_decoder() if hasattr(clone, "get_decoder") else clone
    for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm"):
        if isinstance(getattr(base, name, None), nn.Module):
            setattr(base, name, nn.Identity())
            return clone
    raise AssertionError(f"no final norm found in {type(base).__name__}")


@contextmanager
def _count_calls(model: nn.Module) -> Iterator[Counter[str]]:
    calls: Counter[str] = Counter()
    _, blocks = find_blocks(model)
    # pre-hooks, registered first: they see every block the forward enters
    handles = [b.register_forward_pre_hook(lambda *_a, i=i: calls.update([f"block{i}"]))
               for i, b in enumerate(blocks)]
    head = model.get_output_embeddings()
    handles.append(head.register_forward_pre_hook(lambda *_a: calls.update(["lm_head"])))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


# --- mean_diff against a hand computation ----------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_mean_diff_matches_manual_forward(arch: str, ab_items: list[ABItem]) -> None:
    tok = tiny_tokenizer()
    model = tiny_model(arch, n_layers=N_LAYERS)
    vec = extract(as_loaded(model, tok), ab_items, layers="all", batch_size=4, progress=False)
    # hidden_states[k + 1] is the output of block k, read at the answer token = the last token
    # of prefix + answer; the last entry has the final norm applied, so layer n-1 is read from a
    # copy of the model without it
    plain, raw_last = model, _without_final_norm(model)
    diffs: dict[int, list[torch.Tensor]] = {k: [] for k in range(N_LAYERS)}
    for item in ab_items:
        ab = ab_sequences(tok, item)
        assert ab.matching[:-1] == ab.not_matching[:-1]
        pos, neg = _hidden_states(plain, ab.matching), _hidden_states(plain, ab.not_matching)
        for k in range(N_LAYERS - 1):
            diffs[k].append(pos[k + 1][0, -1] - neg[k + 1][0, -1])
        pos, neg = _hidden_states(raw_last, ab.matching), _hidden_states(raw_last, ab.not_matching)
        diffs[N_LAYERS - 1].append(pos[N_LAYERS][0, -1] - neg[N_LAYERS][0, -1])
    assert vec.layers == list(range(N_LAYERS))
    for k in range(N_LAYERS):
        expected = torch.stack(diffs[k]).mean(0)
        assert torch.allclose(vec.directions[k], expected, atol=ATOL), (arch, k)
        assert vec.directions[k].norm() > 0


def test_mean_diff_pairs_read_last_token_and_resid_norms(lm: LoadedModel,
                                                         pair_items: list[ContrastPair]) -> None:
    vec = extract(lm, pair_items, layers=[1], batch_size=5, progress=False)
    assert vec.manifest["read_position"] == "last_token"
    seqs, _ = pair_sequences(lm, pair_items)
    hs = [_hidden_states(lm.model, s)[2][0] for s in seqs]  # output of block 1, [T, d]
    expected = torch.stack([hs[i][-1] - hs[i + 1][-1] for i in range(0, len(hs), 2)]).mean(0)
    assert torch.allclose(vec.directions[1], expected, atol=ATOL)
    # residual-norm calibration: mean L2 norm over real tokens, each row's first token excluded
    norms = torch.cat([h[1:].norm(dim=-1) for h in hs])
    assert vec.resid_norm(1) == pytest.approx(float(norms.mean()), rel=1e-5)
    stats = vec.manifest["stats"]["1"]
    assert stats["n_pairs"] == len(pair_items)
    assert 0.0 < stats["consistency"] <= 1.0


# --- the recorder --------------------------------------------------------------------------


def test_truncated_forward_runs_no_deeper_block(lm: LoadedModel) -> None:
    seqs = [[5, 6, 7, 8], [9, 10, 11]]
    with _count_calls(lm.model) as calls:
        batches = list(record(lm.model, seqs, layers=[0, 1], read="last"))
    assert calls == Counter({"block0": 1, "block1": 1})  # blocks 2, 3 and the LM head skipped
    with _count_calls(lm.model) as calls:
        list(record(lm.model, seqs, layers=[2], site="block_input"))
    # block 2 is entered (its pre-hook reads the input and stops) but block 3 never is
    assert calls == Counter({"block0": 1, "block1": 1, "block2": 1})
    with _count_calls(lm.model) as calls:
        list(record(lm.model, seqs, layers=[3]))
    assert calls == Counter({f"block{i}": 1 for i in range(4)})
    # identical to a full forward
    for row, seq in enumerate(seqs):
        hs = _hidden_states(lm.model, seq)
        for k in (0, 1):
            assert torch.allclose(batches[0].acts[k][row], hs[k + 1][0, -1], atol=1e-6)
    assert batches[0].lengths == [4, 3]


def test_record_all_positions_equal_full_forward(lm: LoadedModel) -> None:
    seq = [5, 6, 7, 8, 9]
    (batch,) = record(lm.model, [seq, seq[::-1]], layers=[1], read="all")
    assert batch.acts[1].shape == (2, 5, 64)
    assert torch.allclose(batch.acts[1][0], _hidden_states(lm.model, seq)[2][0], atol=1e-6)
    with pytest.raises(SteerlabError, match="equal length"):
        list(record(lm.model, [seq, seq[:3]], layers=[1], read="all"))


def test_record_hooks_are_removed(lm: LoadedModel) -> None:
    _, blocks = find_blocks(lm.model)

    def hooks() -> list[tuple[int, ...]]:
        # transformers installs its own permanent output-capturing hooks; compare with those
        return [(*b._forward_hooks, *b._forward_pre_hooks) for b in blocks]

    before = hooks()
    list(record(lm.model, [[1, 2, 3]], layers=[0, 2], site="block_input"))
    list(record(lm.model, [[1, 2, 3]], layers=[1]))
    with pytest.raises(SteerlabError):
        list(record(lm.model, [[1, 2, 3], []], layers=[1, 3]))
    gen = record(lm.model, [[1, 2], [3, 4]], layers=[1], batch_size=1)
    next(gen)
    gen.close()  # abandoned half-way
    assert hooks() == before


def test_record_errors(lm: LoadedModel) -> None:
    with pytest.raises(SteerlabError, match="out of range"):
        list(record(lm.model, [[1, 2]], layers=[4]))
    with pytest.raises(SteerlabError, match="no layers"):
        list(record(lm.model, [[1, 2]], layers=[]))
    with pytest.raises(SteerlabError, match="unknown site"):
        list(record(lm.model, [[1, 2]], layers=[0], site="mlp"))
    with pytest.raises(SteerlabError, match="read position"):
        list(record(lm.model, [[1, 2]], layers=[0], read="first"))
    with pytest.raises(SteerlabError, match="empty token sequence"):
        list(record(lm.model, [[1, 2], []], layers=[0]))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3", "opt"])
def test_batch_size_does_not_change_vector(arch: str, ab_items: list[ABItem]) -> None:
    lm = as_loaded(tiny_model(arch, n_layers=N_LAYERS), tiny_tokenizer())
    seqs, _ = pair_sequences(lm, ab_items)
    assert len({len(s) for s in seqs}) > 1  # rows really are padded
    one = extract(lm, ab_items, layers="all", batch_size=1, progress=False)
    seven = extract(lm, ab_items, layers="all", batch_size=7, progress=False)
    for k in one.layers:
        assert torch.allclose(one.directions[k], seven.directions[k], atol=ATOL), (arch, k)
        assert one.resid_norm(k) == pytest.approx(seven.resid_norm(k), rel=1e-5)


def test_block_input_equals_previous_block_output(lm: LoadedModel,
                                                  ab_items: list[ABItem]) -> None:
    inp = extract(lm, ab_items, layers=[1, 2, 3], site="block_input", progress=False)
    out = extract(lm, ab_items, layers=[0, 1, 2], site="block_output", progress=False)
    assert inp.site == "block_input"
    for k in (1, 2, 3):
        assert torch.allclose(inp.directions[k], out.directions[k - 1], atol=ATOL)
    # block 0's input is the embedding output
    seqs, _ = pair_sequences(lm, ab_items[:1])
    (batch,) = record(lm.model, seqs, layers=[0], site="block_input")
    for row, seq in enumerate(seqs):
        assert torch.allclose(batch.acts[0][row], _hidden_states(lm.model, seq)[0][0, -1])


# --- pca / probe / actadd --------------------------------------------------------------------


def _diffs(lm: LoadedModel, items: list[Any], layer: int) -> torch.Tensor:
    seqs, _ = pair_sequences(lm, items)
    acts = torch.cat([b.acts[layer] for b in record(lm.model, seqs, [layer], batch_size=4)])
    return (acts[0::2] - acts[1::2]).double()


def test_pca_direction(lm: LoadedModel, pair_items: list[ContrastPair]) -> None:
    vec = extract(lm, pair_items, method="pca", layers=[1, 2], progress=False)
    for k in (1, 2):
        direction = vec.directions[k]
        stats = vec.manifest["stats"][str(k)]
        assert direction.norm().item() == pytest.approx(1.0, abs=1e-5)
        diffs = _diffs(lm, pair_items, k)
        projections = diffs @ direction.double()
        agreement = float((projections > 0).double().mean())
        assert agreement >= 0.5
        assert stats["sign_agreement"] == pytest.approx(agreement)
        reference = PCA(n_components=1).fit(diffs.numpy())
        ref = torch.from_numpy(reference.components_[0])
        assert abs(cosine(direction, ref)) >= 0.9999
        assert stats["explained_variance"] == pytest.approx(
            float(reference.explained_variance_ratio_[0]), rel=1e-4)


def test_pca_sign_fixed_by_majority() -> None:
    gen = torch.Generator().manual_seed(0)
    axis = torch.zeros(8)
    axis[0] = 1.0
    diffs = torch.randn(40, 8, generator=gen) * 0.1 + torch.linspace(0.5, 3, 40)[:, None] * axis
    direction, stats = pca_direction(diffs)
    assert direction[0] > 0.9 and stats["sign_agreement"] == 1.0
    flipped, _ = pca_direction(-diffs)
    assert torch.allclose(flipped, -direction, atol=1e-6)
    with pytest.raises(SteerlabError, match="at least 2 pairs"):
        pca_direction(diffs[:1])


def test_probe_direction_separates(lm: LoadedModel, pair_items: list[ContrastPair]) -> None:
    vec = extract(lm, pair_items, method="probe", layers=[2], progress=False)
    direction = vec.directions[2]
    assert direction.norm().item() == pytest.approx(1.0, abs=1e-5)
    seqs, _ = pair_sequences(lm, pair_items)
    acts = torch.cat([b.acts[2] for b in record(lm.model, seqs, [2])])
    pos, neg = acts[0::2] @ direction, acts[1::2] @ direction
    assert pos.mean() > neg.mean()
    assert vec.manifest["stats"]["2"]["train_accuracy"] >= 0.9
    # synthetic clusters: the probe recovers the separating axis
    gen = torch.Generator().manual_seed(1)
    shift = torch.tensor([4.0, 0, 0, 0, 0, 0])
    p = torch.randn(60, 6, generator=gen) + shift
    n = torch.randn(60, 6, generator=gen)
    w, stats = probe_direction(p, n)
    assert w[0] > 0.9 and stats["train_accuracy"] > 0.95


def _tokens(lm: LoadedModel, text: str) -> list[int]:
    return list(lm.tokenizer(text)["input_ids"])


def test_actadd_rows_start_on_the_document_start_token(lm: LoadedModel) -> None:
    """The tiny tokenizer adds no BOS (like SmolLM2 and Qwen): both prompts get its
    <|endoftext|> in front, so row 0 is that token's difference (zero: the same token with
    nothing before it) and row 1 lands on the first word — the paper's BOS on BOS."""
    start = lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    hate, soft = _tokens(lm, "Hate"), _tokens(lm, "hate")
    assert len(hate) == len(soft) == 3 and start not in hate  # aligned; no BOS added
    vec = extract(lm, ("Hate", "hate"), method="actadd", layers=[0, 2], progress=False)
    assert vec.site == "block_input" and vec.manifest["read_position"] == "all_positions"
    assert vec.manifest["document_start"] == {"id": start, "token": "<|endoftext|>",
                                              "prefixed": True}
    assert vec.manifest["pad"] is None
    assert vec.manifest["pair_tokens"] == [["<|endoftext|>", "H", "at", "e"],
                                           ["<|endoftext|>", "h", "at", "e"]]
    for k in (0, 2):
        assert vec.directions[k].shape == (4, 64)
        assert torch.equal(vec.directions[k][0], torch.zeros(64))  # row 0: start − start
        pos, neg = (_hidden_states(lm.model, [start, *s])[k][0] for s in (hate, soft))
        assert torch.allclose(vec.directions[k], pos - neg, atol=ATOL)
        assert vec.directions[k][1].norm() > 0  # row 1: the first word's difference
    assert vec.manifest["dataset"]["n_pairs"] == 1
    assert vec.manifest["resid_norms"] is not None  # the words count, the start token not
    out = extract(lm, ("Hate", "hate"), method="actadd", layers=[1], site="block_output",
                  progress=False)
    assert out.site == "block_output" and out.directions[1].shape == (4, 64)


def test_actadd_keeps_a_start_token_the_tokenizer_adds(lm: LoadedModel) -> None:
    """A tokenizer that adds its BOS itself (Llama, Gemma) gets no second one."""
    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(lm.tokenizer)
    tok._tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A",
                                                       special_tokens=[("<|endoftext|>", 0)])
    assert tok("Hate")["input_ids"][0] == 0
    vec = extract(lm.model, ("Hate", "hate"), method="actadd", layers=[1], tokenizer=tok,
                  progress=False)
    assert vec.manifest["document_start"] == {"id": 0, "token": "<|endoftext|>",
                                              "prefixed": False}
    assert vec.directions[1].shape == (4, 64)  # one start token, not two
    assert vec.manifest["pair_tokens"][0] == ["<|endoftext|>", "H", "at", "e"]


def test_actadd_refuses_pairs_that_do_not_line_up(lm: LoadedModel) -> None:
    love, hate = _tokens(lm, "Love"), _tokens(lm, "Hate")
    assert len(love) == 4 and len(hate) == 3  # "Hate" splits differently from "Love"
    with pytest.raises(SteerlabError) as exc:
        extract(lm, ("Love", "Hate"), method="actadd", layers=[1], progress=False)
    message = str(exc.value)
    assert "\n" not in message
    assert "['L', 'o', 'v', 'e'] vs ['H', 'at', 'e']" in message  # both tokenizations
    assert "leading space" in message and "pad='space'" in message and "--pad space" in message
    # padding only where asked: the shorter is right-padded with space tokens (the paper's)
    vec = extract(lm, ("Love", "Hate"), method="actadd", layers=[0, 2], pad="space",
                  progress=False)
    space = lm.tokenizer(" ", add_special_tokens=False)["input_ids"]
    assert len(space) == 1 and vec.manifest["pad"] == "space"
    padded = [[0, *love], [0, *hate, *space]]
    assert vec.manifest["pair_tokens"][1] == ["<|endoftext|>", "H", "at", "e", " "]
    for k in (0, 2):
        pos, neg = (_hidden_states(lm.model, s)[k][0] for s in padded)
        assert torch.allclose(vec.directions[k], pos - neg, atol=ATOL)
    with pytest.raises(SteerlabError, match="pad must be one of space"):
        extract(lm, ("Love", "Hate"), method="actadd", pad="zeros", progress=False)
    with pytest.raises(SteerlabError, match="pad= applies to ActAdd"):
        extract(lm, [ContrastPair("a b", "c d")], pad="space", progress=False)


def test_actadd_refusal_suggests_a_spelling_that_lines_up() -> None:
    """When a leading space (then lower case) makes the pair line up, the message says so."""
    from steerlab.extraction import actadd_pair

    class Words:  # one token per word, but "Hate" (no leading space) splits in two
        chat_template = None

        def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
            ids = [2 if w == "Hate" else 3 for w in text.split(" ") if w]
            return {"input_ids": ([1] if text.startswith(" ") else []) + ids +
                    ([4] if text == "Hate" else [])}

        def decode(self, ids: list[int]) -> str:
            return str(ids[0])

        def get_vocab(self) -> dict[str, int]:
            return {}

    with pytest.raises(SteerlabError, match=r"e\.g\. ' Love'/' Hate' line up"):
        actadd_pair(Words(), ContrastPair("Love", "Hate"))


def test_identical_or_empty_pairs_are_refused(lm: LoadedModel) -> None:
    for data, method in ((("Love", "Love"), "actadd"), ([ContrastPair("a b", "a b")], "mean_diff"),
                         ([("good", "bad"), ("same", "same")], "mean_diff")):
        with pytest.raises(SteerlabError) as exc:
            extract(lm, data, method=method, layers=[1], progress=False)  # type: ignore[arg-type]
        assert "positive and negative texts are both" in str(exc.value)
        assert "\n" not in str(exc.value)
    with pytest.raises(SteerlabError, match="the positive text is empty"):
        extract(lm, ("", "hate"), method="actadd", layers=[1], progress=False)
    with pytest.raises(SteerlabError, match="pair 0: positive and negative texts are both 'x'"):
        load_pairs([("x", "x")])
    with pytest.raises(SteerlabError, match="negative text is empty"):
        load_pairs([("x", "")])


def test_manifest_contents(lm: LoadedModel) -> None:
    ds = load_dataset("builtin:optimism", split="train").head(4)
    vec = extract(lm, ds, layers="1-2", progress=False)
    m = vec.manifest
    assert m["method"] == "mean_diff" and m["site"] == "block_output"
    assert m["read_position"] == "answer_token"
    assert m["n_layers"] == N_LAYERS and m["hidden_size"] == 64
    assert m["dataset"] == {"name": "builtin:optimism", "sha256": ds.sha256, "split": "train",
                            "n_pairs": 4}
    assert len(m["dataset"]["sha256"]) == 64
    assert set(m["resid_norms"]) == {"1", "2"} and all(v > 0 for v in m["resid_norms"].values())
    assert set(m["stats"]) == {"1", "2"} and m["stats"]["1"]["n_pairs"] == 4
    assert m["format_version"] == 1 and m["model_id"]
    assert vec.coefficient_for_strength(1, 1.0) > 0
    mem = extract(lm, [ContrastPair("a b", "c d")], layers=[0], progress=False)
    assert mem.manifest["dataset"]["name"] == "in-memory"


def test_bare_model_with_tokenizer(lm: LoadedModel) -> None:
    a = extract(lm.model, [ContrastPair("good", "bad")], layers=[1], tokenizer=lm.tokenizer,
                progress=False)
    b = extract(lm, [ContrastPair("good", "bad")], layers=[1], progress=False)
    assert torch.equal(a.directions[1], b.directions[1])
    with pytest.raises(SteerlabError, match="needs a tokenizer"):
        extract(lm.model, [ContrastPair("good", "bad")], layers=[1], progress=False)


def test_extract_errors(lm: LoadedModel, ab_items: list[ABItem]) -> None:
    with pytest.raises(SteerlabError, match="unknown method 'cca'"):
        extract(lm, ab_items, method="cca")
    with pytest.raises(SteerlabError, match="no contrast items"):
        extract(lm, [], progress=False)
    with pytest.raises(SteerlabError, match="no contrast items"):
        extract(lm, load_pairs([]), progress=False)
    with pytest.raises(SteerlabError, match="exactly one"):
        extract(lm, [ContrastPair("a", "b"), ContrastPair("c", "d")], method="actadd")
    with pytest.raises(SteerlabError, match="exactly one"):
        extract(lm, ab_items[:1], method="actadd")
    with pytest.raises(SteerlabError, match="mix kinds"):
        extract(lm, [ab_items[0], ContrastPair("a", "b")], progress=False)
    with pytest.raises(SteerlabError, match=r"item 1: expected an ABItem, a ContrastPair or a "
                                            r"\(positive, negative\) pair"):
        extract(lm, [ab_items[0], "text"], progress=False)  # type: ignore[list-item]
    with pytest.raises(SteerlabError, match="at least 2 pairs"):
        extract(lm, ab_items[:1], method="pca", progress=False)
    with pytest.raises(SteerlabError, match="out of range"):
        extract(lm, ab_items, layers=[9], progress=False)


def test_mean_diff_accumulator_is_streaming() -> None:
    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(10, 5, generator=gen), torch.randn(10, 5, generator=gen)
    acc = MeanDiff()
    for i in range(0, 10, 3):
        acc.update(pos[i:i + 3], neg[i:i + 3])
    assert torch.allclose(acc.direction(), (pos - neg).mean(0), atol=1e-6)
    same = MeanDiff()
    same.update(torch.ones(4, 3), torch.zeros(4, 3))
    assert same.stats()["consistency"] == pytest.approx(1.0)
    with pytest.raises(SteerlabError, match="at least one pair"):
        MeanDiff().direction()


def test_single_token_data_has_no_norm_calibration(lm: LoadedModel) -> None:
    assert len(lm.tokenizer("a")["input_ids"]) == 1
    vec = extract(lm, [ContrastPair("a", "b")], layers=[1], progress=False)
    assert vec.manifest["resid_norms"] is None  # not a silent 0 that would zero every strength
    with pytest.raises(SteerlabError, match="no residual-norm calibration"):
        vec.coefficient_for_strength(1, 1.0)


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_pairs_equal_separate_forwards(arch: str) -> None:
    """Each A/B pair as one packed row (shared prefix once, custom 4-D mask) reads the same
    activations and residual norms as the two sequences run separately."""
    from steerlab.extraction.record import record_pairs

    model = tiny_model(arch)
    torch.manual_seed(0)
    prefixes = [torch.randint(3, 90, (n,)).tolist() for n in (5, 9, 3, 7, 6)]
    sequences = [seq for p in prefixes for seq in ([*p, 91], [*p, 92, 93])]

    def collect(pack: bool) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
        acts: dict[int, list[tuple[int, torch.Tensor]]] = {1: [], 2: []}
        norms = {1: 0.0, 2: 0.0}
        for batch in record_pairs(model, sequences, [1, 2], batch_size=4, pack=pack):
            order = batch.order or list(range(len(batch.lengths)))
            for k in acts:
                acts[k] += list(zip(order, batch.acts[k], strict=True))
                norms[k] += batch.norm_sum[k]
        return {k: torch.stack([a for _, a in sorted(v, key=lambda x: x[0])])
                for k, v in acts.items()}, norms

    packed, packed_norms = collect(True)
    separate, separate_norms = collect(False)
    for k in (1, 2):
        assert packed[k].shape == (len(sequences), 64)
        assert torch.allclose(packed[k], separate[k], atol=1e-5)
        assert packed_norms[k] == pytest.approx(separate_norms[k], rel=1e-5)


def test_token_batches_respect_rows_and_budget() -> None:
    from steerlab.extraction.record import TOKENS_PER_ROW, token_batches

    widths = [300, 260, 200, 200, 150, 40, 40, 40, 40, 1000]
    spans = token_batches(widths, max_rows=3, max_tokens=600)
    assert [i for span in spans for i in span] == list(range(len(widths)))  # all, in order
    for span in spans:
        rows = [widths[i] for i in span]
        assert len(rows) <= 3
        assert len(rows) == 1 or len(rows) * max(rows) <= 600
    assert spans[-1] == range(9, 10)  # too wide for the budget: alone, never dropped
    # default budget: rows * TOKENS_PER_ROW, so short rows keep the full batch size
    assert token_batches([TOKENS_PER_ROW] * 8, max_rows=4) == [range(0, 4), range(4, 8)]
    assert token_batches([TOKENS_PER_ROW + 1] * 4, max_rows=4) == [range(0, 3), range(3, 4)]


@pytest.mark.parametrize("pack", [True, False])
def test_token_budget_changes_batches_not_activations(pack: bool) -> None:
    """A tight ``max_tokens`` splits the longest pairs into smaller forwards (bounded memory)
    without changing what is read."""
    from steerlab.extraction.record import record_pairs

    model = tiny_model("llama")
    torch.manual_seed(1)
    prefixes = [torch.randint(3, 90, (n,)).tolist() for n in (30, 4, 25, 6, 5, 3)]
    sequences = [seq for p in prefixes for seq in ([*p, 91], [*p, 92, 93])]

    def run(max_tokens: int | None) -> tuple[torch.Tensor, list[int]]:
        rows: list[tuple[int, torch.Tensor]] = []
        sizes = []
        for batch in record_pairs(model, sequences, [2], batch_size=8, pack=pack,
                                  max_tokens=max_tokens):
            assert batch.order is not None
            rows += list(zip(batch.order, batch.acts[2], strict=True))
            sizes.append(len(batch.lengths))
        return torch.stack([a for _, a in sorted(rows, key=lambda x: x[0])]), sizes

    loose, loose_sizes = run(None)
    tight, tight_sizes = run(40)
    assert len(tight_sizes) > len(loose_sizes)
    assert torch.allclose(loose, tight, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_shared_prefix_cache_equals_separate_forwards(arch: str) -> None:
    """A prefix all pairs share (a chat template's system turn) runs once into a KV cache;
    every packed batch continues it. Same activations and norms as separate forwards."""
    from steerlab.extraction.record import MIN_SHARED_PREFIX, record_pairs
    from steerlab.util.seq import common_prefix

    model = tiny_model(arch)
    torch.manual_seed(2)
    system = torch.randint(3, 90, (MIN_SHARED_PREFIX + 2,)).tolist()
    prefixes = [system + torch.randint(3, 90, (n,)).tolist() for n in (5, 0, 3, 7, 6)]
    sequences = [seq for p in prefixes for seq in ([*p, 91], [*p, 92, 93])]
    assert common_prefix(sequences) == len(system)

    def collect(**options: Any) -> tuple[torch.Tensor, float, int]:
        rows: list[tuple[int, torch.Tensor]] = []
        norm, count = 0.0, 0
        for batch in record_pairs(model, sequences, [0, 2], batch_size=4, **options):
            order = batch.order or list(range(len(batch.lengths)))
            rows += list(zip(order, batch.acts[2], strict=True))
            norm, count = norm + batch.norm_sum[2], count + batch.norm_count
        return torch.stack([a for _, a in sorted(rows, key=lambda x: x[0])]), norm, count

    cached, cached_norm, cached_count = collect(reuse_prefix=True)
    separate, separate_norm, separate_count = collect(pack=False)
    assert torch.allclose(cached, separate, atol=1e-5)
    assert cached_norm == pytest.approx(separate_norm, rel=1e-5)
    assert cached_count == separate_count
