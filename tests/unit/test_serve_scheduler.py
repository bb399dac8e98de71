"""The serving scheduler on a tiny model: mixed-steering batches equal each row alone,
unsteered rows are bit-identical, cancelled rows free their slot, limits hold."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

from steerlab.model.load import LoadedModel, as_loaded
from steerlab.scoring.generate import Decoder, GenerationRow, Sampling
from steerlab.serve.scheduler import FinishEvent, QueueFull, Scheduler, SchedulerStopped
from steerlab.steering.spec import SteeringSpec
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.vector import SteeringVector

NEVER = frozenset[int]()  # no stop ids: every row runs its whole budget


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return as_loaded(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def vectors() -> dict[str, SteeringVector]:
    torch.manual_seed(1)
    norms = {str(k): 8.0 for k in range(4)}
    return {name: SteeringVector.from_directions({k: torch.randn(64) for k in range(4)},
                                                 resid_norms=norms)
            for name in ("a", "b", "c")}


def _rows(lm: LoadedModel, vectors: dict[str, SteeringVector],
          budget: int = 12) -> list[GenerationRow]:
    """Prompts of different lengths, each with different steering (some unsteered)."""
    tok = lm.tokenizer
    texts = ["Tell me a story about a robot.", "Hi", "What is two plus two? Answer briefly.",
             "The weather today is", "Please", "Once upon a time there was a kind old woman",
             "Numbers: 0 1 2", "Science helps us"]
    a, b, c = vectors["a"], vectors["b"], vectors["c"]
    steering: list[list[SteeringSpec]] = [
        [],
        [SteeringSpec(a, layers=[1], strength=1.5)],
        [],
        [SteeringSpec(b, layers=[2, 3], coefficient=-3.0, positions="generation")],
        [SteeringSpec(a, layers=[1], strength=-1.0), SteeringSpec(c, layers=[0], strength=0.8)],
        [],
        [SteeringSpec(c, layers=[2], strength=1.0, positions="after_instruction")],
        [SteeringSpec(b, layers=[1], coefficient=2.0, operator="ablate")],
    ]
    rows = []
    for text, specs in zip(texts, steering, strict=True):
        ids = tok(text)["input_ids"]
        rows.append(GenerationRow(ids, budget, steering=specs,
                                  instruction_length=max(1, len(ids) - 1), stop=NEVER))
    return rows


def _alone(lm: LoadedModel, row: GenerationRow) -> list[int]:
    with Decoder(lm, [row]) as decoder:
        while not decoder.finished:
            decoder.step()
        return decoder.outputs[0]


@pytest.fixture
def scheduler(lm: LoadedModel) -> Iterator[Scheduler]:
    sched = Scheduler(lm, max_batch=16, max_queue=32, batch_wait_s=0.2).start()
    yield sched
    sched.stop()


def test_mixed_batch_equals_each_row_alone(lm: LoadedModel, vectors: dict[str, SteeringVector],
                                           scheduler: Scheduler) -> None:
    rows = _rows(lm, vectors)
    jobs = scheduler.submit_many(rows)
    results = [job.wait(timeout=120) for job in jobs]
    assert scheduler.stats()["max_live"] == len(rows), "the rows did not share one batch"
    alone = [_alone(lm, row) for row in rows]
    assert [r.tokens for r in results] == alone
    assert all(r.finish_reason == "length" for r in results)
    # the steering did something: steered rows differ from their unsteered runs
    plain = [_alone(lm, GenerationRow(r.prompt, r.max_new_tokens, stop=NEVER)) for r in rows]
    assert sum(a != p for a, p, r in zip(alone, plain, rows, strict=True) if r.steering) >= 4


def test_unsteered_rows_are_bit_identical_in_a_steered_batch(
        lm: LoadedModel, vectors: dict[str, SteeringVector], scheduler: Scheduler) -> None:
    """Logits of the unsteered rows are equal bit for bit to an all-unsteered batch."""
    rows = _rows(lm, vectors, budget=6)
    plain_rows = [GenerationRow(r.prompt, r.max_new_tokens, stop=NEVER,
                                instruction_length=r.instruction_length) for r in rows]
    captured: list[torch.Tensor] = []
    head = lm.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, _a, out: captured.append(out.detach()))
    try:
        for batch in (rows, plain_rows):
            for job in scheduler.submit_many(batch):
                job.wait(timeout=120)
    finally:
        handle.remove()
    steps = len(captured) // 2
    unsteered = [i for i, r in enumerate(rows) if not r.steering]
    assert unsteered and steps == 6
    for mixed, plain in zip(captured[:steps], captured[steps:], strict=True):
        assert torch.equal(mixed[unsteered], plain[unsteered])
        assert not torch.equal(mixed, plain)  # the steered rows did change


def test_sampled_rows_are_reproducible_whatever_their_batch(
        lm: LoadedModel, scheduler: Scheduler) -> None:
    ids = lm.tokenizer("Tell me a story")["input_ids"]
    row = GenerationRow(ids, 10, Sampling(temperature=0.9, top_p=0.9, seed=7), stop=NEVER)
    others = [GenerationRow(lm.tokenizer(t)["input_ids"], 10, stop=NEVER)
              for t in ("Hi", "The weather", "Numbers 1 2 3")]
    together = scheduler.submit_many([*others, row])[-1].wait(timeout=60).tokens
    assert together == _alone(lm, row)


def test_new_jobs_start_between_decode_steps_of_a_running_batch(
        lm: LoadedModel, vectors: dict[str, SteeringVector]) -> None:
    """A job that arrives while a batch runs starts its own cohort before that batch ends; the
    interleaved cohorts never see each other's steering."""
    rows = _rows(lm, vectors, budget=40)
    first, second = rows[1], rows[0]  # steered long row, then an unsteered one
    started = threading.Event()
    with Scheduler(lm, max_batch=8, max_cohorts=2, batch_wait_s=0) as sched:
        long_job = sched.submit(first, sink=lambda e: started.set())
        assert started.wait(30)
        late = sched.submit(GenerationRow(second.prompt, 5, stop=NEVER))
        late_result = late.wait(timeout=60)
        assert not long_job.done, "the late job waited for the running batch to end"
        long_result = long_job.wait(timeout=60)
        assert sched.stats()["batches"] == 2
    assert late_result.tokens == _alone(lm, GenerationRow(second.prompt, 5, stop=NEVER))
    assert long_result.tokens == _alone(lm, first)


def test_one_cohort_means_batch_after_batch(lm: LoadedModel) -> None:
    ids = lm.tokenizer("Hello")["input_ids"]
    started = threading.Event()
    with Scheduler(lm, max_batch=8, max_cohorts=1, batch_wait_s=0) as sched:
        first = sched.submit(GenerationRow(ids, 30, stop=NEVER), sink=lambda e: started.set())
        assert started.wait(30)
        second = sched.submit(GenerationRow(ids, 3, stop=NEVER))
        second.wait(timeout=60)
        assert first.done  # it could not start before the first batch ended
        assert second.started is not None and first.finish_reason == "length"


def test_cancel_frees_the_row(lm: LoadedModel) -> None:
    ids = lm.tokenizer("Once upon a time")["input_ids"]
    tokens: list[int] = []
    events: list[object] = []
    got_three = threading.Event()

    def sink(event: object) -> None:
        events.append(event)
        if not isinstance(event, FinishEvent):
            tokens.append(0)
            if len(tokens) >= 3:
                got_three.set()

    with Scheduler(lm, max_batch=1, max_cohorts=1, batch_wait_s=0) as sched:
        long_job = sched.submit(GenerationRow(ids, 10_000, stop=NEVER), sink=sink)
        waiting = sched.submit(GenerationRow(ids, 4, stop=NEVER))  # needs the only row
        assert got_three.wait(30)
        assert not waiting.done and sched.stats()["waiting"] == 1
        sched.cancel(long_job)
        result = long_job.wait(timeout=30)
        assert result.finish_reason == "cancelled" and 3 <= len(result.tokens) < 10_000
        assert waiting.wait(timeout=30).finish_reason == "length"
        assert isinstance(events[-1], FinishEvent) and events[-1].reason == "cancelled"
        assert sched.stats()["running"] == 0
        queued = sched.submit(GenerationRow(ids, 10_000, stop=NEVER))
        sched.cancel(queued)  # cancelling a job (running or still waiting) ends it at once
        assert queued.wait(timeout=30).finish_reason == "cancelled"


def test_queue_limit_raises_queue_full(lm: LoadedModel) -> None:
    ids = lm.tokenizer("Hello")["input_ids"]
    started = threading.Event()
    with Scheduler(lm, max_batch=1, max_queue=1, max_cohorts=1, batch_wait_s=0) as sched:
        running = sched.submit(GenerationRow(ids, 10_000, stop=NEVER),
                               sink=lambda e: started.set())
        assert started.wait(30)
        queued = sched.submit(GenerationRow(ids, 2, stop=NEVER))
        with pytest.raises(QueueFull, match="limit 1"):
            sched.submit(GenerationRow(ids, 2, stop=NEVER))
        with pytest.raises(QueueFull):
            sched.submit_many([GenerationRow(ids, 2)] * 2)
        sched.cancel(running)
        assert queued.wait(timeout=30).finish_reason == "length"


def test_max_batch_caps_live_rows(lm: LoadedModel) -> None:
    ids = lm.tokenizer("Hello there")["input_ids"]
    with Scheduler(lm, max_batch=3, max_cohorts=4, batch_wait_s=0.05) as sched:
        jobs = sched.submit_many([GenerationRow(ids, 4, stop=NEVER)] * 7)
        results = [j.wait(timeout=60) for j in jobs]
        assert sched.stats()["max_live"] <= 3
    assert len({tuple(r.tokens) for r in results}) == 1


def test_stop_ids_end_a_row_with_reason_stop(lm: LoadedModel) -> None:
    ids = lm.tokenizer("Hello there")["input_ids"]
    first = _alone(lm, GenerationRow(ids, 3, stop=NEVER))
    with Scheduler(lm, batch_wait_s=0) as sched:
        result = sched.submit(GenerationRow(ids, 8, stop=frozenset({first[1]}))).wait(60)
    assert result.finish_reason == "stop" and result.tokens == first[:1]


def test_stopped_scheduler_refuses_and_ends_waiting_jobs(lm: LoadedModel) -> None:
    ids = lm.tokenizer("Hello")["input_ids"]
    sched = Scheduler(lm, max_batch=1, max_cohorts=1, batch_wait_s=0).start()
    started = threading.Event()
    running = sched.submit(GenerationRow(ids, 10_000, stop=NEVER), sink=lambda e: started.set())
    waiting = sched.submit(GenerationRow(ids, 10_000, stop=NEVER))
    assert started.wait(30)
    begun = time.perf_counter()
    sched.stop()
    assert time.perf_counter() - begun < 30
    assert running.wait(1).finish_reason == "cancelled"
    assert waiting.wait(1).finish_reason == "cancelled"
    with pytest.raises(SchedulerStopped):
        sched.submit(GenerationRow(ids, 2))


def test_a_failing_sink_cancels_only_its_job(lm: LoadedModel) -> None:
    ids = lm.tokenizer("Hello")["input_ids"]

    def broken(event: object) -> None:
        raise RuntimeError("client went away")

    with Scheduler(lm, batch_wait_s=0.05) as sched:
        bad, good = sched.submit_many([GenerationRow(ids, 50, stop=NEVER),
                                       GenerationRow(ids, 5, stop=NEVER)], [broken, None])
        assert good.wait(timeout=60).finish_reason == "length"
        assert bad.wait(timeout=60).finish_reason == "cancelled"
        assert sched.running


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_cohorts": 0}, {"max_queue": -1},
                                    {"batch_wait_s": -1.0}, {"max_batch": True}])
def test_bad_limits(lm: LoadedModel, kwargs: dict[str, object]) -> None:
    from steerlab.errors import SteerlabError

    with pytest.raises(SteerlabError):
        Scheduler(lm, **kwargs)  # type: ignore[arg-type]
