"""Shared fixtures. In CI (CI=true) a missing dataset or model is a failure, never a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: The test tiers (`make test-unit` runs the first): **unit** (fast, in-process, tiny models),
#: **e2e** (tiny end to end: tests that run steerlab commands in their own processes through a
#: ``cli`` fixture, whole studies run through (``*end_to_end*``), and the tests named below),
#: **integration** (real models and data) and **vllm** (the real engine). `make test` runs them
#: all.
E2E_TESTS = {
    "test_coverage.py",  # every causal-LM type of transformers, built and checked (minutes)
    "test_audit.py",  # the audit and reproduce end to end on tiny models
    "test_bad_inputs.py",  # each bad input through the real CLI
    "test_report.py",  # every run type measured on tiny models and rendered to HTML
    "test_site_builds_strictly",  # the documentation site, mkdocs --strict
    "test_killed_run_resumes_losing_at_most_the_cell_in_flight",  # SIGKILLs a child process
    "test_help_and_version_do_not_import_the_heavy_stack",  # a fresh interpreter per case
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        uses_cli = "cli" in getattr(item, "fixturenames", ())
        name = item.name.split("[", 1)[0]
        whole_study = "end_to_end" in name  # a study run through on a tiny model, resumed
        if uses_cli or whole_study or item.path.name in E2E_TESTS or name in E2E_TESTS:
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
