"""A new user's first hour: never silently wrong, a smooth path for one's own pairs.

* A rerun into the same run directory with any changed setting is refused with one line naming
  it (never silently reusing results measured under other settings); the same settings resume.
* Intervals respect the quantity's range; n = 1 runs end cleanly ("no interval").
* A "best layer" or a plateau is only reported when the effect is distinguishable from zero.
* Pairs given as ``[positive, negative]`` lists are accepted; one's own file uses all of its
  items by default; plain pairs can be swept and scored; chat messages are prompts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import steerlab
from steerlab.errors import SteerlabError
from steerlab.eval.run import EvalRun, choose_best
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.scoring.ab import ABResult
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.util import stats
from steerlab.vector import SteeringVector
from tests.unit.cli_runner import Cli, assert_error

# --- stale resume ------------------------------------------------------------------------------

SETTINGS = {"model": "m", "model_revision": "abc", "data": "caa:refusal",
            "data_sha256": "d1", "vector_sha256": "v1", "method": "mean_diff", "layers": "8-12",
            "positions": "all", "unit": "strength", "values": [-0.4, 0.4], "format": "open",
            "limit": 4, "train_limit": 10, "seed": 0, "judge": "local:x"}


@pytest.mark.parametrize("changed", sorted(SETTINGS))
def test_any_changed_setting_is_refused_by_name(tmp_path: Path, changed: str) -> None:
    run = EvalRun(tmp_path, "sweep", SETTINGS, progress=False)
    run.add("cell/1", [{"metric": "score", "value": 0.5}])
    EvalRun(tmp_path, "sweep", SETTINGS, progress=False)  # the same settings resume
    new = dict(SETTINGS)
    new[changed] = "something else"
    with pytest.raises(SteerlabError, match=f"{changed} was .*, now 'something else'") as err:
        EvalRun(tmp_path, "sweep", new, progress=False)
    assert "\n" not in str(err.value) and "another --out" in str(err.value)
    assert EvalRun(tmp_path, "samples", new, progress=False).command == "samples"  # per command


def test_settings_learned_after_loading_are_checked_too(tmp_path: Path) -> None:
    run = EvalRun(tmp_path, "ood", {"trait": "x"}, progress=False)
    run.update({"vector_sha256": "aaa"})
    run.add("c", [{"metric": "judge_score", "value": 5.0}])
    again = EvalRun(tmp_path, "ood", {"trait": "x"}, progress=False)
    with pytest.raises(SteerlabError, match="vector_sha256 was 'aaa', now 'bbb'"):
        again.update({"vector_sha256": "bbb"})


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, Path]]:
    root = tmp_path_factory.mktemp("hour")
    runner = Cli(root)
    model = root / "tiny"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    yield runner, model
    runner.close()


def _sweep(cli: Cli, model: Path, out: Path, *extra: str):
    return cli.run("eval", "sweep", "--model", model, "--data", "builtin:optimism", "--layers",
                   "1-2", "--strengths=-0.5,0.5", "--train-limit", "6", "--limit", "3",
                   "--format", "ab", "-o", out, *extra)


def test_a_rerun_with_other_settings_is_refused_and_one_with_the_same_resumes(
        cli: tuple[Cli, Path]) -> None:
    runner, model = cli
    out = runner.workdir / "sweep"
    first = _sweep(runner, model, out)
    assert first.rc == 0, first
    results = (out / "results.jsonl").read_text()
    again = _sweep(runner, model, out)
    assert again.rc == 0 and (out / "results.jsonl").read_text() == results
    for extra, word in ((("--limit", "4"), "limit"), (("--train-limit", "8"), "train_limit"),
                        (("--seed", "1"), "seed"), (("--positions", "prompt"), "positions")):
        res = runner.run("eval", "sweep", "--model", model, "--data", "builtin:optimism",
                         "--layers", "1-2", "--strengths=-0.5,0.5", "--train-limit", "6",
                         "--limit", "3", "--format", "ab", "-o", out, *extra)
        assert_error(res, str(out), f"{word} was", "another --out")
        assert (out / "results.jsonl").read_text() == results  # nothing overwritten
    assert SteeringVector.load(out / "vector.safetensors").manifest["dataset"]["n_pairs"] == 6


def test_n_equal_one_runs_end_without_a_traceback(cli: tuple[Cli, Path]) -> None:
    runner, model = cli
    res = _sweep(runner, model, runner.workdir / "n1", "--seed", "3", "--limit", "1")
    assert res.rc == 0, res
    assert "Traceback" not in res.err
    assert "no interval" in res.out or "too few items" in res.out


# --- intervals ---------------------------------------------------------------------------------


def test_intervals_never_leave_the_quantitys_range() -> None:
    sure = ABResult((0.99, 1.0, 0.999), (5.0, 9.0, 7.0), (0.99, 1.0, 0.99), (0.01, 0.0, 0.01))
    low, high = sure.ci95
    assert 0.0 <= low <= sure.mean <= high <= 1.0
    diffs = [1.0, 1.0, -1.0]  # differences of two probabilities at n = 3
    _, lo, hi = stats.mean_ci(diffs, bounds=(-1.0, 1.0))
    assert lo >= -1.0 and hi <= 1.0
    assert stats.mean_ci(diffs)[1] < -1.0  # unbounded it would claim the impossible
    assert math.isnan(ABResult((0.5,), (0.0,), (0.5,), (0.5,)).ci95[0])
    assert "too few" in str(ABResult((0.5,), (0.0,), (0.5,), (0.5,)))


def test_a_null_effect_is_no_finding() -> None:
    assert choose_best({3: (0.02, -0.05, 0.09), 5: (0.01, -0.1, 0.12)}).layer is None
    assert "distinguishable from zero" in choose_best({3: (0.02, -0.05, 0.09)}).reason
    assert choose_best({3: (0.3, 0.1, 0.5), 5: (0.1, 0.05, 0.15)}).layer == 3
    assert choose_best({3: (-0.3, -0.5, -0.1)}).layer is None  # the wrong way round
    assert choose_best({3: (0.4, math.nan, math.nan)}).layer is None  # n too small


def test_samples_reports_no_plateau_for_a_null_curve(tmp_path: Path) -> None:
    from steerlab.eval.protocols.samples import SamplesConfig, _summarize
    from steerlab.eval.store import make_record

    run = EvalRun(tmp_path, "samples", {}, progress=False)
    match = {"model": "m", "data": "d", "layer": 1, "split": "test"}
    for n in (1, 5, 10):
        for draw, value in enumerate((0.01, -0.02, 0.0)):
            run.add(f"c{n}/{draw}", [make_record("effect", value + draw * 0.001, n_pairs=n,
                                                 seed=draw, ci=(-0.2, 0.2), **match),
                                     make_record("cosine", 0.5, n_pairs=n, seed=draw, **match)])
    run.add("full", [make_record("effect", 0.01, n_pairs=20, seed=0, ci=(-0.1, 0.12), **match)])
    cfg = SamplesConfig(out=tmp_path, data="d", layer=1, model="m")
    result = _summarize(run, cfg, [1, 5, 10], 20, "d")
    assert result.plateau is None and "no plateau" in result.verdict


# --- one's own pairs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return as_loaded(tiny_model("llama"), tiny_tokenizer())


def test_pairs_as_lists_and_tuples_are_accepted(lm: LoadedModel, tmp_path: Path) -> None:
    pairs = [["The food was wonderful", "The food was awful"],
             ["What a lovely day", "What a dreadful day"], ["I am glad", "I am sad"]]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(pairs))
    data = steerlab.load_dataset(str(path))
    assert data.kind == "pairs" and len(data) == 3 and data.split == "all"
    from_file = steerlab.extract(lm, data, layers=[1], progress=False)
    from_tuples = steerlab.extract(lm, [tuple(p) for p in pairs], layers=[1], progress=False)
    assert torch.allclose(from_file.directions[1], from_tuples.directions[1])


def test_own_pairs_file_uses_every_item_by_default(cli: tuple[Cli, Path]) -> None:
    runner, model = cli
    path = runner.workdir / "five.json"
    path.write_text(json.dumps([[f"good {i}", f"bad {i}"] for i in range(5)]))
    res = runner.run("extract", "--model", model, "--data", path, "--layers", "1", "-o",
                     runner.workdir / "five.safetensors")
    assert res.rc == 0, res
    assert "using 5 of 5 items" in res.out and "all its items" in res.out
    vec = SteeringVector.load(runner.workdir / "five.safetensors")
    assert vec.manifest["dataset"]["n_pairs"] == 5


def test_plain_pairs_can_be_swept_and_scored(cli: tuple[Cli, Path]) -> None:
    runner, model = cli
    path = runner.workdir / "many.json"
    path.write_text(json.dumps([[f"the movie number {i} was good", f"the movie number {i} was "
                                 "bad"] for i in range(20)]))
    out = runner.workdir / "pairs_sweep"
    res = runner.run("eval", "sweep", "--model", model, "--data", path, "--layers", "1-2",
                     "--strengths=-1,1", "-o", out)
    assert res.rc == 0, res
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} >= {"val"}
    res = runner.run("score", "--model", model, "--vector", out / "vector.safetensors",
                     "--layers", "1", "--data", path, "--strengths=-1,0,1")
    assert res.rc == 0, res
    assert "open format" in res.out


def test_chat_messages_are_prompts(lm: LoadedModel) -> None:
    text = steerlab.generate(lm, ["Hello there"], max_new_tokens=4)
    as_messages = steerlab.generate(lm, [[{"role": "user", "content": "Hello there"}]],
                                    max_new_tokens=4)
    assert as_messages == text
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
               {"role": "user", "content": "How are you?"}]
    assert len(steerlab.generate(lm, [history], max_new_tokens=3)) == 1
    assert len(steerlab.generate(lm, history, max_new_tokens=3)) == 1  # one conversation
    with pytest.raises(SteerlabError, match="last message must be the user's turn"):
        steerlab.generate(lm, [history[:2]], max_new_tokens=3)


def test_recommended_layer_is_the_default_for_generate(cli: tuple[Cli, Path]) -> None:
    runner, model = cli
    vec = SteeringVector.from_directions({1: torch.randn(64), 2: torch.randn(64)},
                                         resid_norms={"1": 2.0, "2": 2.0},
                                         recommended={"layer": 2, "chosen_by": "a test"})
    path = vec.save(runner.workdir / "recommended.safetensors")
    res = runner.run("generate", "--model", model, "--vector", path, "--strengths", "0.5",
                     "--max-new-tokens", "2", "hi")
    assert res.rc == 0, res
    assert "recommended layer" in res.out and "layer 2, s=+0.5" in res.out


def test_combinations_keep_every_parent_with_its_weight() -> None:
    a = SteeringVector.from_directions({1: torch.ones(4)}, method="mean_diff",
                                       dataset={"name": "builtin:optimism"})
    b = SteeringVector.from_directions({1: torch.ones(4)}, method="pca",
                                       dataset={"name": "caa:sycophancy"})
    combo = a + 0.5 * b
    assert [(p["method"], p["weight"], p["dataset"]["name"]) for p in combo.parents()] == [
        ("mean_diff", 1.0, "builtin:optimism"), ("pca", 0.5, "caa:sycophancy")]
    assert [p["weight"] for p in (combo - b).parents()] == [1.0, 0.5, -1.0]


def test_peer_habits_steer_block_and_global_attach(lm: LoadedModel) -> None:
    vec = SteeringVector.from_directions({1: torch.randn(64)})
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        plain = lm.model(ids).logits
        with steerlab.steer(lm, vec, coefficient=4.0):
            steered = lm.model(ids).logits
        handle = steerlab.attach(lm, vec, coefficient=4.0, scope="global")
        attached = lm.model(ids).logits
        handle.remove()
        after = lm.model(ids).logits
    assert torch.equal(attached, steered)
    assert not torch.equal(steered, plain) and torch.equal(after, plain)
