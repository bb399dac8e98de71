"""The samples study's numbers do not depend on how many vectors share one scoring pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerlab.eval.protocols import samples


def _records(out: Path) -> dict[tuple[str, str, object], float]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {(r["cell"], r["metric"], r["strength"]): r["value"] for r in rows}


def test_chunking_changes_nothing_and_full_vector_scored_once(
        tiny_dir: Path, tmp_path: Path, shared_data: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from steerlab.scoring.sweep import SweepEngine

    def config(out: Path) -> samples.SamplesConfig:
        return samples.SamplesConfig(out=out, data="caa:refusal", layer=1, unit="strength",
                                     values=[-1.0, 1.0], sizes=[2, 12], seeds=3,
                                     model=str(tiny_dir), train_limit=12, limit=4,
                                     batch_size=8)

    scored: list[int] = []
    original = SweepEngine.score_vectors

    def counting(self, seqs, vectors, *args, **kwargs):  # type: ignore[no-untyped-def]
        scored.append(len(vectors))
        return original(self, seqs, vectors, *args, **kwargs)

    monkeypatch.setattr(SweepEngine, "score_vectors", counting)
    samples.run(config(tmp_path / "one"))  # 6 cells (3 draws × 2 counts) in one chunk
    assert scored == [4]  # 3 draws at n=2, and the full vector once for its 3 cells
    scored.clear()
    monkeypatch.setattr(samples, "SHARED", 2)
    samples.run(config(tmp_path / "pairs"))  # the full vector's cells span two chunks
    assert scored == [2, 2]  # n=2 draws 0, 1 | draw 2 + full | full twice: reused, no call
    one, pairs = _records(tmp_path / "one"), _records(tmp_path / "pairs")
    assert one.keys() == pairs.keys() and len({k[0] for k in one}) == 6
    assert all(abs(one[k] - pairs[k]) < 1e-6 for k in one)


def test_progress_moves_inside_a_chunk(tiny_dir: Path, tmp_path: Path, shared_data: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """One chunk of vectors is one long scoring call: the bar moves per batch inside it and
    ends at the number of vectors."""
    steps: list[float] = []

    class Recording:
        def __init__(self, *args: object, **kwargs: object) -> None: ...

        def update(self, n: float = 1) -> None:
            steps.append(n)

        def set_postfix_str(self, text: str) -> None: ...

        def __enter__(self) -> Recording:
            return self

        def __exit__(self, *exc: object) -> None: ...

    monkeypatch.setattr(samples, "bar", Recording)
    samples.run(samples.SamplesConfig(out=tmp_path / "s", data="caa:refusal", layer=1,
                                      unit="strength", values=[-1.0, 1.0], sizes=[2], seeds=2,
                                      model=str(tiny_dir), train_limit=12, limit=4,
                                      batch_size=2))  # 8 answer rows: 4 batches, 1 chunk
    inside = [n for n in steps if n > 0]
    assert len(inside) >= 4 and all(n < 3 for n in inside[:4])  # fractions of the 3 vectors
    assert abs(sum(steps) - 3) < 1e-9
