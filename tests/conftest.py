"""Shared fixtures. In CI (CI=true) a missing dataset or model is a failure, never a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
