"""Results store: tidy records, resume by cell, torn writes, and a run killed mid-way."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steerlab.errors import SteerlabError
from steerlab.eval.store import FIELDS, ResultStore, cell_id, make_record
from steerlab.util.parse import resolve_layers as parse_layer_list


def test_record_has_every_field_and_cleans_nan(tmp_path: Path) -> None:
    record = make_record("score", 0.25, ci=(math.nan, 0.5), layer=3, n=4, custom="x")
    assert list(record)[: len(FIELDS)] == list(FIELDS)
    assert record["ci_low"] is None and record["ci_high"] == 0.5
    assert record["extra"] == {"custom": "x"}
    store = ResultStore(tmp_path)
    store.add("c1", [record, make_record("propensity", -1.5, layer=3)])
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["metric"] for x in lines] == ["score", "propensity"]
    assert all(json.loads(x)["cell_records"] == 2 for x in lines)


def test_reopen_resumes_and_filters(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.add("a", [make_record("score", 0.1, layer=1)])
    store.add("b", [make_record("score", 0.2, layer=2)])
    again = ResultStore(tmp_path)
    assert again.done("a") and again.done("b") and not again.done("c")
    assert [r["value"] for r in again.records(layer=2)] == [0.2]
    again.extend("a", [make_record("score", 9.9)])  # done: ignored
    assert len(ResultStore(tmp_path).records()) == 2


def test_torn_tail_and_incomplete_cell_are_dropped(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.add("whole", [make_record("score", 0.5)])
    path = tmp_path / "results.jsonl"
    partial = dict(make_record("score", 0.7), cell="half", cell_records=2)
    with path.open("a") as fh:
        fh.write(json.dumps(partial) + "\n")        # one of the cell's two records
        fh.write('{"cell": "torn", "metr')          # a write cut short
    again = ResultStore(tmp_path)
    assert again.done("whole") and not again.done("half") and not again.done("torn")
    assert path.read_text().count("\n") == 1        # rewritten without the debris


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text('not json\n{"cell": "a", "metric": "x"}\n')
    with pytest.raises(SteerlabError, match=r"results\.jsonl line 1: not JSON"):
        ResultStore(tmp_path)


def test_run_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    with pytest.raises(SteerlabError, match="cannot create run directory"):
        ResultStore(target)


WRITER = """
import sys, time
from steerlab.eval.store import ResultStore, make_record
store = ResultStore(sys.argv[1])
for i in range(40):
    cell = f"cell/{i}"
    if store.done(cell):
        continue
    time.sleep(0.05)   # the 'measurement'
    store.add(cell, [make_record("score", i / 40, layer=i), make_record("n", i, layer=i)])
    print(cell, flush=True)
"""


def test_killed_run_resumes_losing_at_most_the_cell_in_flight(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    for _ in range(5):  # wait until five cells have landed, then kill hard
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = ResultStore(run_dir)
    finished = {r["cell"] for r in first.records()}
    assert 5 <= len(finished) < 40
    start = time.perf_counter()
    rerun = subprocess.run([sys.executable, str(script), str(run_dir)], capture_output=True,
                           text=True, check=True)
    assert time.perf_counter() - start > 0
    redone = rerun.stdout.split()
    assert not finished & set(redone)                    # finished cells were skipped
    final = ResultStore(run_dir).records()
    cells = [r["cell"] for r in final]
    assert sorted(set(cells)) == sorted(f"cell/{i}" for i in range(40))
    assert len(cells) == 80                              # two records per cell, no duplicates


def test_cell_ids_and_layer_lists() -> None:
    assert cell_id("x", b=1, a="q") == "x/a=q/b=1"
    assert parse_layer_list("all", 3) == [0, 1, 2]
    assert parse_layer_list("10,16", 30) == [10, 16]
    assert parse_layer_list("8-12:2", 30) == [8, 10, 12]
    with pytest.raises(SteerlabError):
        parse_layer_list("", 30)
