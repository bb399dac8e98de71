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
