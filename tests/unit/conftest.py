"""Unit-test setup shared by every file here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded; with several threads on a busy 2-core machine
    OpenMP oversubscription makes each tiny forward up to ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
