"""``steerlab audit`` end to end on a tiny model at tiny sizes: every study's directory, the
verdicts (one per finding, rule and numbers attached), audit.json, resume, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerlab.errors import SteerlabError
from steerlab.eval.protocols import audit
from steerlab.eval.verdicts import FAILS, FINDINGS, HOLDS, UNSURE, VERDICTS


def _config(tiny_dir: Path, out: Path, **overrides: object) -> audit.AuditConfig:
    base: dict[str, object] = {
        "out": out, "data": "caa:refusal", "model": str(tiny_dir), "layers": "1,2",
        "strengths": (-1.0, 0.0, 1.0), "limit": 6, "train_limit": 12, "pair_counts": (2, 12),
        "draws": 2, "judge": f"local:{tiny_dir}", "ood_limit": 2, "max_new_tokens": 3,
        "adversarial_limit": 2, "iterations": 1, "population": 2, "children": 2,
        "suffix_length": 2, "windows": 2, "fluency_limit": 4, "batch_size": 8}
    return audit.AuditConfig(**{**base, **overrides})  # type: ignore[arg-type]


def test_audit_end_to_end_resume_and_report(tiny_dir: Path, tmp_path: Path,
                                            shared_data: Path) -> None:
    out = tmp_path / "audit"
    cfg = _config(tiny_dir, out)
    found = audit.run(cfg)
    assert [v.finding for v in found] == list(FINDINGS)
    assert all(v.verdict in (HOLDS, FAILS, UNSURE) and v.reason for v in found)
    for study in ("sweep", "samples", "ood", "adversarial", "perplexity", "prompting"):
        assert (out / study / "results.jsonl").stat().st_size > 0, study
    saved = json.loads((out / "verdicts.json").read_text())
    assert [v["finding"] for v in saved] == list(FINDINGS)
    assert all(v["rule"] and "numbers" in v for v in saved)
    by = {v["finding"]: v for v in saved}
    assert by["size"]["verdict"] == UNSURE and "--models" in by["size"]["reason"]
    assert by["perplexity"]["numbers"]["strength"] == 1.0  # the sweep's largest strength
    summary = json.loads((out / "audit.json").read_text())
    assert summary["layer"] in (1, 2) and summary["strength"] == 1.0
    assert set(summary["seconds"]) == {"sweep", "samples", "ood", "adversarial", "perplexity",
                                       "prompting", "size"}
    assert "size" in summary["skipped"]
    ood = [json.loads(x) for x in (out / "ood" / "results.jsonl").read_text().splitlines()]
    ids = [r for r in ood if r["metric"] == "behaviour_score"]
    assert ids and all("format=open" in r["cell"] for r in ids)  # the audit's own ID format
    # the ID side reads the sweep's --limit test items (6), not the --ood-limit generations (2)
    assert all("limit=6" in r["cell"] for r in ids), ids[0]["cell"]
    # steering vs prompting: at the sweep's layer and strength, on the sweep's 6 test items
    assert by["prompting"]["verdict"] in VERDICTS and by["prompting"]["reason"]
    assert "prompting" not in {p.parent.name for p in out.glob("*/verdicts.json")}
    scored = [json.loads(x) for x in (out / "prompting" / "results.jsonl").read_text()
              .splitlines() if '"metric": "score"' in x]
    assert {r["extra"]["condition"] for r in scored} == {"baseline", "vector", "prompt",
                                                         "prompt+vector"}
    assert {r["layer"] for r in scored} == {summary["layer"]} and all(r["n"] == 6
                                                                      for r in scored)
    assert len({tuple(r["extra"]["item_ids"]) for r in scored}) == 1
    assert {r["strength"] for r in scored} == {0.0, 1.0}
    answered = [json.loads(x) for x in (out / "prompting" / "results.jsonl").read_text()
                .splitlines() if '"metric": "fluency_ppl"' in x]
    assert len(answered) == 4 and all(len(r["extra"]["item_ids"]) == 4 for r in answered)
    before = {p: p.read_text() for p in out.glob("*/results.jsonl")}
    audit.run(cfg)  # resumes: every study finds its cells done
    assert {p: p.read_text() for p in out.glob("*/results.jsonl")} == before
    with pytest.raises(SteerlabError, match="limit was 6, now 7"):
        audit.run(_config(tiny_dir, out, limit=7))

    from steerlab.report import report_page, write

    html = write(report_page(out), tmp_path / "audit.html").read_text()
    for finding in FINDINGS.values():
        assert finding in html


def test_earlier_seconds_drop_a_study_removed_to_be_measured_again(tmp_path: Path) -> None:
    (tmp_path / "audit.json").write_text(json.dumps({"seconds": {"sweep": 5.0, "ood": 7.0,
                                                                  "caa": 2.0}}))
    (tmp_path / "sweep").mkdir()
    (tmp_path / "caa_ab").mkdir()
    assert audit.earlier_seconds(tmp_path / "audit.json") == {"sweep": 5.0}
    assert audit.earlier_seconds(tmp_path / "audit.json", {"caa": "caa_ab"}) == {
        "sweep": 5.0, "caa": 2.0}
    assert audit.earlier_seconds(tmp_path / "missing.json") == {}


def test_audit_refuses_bad_settings_before_loading(tmp_path: Path, shared_data: Path) -> None:
    base = audit.AuditConfig(out=tmp_path / "a", data="caa:refusal", model="/nonexistent")
    with pytest.raises(SteerlabError, match="largest positive strength"):
        audit.run(audit.AuditConfig(**{**base.__dict__, "strengths": (-0.4, 0.0)}))
    with pytest.raises(SteerlabError, match="unknown studies"):
        audit.run(audit.AuditConfig(**{**base.__dict__, "studies": ("sweep", "vibes")}))
    with pytest.raises(SteerlabError, match="the sweep is needed"):
        audit.run(audit.AuditConfig(**{**base.__dict__, "studies": ("samples",)}))
    with pytest.raises(SteerlabError, match="unknown CAA behaviour 'nope'"):
        audit.run(audit.AuditConfig(**{**base.__dict__, "data": "caa:nope"}))
    assert not (tmp_path / "a").exists()  # nothing written for a refused audit


def test_plan_lists_sizes_with_their_flags() -> None:
    steps = audit.plan(audit.AuditConfig(out="x", data="caa:refusal", models=("a", "b")))
    sizes = {s.name: s.sizes for s in steps}
    assert "--limit" in sizes["sweep"] and "--n" in sizes["samples"]
    assert "--iterations" in sizes["adversarial"] and "models a,b" in sizes["size"]


def test_reproduce_on_two_tiny_models(tiny_dir: Path, tmp_path: Path, shared_data: Path) -> None:
    """Two models (the tiny llama twice, saved apart): per-model verdicts with the two seed
    results, the size verdict across them, RESULTS.md and the page."""
    import shutil

    from steerlab.eval.protocols import reproduce
    from steerlab.eval.protocols.reproduce_table import ModelResult
    from steerlab.util.io import jsonable

    other = tmp_path / "tiny2"
    shutil.copytree(tiny_dir, other)
    sizes = _config(tiny_dir, tmp_path / "unused")
    results = tmp_path / "RESULTS.md"
    # the tiny tokenizer splits " love" and " hate" unequally; ActAdd needs aligned prompts
    cfg = reproduce.ReproduceConfig(out=tmp_path / "repro", models=(str(tiny_dir), str(other)),
                                    data="caa:refusal", audit=sizes, sentiment_limit=2,
                                    results=results, actadd_pair=(" happy", " hate"))
    got = reproduce.run(cfg)
    assert len(got) == 2
    for r in got:
        assert set(r.verdicts) == {*FINDINGS, "actadd", "caa"}
        saved = json.loads((tmp_path / "repro" / r.model.replace("/", "_") /
                            "verdicts.json").read_text())
        assert {v["finding"] for v in saved} == {*FINDINGS, "actadd", "caa"} - {"size"}
        assert r.params and r.seconds["actadd"] >= 0 and "sweep" in r.seconds
    size = json.loads((tmp_path / "repro" / "verdicts.json").read_text())
    assert [v["finding"] for v in size] == ["size"]
    assert "needs at least two models" not in size[0]["reason"]  # both ratios were measured
    table = results.read_text()
    assert table.count("\n| ") >= 7 + 2 and "ActAdd" in table and "wall time" in table
    from steerlab.report import report_page, write

    html = write(report_page(tmp_path / "repro"), tmp_path / "repro.html").read_text()
    assert html.count("actadd") >= 2 and "Larger models resist" in html

    # each model's row is kept beside the table; a later run at the same sizes keeps it (its
    # run directory gone: nothing is measured), at other sizes it measures again
    rows = {r.model: tmp_path / "results" / (r.model.replace("/", "_") + ".json") for r in got}
    assert all(json.loads(p.read_text())["sizes"] == cfg.sizes(m) for m, p in rows.items())
    gone = tmp_path / "repro" / str(other).replace("/", "_")
    shutil.rmtree(gone)
    again = reproduce.run(cfg)
    assert not (gone / "sweep").exists() and (gone / "verdicts.json").is_file()
    def normal(found: list[ModelResult]) -> str:
        return json.dumps([{k: jsonable(v.as_dict()) for k, v in r.verdicts.items()}
                           for r in found], sort_keys=True)

    assert normal(again) == normal(got)
    assert results.read_text() == table
    kept = rows[str(other)].read_text()
    rows[str(other)].write_text("{not json")
    with pytest.raises(SteerlabError, match="not a reproduce row"):
        reproduce.run(cfg)
    rows[str(other)].write_text(kept)
    other_sizes = reproduce.ReproduceConfig(**{**vars(cfg), "models": (str(other),),
                                               "sentiment_limit": 1})
    reproduce.run(other_sizes)
    assert (gone / "sweep").is_dir()
    assert json.loads(rows[str(other)].read_text())["sizes"]["sentiment_limit"] == 1
