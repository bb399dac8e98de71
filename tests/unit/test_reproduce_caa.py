"""``steerlab reproduce``'s CAA row by CAA's own protocol (Rimsky et al. 2023) on a tiny model:
the vector is read at the answer letter, every test item is scored after the instruction at
±1, a letter mass below 0.8 makes the verdict *not measurable*, and no validity warning is
dropped between a study and the printed table or RESULTS.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.eval import verdicts as rules
from steerlab.eval.protocols import reproduce


def test_judge_caa_not_measurable_below_the_letter_mass_rule() -> None:
    # the SmolLM2 masses: fine at -1, off the A/B format at 0 and +1
    v = rules.judge_caa((0.05, -0.02, 0.12), {-1.0: 0.80, 0.0: 0.63, 1.0: 0.08},
                        what="p(matching letter) at +1 vs -1", open_effect=(0.26, 0.05, 0.47),
                        open_what="the audit's open-answer effect",
                        warnings=["w", "w"], deviations=["model m"])
    assert v.verdict == rules.NOT_MEASURABLE
    assert "0.80 / 0.63 / 0.08 at multipliers -1 / 0 / +1" in v.reason
    assert "below 0.8 at 0, +1" in v.reason
    assert v.numbers["letter_mass"] == {"-1": 0.8, "0": 0.63, "+1": 0.08}
    assert v.numbers["open_effect"] == (0.26, 0.05, 0.47)  # beside it, not deciding it
    assert v.warnings == ["w"] and v.deviations == ["model m"]
    assert "not measurable" in v.rule and v.rule != rules.REPLICATION_RULE
    assert rules.Verdict.from_dict(json.loads(json.dumps(v.as_dict()))).deviations == ["model m"]
    # the open effect never rescues an off-format letter score, even a large one
    assert rules.judge_caa((0.3, 0.2, 0.4), {-1.0: 0.9, 0.0: 0.79, 1.0: 0.9}, what="x",
                           open_effect=(0.5, 0.4, 0.6)).verdict == rules.NOT_MEASURABLE
    assert rules.judge_caa(None, {}, what="x").verdict == rules.NOT_MEASURABLE
    persona = rules.judge_caa(None, {0.0: 0.5}, what="x", answers=("Yes", "No"))
    assert "answer-token mass p(Yes)+p(No) is 0.50" in persona.reason and "Yes/No format" in \
        persona.reason
    # on format, the shift decides
    on = {-1.0: 0.9, 0.0: 0.95, 1.0: 0.85}
    assert rules.judge_caa((0.2, 0.1, 0.3), on, what="x").verdict == rules.HOLDS
    assert rules.judge_caa((-0.2, -0.3, -0.1), on, what="x").verdict == rules.FAILS
    assert rules.judge_caa((0.01, -0.1, 0.1), on, what="x").verdict == rules.UNSURE
    # other verdicts stay as they were saved (no empty deviations field)
    assert "deviations" not in rules.judge_perplexity((1.1, 1.05, 1.2), 0.4).as_dict()


def _hidden_at(model: torch.nn.Module, ids: list[int], layer: int, position: int) -> torch.Tensor:
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0, position]  # [0] is the embeddings: block L is L + 1


def test_caa_vector_is_the_mean_difference_at_the_answer_letter(tiny_dir: Path, tmp_path: Path,
                                                                  shared_data: Path) -> None:
    from steerlab.data.loaders import load_dataset
    from steerlab.data.sequences import ab_sequences
    from steerlab.model.load import load_model
    from steerlab.vector import SteeringVector

    layer = 1
    got = reproduce.caa_check(str(tiny_dir), "caa:refusal", layer, tmp_path / "caa",
                              train_limit=4, limit=3)
    vec = SteeringVector.load(tmp_path / "caa" / "vector.safetensors")
    assert vec.manifest["read_position"] == "answer_token" and got.read_position == "answer_token"
    assert vec.manifest["dataset"]["n_pairs"] == 4 and got.n_pairs == 4
    lm = load_model(str(tiny_dir))
    diffs = []
    for item in load_dataset("caa:refusal", split="train").subset(4, 0):
        ab = ab_sequences(lm.tokenizer, item)
        # the read position is the letter itself, after the prefilled "(" of the answer
        letters = {lm.tokenizer.decode([ab.matching_id]).strip(),
                   lm.tokenizer.decode([ab.not_matching_id]).strip()}
        assert letters == {"A", "B"}
        assert lm.tokenizer.decode(ab.prefix[-1:]).strip() == "("
        assert ab.matching[-1] == ab.matching_id and len(ab.matching) == len(ab.prefix) + 1
        diffs.append(_hidden_at(lm.model, ab.matching, layer, -1)
                     - _hidden_at(lm.model, ab.not_matching, layer, -1))
        # one position earlier (the shared "(") the two prompts do not differ at all
        assert torch.equal(_hidden_at(lm.model, ab.matching, layer, -2),
                           _hidden_at(lm.model, ab.not_matching, layer, -2))
    want = torch.stack(diffs).mean(0)
    assert float(want.norm()) > 0
    torch.testing.assert_close(vec.directions[layer].flatten(), want, atol=1e-5, rtol=1e-4)


def test_caa_check_scores_all_test_items_after_the_instruction(tiny_dir: Path, tmp_path: Path,
                                                               shared_data: Path) -> None:
    from steerlab.data.loaders import load_dataset
    from steerlab.eval.protocols.prompting_inputs import item_id

    out = tmp_path / "caa"
    got = reproduce.caa_check(str(tiny_dir), "caa:refusal", 1, out, train_limit=4)
    test = load_dataset("caa:refusal", split="test")
    assert len(test) == 50
    assert got.item_ids == [item_id(i) for i in test]  # every item, in the split's order
    assert got.multipliers == [-1.0, 0.0, 1.0] and got.n_test == 50
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    masses = [r for r in records if r["metric"] == "letter_mass"]
    assert [r["coefficient"] for r in masses] == [-1.0, 0.0, 1.0]
    assert all(r["n"] == 50 and r["extra"]["positions"] == "after_instruction"
               and r["extra"]["item_ids"] == got.item_ids for r in masses)
    # the raw multiplier's equivalent strength is kept (the strength <-> coefficient conversion)
    assert got.strengths[0.0] == 0.0 and got.strengths[1.0] == pytest.approx(
        -got.strengths[-1.0]) and got.strengths[1.0] > 0
    assert {r["metric"] for r in records} >= {"score", "effect", "letter_mass"}

    # a random tiny model puts almost no mass on the letters: not measurable, the masses say
    # so at every multiplier, and the letter-mass warning rides on the verdict
    verdict = got.verdict((0.3, 0.1, 0.5), "the audit's open-answer effect")
    assert verdict.verdict == rules.NOT_MEASURABLE
    assert "at multipliers -1 / 0 / +1" in verdict.reason
    assert any("answer-letter mass" in w for w in verdict.warnings)
    assert verdict.numbers["open_effect"] == (0.3, 0.1, 0.5) and verdict.numbers["n"] == 50
    assert any("4 train pairs" in d for d in verdict.deviations)
    assert any("chat template" in d for d in verdict.deviations)
    assert not any("test items" in d for d in verdict.deviations)  # all 50: as the paper

    before = (out / "results.jsonl").read_text()
    again = reproduce.caa_check(str(tiny_dir), "caa:refusal", 1, out, train_limit=4)
    assert (out / "results.jsonl").read_text() == before and again.score == got.score
    with pytest.raises(SteerlabError, match="limit was 0, now 5"):
        reproduce.caa_check(str(tiny_dir), "caa:refusal", 1, out, train_limit=4, limit=5)
    fewer = reproduce.caa_check(str(tiny_dir), "caa:refusal", 1, tmp_path / "few",
                                train_limit=4, limit=5)
    assert any("5 of the 50 test items" in d for d in fewer.verdict().deviations)


def test_warnings_reach_the_verdicts_the_table_and_the_markdown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        shared_data: Path) -> None:
    """The audit's warnings ride on every audit verdict (perplexity included), CAA's on its
    own; the printed table flags them and lists them; RESULTS.md shows every one, with CAA's
    open-answer effect beside it and its deviations from the paper."""
    from steerlab.eval.protocols import audit

    def fake_audit(cfg: audit.AuditConfig) -> list[rules.Verdict]:
        cfg.root.mkdir(parents=True, exist_ok=True)
        (cfg.root / "audit.json").write_text(json.dumps({
            "params": 1000, "layer": 1, "strength": 0.4, "seconds": {"sweep": 1.0},
            "warnings": ["the unsteered score is 0.97: little room to move"]}))
        return [rules.judge_perplexity((1.2, 1.1, 1.3), 0.4),
                rules.Verdict("ood", rules.UNSURE, "no ID effect")]

    caa = rules.judge_caa((0.05, -0.02, 0.12), {-1.0: 0.80, 0.0: 0.63, 1.0: 0.08},
                          what="p(matching letter) at +1 vs -1", open_effect=(0.26, 0.05, 0.47),
                          open_what="the audit's open-answer effect",
                          warnings=rules.validity_warnings(letter_mass=0.63),
                          deviations=["model m instead of Llama 2 7B/13B Chat",
                                      "the model's own chat template instead of [INST] [/INST]"])
    monkeypatch.setattr(audit, "run", fake_audit)
    monkeypatch.setattr(reproduce, "_actadd", lambda *a: rules.Verdict("actadd", rules.HOLDS,
                                                                       "up"))
    monkeypatch.setattr(reproduce, "_caa", lambda *a: caa)
    results = tmp_path / "RESULTS.md"
    cfg = reproduce.ReproduceConfig(out=tmp_path / "repro", models=("m",), results=results)
    got = reproduce.run(cfg)[0]
    room = "the unsteered score is 0.97: little room to move"
    assert room in got.verdicts["perplexity"].warnings and room in got.verdicts["ood"].warnings
    assert got.verdicts["caa"].verdict == rules.NOT_MEASURABLE
    printed = capsys.readouterr().out
    assert "not measurable ⚠ 1" in printed and "holds ⚠ 1" in printed
    assert f"[m · perplexity]: {room}" in printed and "answer-letter mass is 0.63" in printed
    assert "differs from Rimsky et al. 2023: model m" in printed
    assert "+0.260 [+0.050, +0.470]" in printed
    table = results.read_text()
    caa_row = next(line for line in table.splitlines() if line.startswith("| CAA"))
    assert "**not measurable**: answer-letter mass p(A)+p(B) is 0.80 / 0.63 / 0.08" in caa_row
    assert "beside it, not the CAA verdict: the audit's open-answer effect: +0.260" in caa_row
    assert "⚠ answer-letter mass is 0.63" in caa_row and "differs from Rimsky" in caa_row
    ppl_row = next(line for line in table.splitlines() if line.startswith("| Steering costs"))
    assert f"⚠ {room}" in ppl_row
    assert "*not measurable*" in table
    # kept rows carry them too: saved with the verdicts, read back as they were
    row = json.loads((tmp_path / "results" / "m.json").read_text())
    saved = {v["finding"]: v for v in row["verdicts"]}
    assert saved["perplexity"]["warnings"] == [room]
    assert saved["caa"]["deviations"] == caa.deviations
    assert "instead of [INST] [/INST]" in printed  # shown as text, not read as markup
    kept = reproduce.run(cfg)[0].verdicts["caa"]  # kept, not measured again
    assert json.dumps(kept.as_dict()) == json.dumps(caa.as_dict())
    assert results.read_text() == table


def test_reproduce_sizes_name_the_caa_protocol() -> None:
    """A row measured under the old CAA check (the audit's vector, no CAA sizes) differs in
    its sizes, so it is measured again rather than kept."""
    sizes = reproduce.ReproduceConfig("x").sizes("m")["caa"]
    assert sizes == {"protocol": "answer-letter mean difference",
                     "positions": "after_instruction", "multipliers": [-1.0, 0.0, 1.0],
                     "limit": 0, "train_limit": 0}


def test_open_effect_is_the_audits_test_effect_at_its_layer(tmp_path: Path) -> None:
    from steerlab.eval.store import ResultStore, make_record

    store = ResultStore(tmp_path)
    store.add("c", [make_record("effect", 0.1, ci=(0.0, 0.2), split="val", layer=3, n=24),
                    make_record("effect", 0.26, ci=(0.05, 0.47), split="test", layer=3, n=24,
                                data="caa:refusal/open", unit="strength", low_value=-0.4,
                                high_value=0.4)])
    effect, what = reproduce._open_effect(tmp_path, 3)
    assert effect == (0.26, 0.05, 0.47)
    assert what == "the audit's open-answer effect, strength 0.4 vs -0.4, 24 test items"
    assert reproduce._open_effect(tmp_path, 5)[0] is None
    assert reproduce._open_effect(tmp_path / "none", 3)[0] is None
