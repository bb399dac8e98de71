"""Shared fixtures. In CI (CI=true) a missing dataset or model is a failure, never a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: The test tiers (`make test-unit` runs the first): **unit** (fast, in-process, tiny models),
#: **e2e** (tiny end to end: tests that run steerlab commands in their own processes through a
#: ``cli`` fixture, and the whole-study tests named below), **integration** (real models and
#: data) and **vllm** (the real engine). `make test` runs them all.
E2E_TESTS = {
    "test_coverage.py",  # every causal-LM type of transformers, built and checked (minutes)
    "test_audit.py",  # the audit and reproduce end to end on tiny models
    "test_bad_inputs.py",  # each bad input through the real CLI
    "test_report.py",  # every run type measured on tiny models and rendered to HTML
    "test_site_builds_strictly",  # the documentation site, mkdocs --strict
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        uses_cli = "cli" in getattr(item, "fixturenames", ())
        if uses_cli or item.path.name in E2E_TESTS or item.name in E2E_TESTS:
            item.add_marker(pytest.mark.e2e)


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is missing in CI", pytrace=False)
    pytest.skip(f"{what} is missing (run `make model`, put shared/data beside the repo)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    from steerlab.data.loaders import data_dir
    from steerlab.errors import SteerlabError

    try:
        return data_dir()
    except SteerlabError as exc:
        _missing(f"shared data ({exc})")
        raise


@pytest.fixture(scope="session")
def smollm2():
    from steerlab.model.aliases import is_pulled
    from steerlab.model.load import load_model

    if not is_pulled("smollm2-135m"):
        _missing("the smollm2-135m model cache")
    return load_model("smollm2-135m", pull_missing=False)
