"""Steering coverage over every causal-LM architecture of the installed transformers.

Each model type of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` is built tiny and checked with
steerlab's own machinery (:mod:`steerlab.testing.coverage`; two worker processes, about a
minute on 2 cores). Fails on any silent no-op or mismatch, on a type that
``coverage_expected.json`` lists as exact and no longer is, and when docs/ARCHITECTURES.md is
not the table of this run. After a deliberate change (a new transformers in the lock, a fix that
makes a refused type exact), regenerate both::

    steerlab models check --markdown docs/ARCHITECTURES.md \\
        --write-expect tests/unit/coverage_expected.json
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import pytest

from steerlab.testing.coverage import (
    TypeResult,
    load_expected,
    markdown,
    regressions,
    run_coverage,
    summary_lines,
)

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = Path(__file__).with_name("coverage_expected.json")
DOC = ROOT / "docs" / "ARCHITECTURES.md"
REGENERATE = ("steerlab models check --markdown docs/ARCHITECTURES.md "
              "--write-expect tests/unit/coverage_expected.json")


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> list[TypeResult]:
    start = time.perf_counter()
    found = run_coverage(jobs=2)
    seconds = time.perf_counter() - start
    lines = [f"steering coverage: {len(found)} model types in {seconds:.0f} s",
             *summary_lines(found)]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        print("\n" + "\n".join(lines))  # the counts, shown even when output is captured
    return found


def test_every_causal_lm_type_is_checked(results: list[TypeResult]) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    assert sorted(r.model_type for r in results) == sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert all(r.reason for r in results), "every verdict says why"
    assert all(r.status in ("exact", "refused", "no-op", "mismatch") for r in results)


def test_no_silent_no_op_or_mismatch(results: list[TypeResult]) -> None:
    silent = [f"{r.model_type}: {r.status}: {r.reason}" for r in results
              if r.status in ("no-op", "mismatch")]
    assert not silent, "steering ran silently and did nothing or the wrong thing:\n" + \
        "\n".join(silent)


def test_exact_types_stay_exact(results: list[TypeResult]) -> None:
    lost = regressions(results, load_expected(EXPECTED))
    assert not lost, "listed exact in coverage_expected.json, no longer exact:\n" + \
        "\n".join(lost)


def test_architectures_doc_is_up_to_date(results: list[TypeResult]) -> None:
    assert DOC.read_text(encoding="utf-8") == markdown(results), \
        f"docs/ARCHITECTURES.md is stale; regenerate it: {REGENERATE}"


def test_expectations_cover_this_transformers(results: list[TypeResult]) -> None:
    expected = load_expected(EXPECTED)
    new = sorted({r.model_type for r in results} - set(expected))
    assert not new, f"model types missing from coverage_expected.json ({new}): {REGENERATE}"
