"""``eval sentiment`` measured honestly: the masked control, the fluency ratio, the verdict rule
and the classifier's training / caching (with a stub embedder: no model, no shared data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.eval.protocols import sentiment as sent
from steerlab.eval.protocols import sentiment_scores as sc
from steerlab.model.load import LoadedModel
from steerlab.scoring import sentiment_classifier as clf_mod
from steerlab.testing.tiny import tiny_lm
from steerlab.vector import SteeringVector


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return tiny_lm("llama")


@pytest.fixture(scope="module")
def vec() -> SteeringVector:
    torch.manual_seed(5)
    return SteeringVector.from_directions({k: torch.randn(64) for k in range(4)})

# ------------------------------------------------------------------------ masking


def test_masking_removes_the_steering_words_and_their_family() -> None:
    texts = ["I LOVE this film, I loved it and Loving it is lovely.",
             "Hatred: they hate, hated, hates and are hateful haters.",
             "Lovecraft's hat, whatever, a beloved chateau."]
    masked = sc.mask_words(texts, [" love", " hate"])
    for line in masked[:2]:
        assert not sc.contains_words([line], ["love", "hate"])[0], line
        assert "lov" not in line.lower() and "hat" not in line.lower(), line
    assert masked[0] == "I this film, I it and it is."
    assert masked[2] == texts[2]  # other words that merely contain the letters are kept
    assert sc.contains_words(texts, ["love"]) == [True, False, False]
    assert sc.mask_words(texts, []) == texts
    with pytest.raises(SteerlabError, match="empty word"):
        sc.word_family("  ")


def test_steering_words_come_from_the_pair_or_the_vector() -> None:
    assert sc.steering_words((" love", " hate")) == ["love", "hate"]
    assert sc.steering_words(("I talk about weddings", "I talk about")) == [
        "i", "talk", "about", "weddings"]
    vec = SteeringVector.from_directions({1: torch.ones(2, 4)}, pair_tokens=[
        ["<|endoftext|>", " Love"], ["<|endoftext|>", " Hate"]])
    assert sc.steering_words(None, vec) == ["love", "hate"]
    assert sc.steering_words(None, SteeringVector.from_directions({1: torch.ones(4)})) == []


# ------------------------------------------------------------------------ fluency ratio, verdict


def test_ppl_ratio_is_paired_per_prompt() -> None:
    # 2 prompts × 2 samples: prompt 0 NLL +log 2 (one sample empty), prompt 1 +0
    base = [0.0, 0.0, 1.0, 1.0]
    steered = [math.log(2.0), None, 1.0, 1.0]
    value, low, high, n = sc.ppl_ratio(steered, base, samples=2)
    assert n == 2 and value == pytest.approx(math.sqrt(2.0))
    assert low < value < high
    assert math.isnan(sc.ppl_ratio([None], [0.0])[0])
    with pytest.raises(SteerlabError, match="equal-length"):
        sc.ppl_ratio([0.0], [0.0, 1.0])


def test_verdict_fails_on_fluency_and_needs_the_masked_shift() -> None:
    good, fluent = (0.20, 0.10, 0.30), (1.20, 1.10, 1.30)
    assert sc.judge_sentiment(good, (0.1, 0.02, 0.2), fluent).verdict == sc.HOLDS
    # the same shifts but the completions' perplexity rose by more than half: fails fluency
    broken = sc.judge_sentiment(good, (0.1, 0.02, 0.2), (1.51, 1.40, 1.62))
    assert broken.verdict == sc.FAILS and broken.reason.startswith("fails fluency")
    assert broken.numbers["ppl_ratio"] == [1.51, 1.40, 1.62]
    assert sc.judge_sentiment(good, (0.1, 0.02, 0.2), (1.5, 1.4, 1.6)).verdict == sc.HOLDS
    # raw shift up, but gone once love/hate are masked: the words alone
    words = sc.judge_sentiment(good, (0.01, -0.05, -0.001), fluent, mask_share=0.95)
    assert words.verdict == sc.FAILS and "words alone" in words.reason
    assert words.warnings and "95%" in words.warnings[0]
    assert sc.judge_sentiment(good, (0.05, -0.05, 0.15), fluent).verdict == sc.UNSURE
    assert sc.judge_sentiment((-0.1, -0.2, -0.01), None, fluent).verdict == sc.FAILS
    # toxicity: the target is down
    assert sc.judge_sentiment((-0.2, -0.3, -0.1), (-0.2, -0.3, -0.1), fluent,
                              sign=-1).verdict == sc.HOLDS
    assert sc.judge_sentiment(None, None, fluent).verdict == sc.UNSURE


def test_judge_run_reads_a_saved_cell(tmp_path: Path) -> None:
    from steerlab.eval.run import EvalRun
    from steerlab.eval.store import make_record

    fields = {"data": "sentiment:negative", "layer": 6, "n": 100, "coefficient": 5.0,
              "target": "positive", "as_strength": 1.52}
    store = EvalRun(tmp_path, "sentiment", {})
    store.add("c1", [make_record("shift", 0.2, ci=(0.1, 0.3), **fields),
                     make_record("shift_masked", 0.1, ci=(0.05, 0.2), **fields),
                     make_record("ppl_ratio", 1.7, ci=(1.6, 1.8), **fields)])
    verdict = sc.judge_run(tmp_path, "negative", 5.0)
    assert verdict.verdict == sc.FAILS and verdict.reason.startswith("fails fluency")
    assert "strength 1.52" in verdict.reason and "n = 100" in verdict.reason
    assert sc.judge_run(tmp_path, "neutral", 5.0).verdict == sc.UNSURE


# ------------------------------------------------------------------------ records of a cell


def test_cell_records_carry_the_control_vader_and_the_ratio(lm: LoadedModel, vec: SteeringVector,
                                                            tmp_path: Path) -> None:
    from steerlab.eval.run import EvalRun

    def stub(texts: list[str]) -> list[float]:
        return [0.9 if "love" in t else 0.6 if "good" in t else 0.2 for t in texts]

    run = sent.CellRunner(lm, vec, EvalRun(tmp_path, "sentiment", {}), stub, "sentiment",
                          "positive", "coefficient", "front", 1, 4, True, 1.0, 1.0, 0, 4,
                          kind=sc.KINDS["classifier"], second=sc.vader_scorer(),
                          mask=("love", "hate"))
    got = run.score(["I love it", "good film", "dull"])
    got.nll = [math.log(3.0), math.log(3.0), None]
    base = run.score(["dull", "dull", "good film"])
    base.nll = [math.log(2.0), math.log(2.0), math.log(2.0)]
    assert got.masked == [0.2, 0.6, 0.2]  # "I it" scores as plain text
    records = {r["metric"]: r for r in sent.cell_records(run, got, base, n=3)}
    assert records["p_positive"]["value"] == pytest.approx((0.9 + 0.6 + 0.2) / 3)
    assert records["success_rate"]["value"] == pytest.approx(2 / 3)  # p > 0.5
    assert records["shift"]["value"] == pytest.approx((0.7 + 0.4 - 0.4) / 3)
    assert records["shift_masked"]["value"] == pytest.approx((0.0 + 0.4 - 0.4) / 3)
    assert records["mask_rate"]["value"] == pytest.approx(1 / 3)
    assert records["compound"]["value"] > 0 and "shift_vader" in records
    assert "shift_vader_masked" in records
    assert records["ppl_ratio"]["value"] == pytest.approx(1.5)
    assert records["ppl_ratio"]["n"] == 2  # the prompt with an empty completion left out
    assert run.sign == 1
    # a baseline read back from the store keeps every completion's scores and word flags (the
    # value-0 cell reuses it: its word rate is over all completions, not the stored examples)
    from steerlab.eval.protocols.sentiment_cells import _stored

    run.store.add("base", sent.cell_records(run, got, None, n=3, baseline=True))
    again = _stored(run, "base")
    assert again.has_words == [True, False, False] and again.masked == got.masked
    assert again.second == got.second and again.nll == got.nll
    rate = {r["metric"]: r for r in sent.cell_records(run, again, again, n=3)}["mask_rate"]
    assert rate["value"] == pytest.approx(1 / 3) and rate["extra"]["has_words"] == [
        True, False, False]


# ------------------------------------------------------------------------ classifier, stubbed


class _LetterEmbedder:
    """Stands in for MiniLM: the embedding says whether the text has a 'g' (good) or a 'b'."""

    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = torch.zeros(len(texts), 384)
        for i, t in enumerate(texts):
            out[i, 0] = float("g" in t) - float("b" in t)
            out[i, 1] = 1.0
        return out


def test_classifier_trains_holds_out_and_caches_without_pickle(tmp_path: Path) -> None:
    rows = [f"{i}\t{2.5 if i % 2 else -2.5}\t{'good' if i % 2 else 'bad'} film {i}"
            for i in range(200)] + [f"{i}\t0.1\tneutral {i}" for i in range(200, 240)]
    data = tmp_path / "reviews.tsv"
    data.write_text("\n".join(rows) + "\n")
    clf = clf_mod.train_classifier(data, embedder=_LetterEmbedder())  # type: ignore[arg-type]
    meta = clf.meta
    assert meta["n_train"] + meta["n_test"] == 200  # the neutral band is left out
    assert meta["n_test"] == 40 and meta["test_accuracy"] == 1.0
    assert meta["test_accuracy_ci"][0] > 0.9 and meta["data_sha256"]
    assert clf.p_positive(["a good one", "a bad one", ""])[2] == 0.5
    p_good, p_bad = clf.p_positive(["a good one", "a bad one"])
    assert p_good > 0.5 > p_bad
    saved = clf.save(tmp_path / "clf")
    assert sorted(p.name for p in saved.iterdir()) == ["classifier.json",
                                                       "classifier.safetensors"]
    again = clf_mod.SentimentClassifier.load(saved)
    again.embedder = _LetterEmbedder()  # type: ignore[assignment]
    assert again.p_positive(["a good one"])[0] == pytest.approx(p_good, abs=1e-6)
    assert again.meta == json.loads(json.dumps(meta))
    key = clf_mod.cache_key(data)
    data.write_text("\n".join(rows[:-1]) + "\n")
    assert clf_mod.cache_key(data) != key  # keyed by the data's hash


def test_classifier_refuses_one_sided_data(tmp_path: Path) -> None:
    data = tmp_path / "r.tsv"
    data.write_text("".join(f"{i}\t2\tgood {i}\n" for i in range(20)))
    with pytest.raises(SteerlabError, match="both signs"):
        clf_mod.train_classifier(data, embedder=_LetterEmbedder())  # type: ignore[arg-type]
