"""One worker thread owns the model and batches rows, each with its own steering.

Requests become :class:`Job` s (one :class:`~steerlab.scoring.generate.GenerationRow` each)
in a bounded queue. The worker runs them through the core's one generation loop,
:class:`~steerlab.scoring.generate.Decoder`, whose rows carry per-row steering specs: an
unsteered row gets a zero scale in a steered batch, so its output is bit-identical to an
unsteered run, and every row's greedy output equals that row run alone.

Batching: a *cohort* is one ``Decoder`` over the jobs admitted together. When the worker is
idle the first job waits for company while requests keep arriving (until none has come for
``batch_wait_s``, ``GATHER_ROUNDS × batch_wait_s`` at most, or ``max_batch`` rows), then
its cohort starts. While cohorts run, new jobs are admitted **between decode steps** as a new
cohort (up to ``max_cohorts`` cohorts and ``max_batch`` rows in all), and the worker steps the
cohorts in turn, so a new request gets its first token after one prefill instead of waiting
for the running batch to end. Each cohort is its own forward: rows of different cohorts are
not merged into one KV cache (that needs ``Decoder.add``, see ``docs/SCALE.md``). Rows leave
their cohort when they finish, stop, or are cancelled (a client that disconnects frees its
row at the next step boundary).

Steering is per thread / per context (:mod:`steerlab.steering.hooks`): every call into a
cohort's ``Decoder`` runs inside that cohort's own :class:`contextvars.Context`, so
interleaved cohorts never see each other's steering.

Example:
    >>> from steerlab.model.load import as_loaded
    >>> from steerlab.scoring.generate import GenerationRow
    >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
    >>> lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    >>> with Scheduler(lm, max_batch=4) as scheduler:
    ...     job = scheduler.submit(GenerationRow([5, 6, 7], max_new_tokens=3))
    ...     result = job.wait(timeout=60)
    >>> result.finish_reason in ("stop", "length"), len(result.tokens) <= 3
    (True, True)
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.scoring.generate import Decoder, GenerationRow

log = logging.getLogger("steerlab.serve")

FinishReason = Literal["stop", "length", "cancelled", "error"]
#: An idle worker gathers a batch for at most this many ``batch_wait_s``.
GATHER_ROUNDS = 8


class QueueFull(SteerlabError):
    """The scheduler's queue holds ``max_queue`` waiting jobs already (HTTP 429)."""


class SchedulerStopped(SteerlabError):
    """The scheduler is not running (stopped, or its worker died)."""


@dataclass(frozen=True)
class TokenEvent:
    """A job produced ``token``."""

    token: int


@dataclass(frozen=True)
class FinishEvent:
    """A job ended: ``stop`` (a stop id), ``length`` (its budget), ``cancelled`` or ``error``."""

    reason: FinishReason
    error: str | None = None


Event = TokenEvent | FinishEvent
Sink = Callable[[Event], None]


@dataclass(frozen=True)
class JobResult:
    """What a finished job produced."""

    tokens: list[int]
    finish_reason: FinishReason
    error: str | None = None


@dataclass(eq=False)
class Job:
    """One row in the scheduler. ``sink`` (if any) is called from the worker thread.

    ``submitted`` / ``started`` / ``first_token`` are :func:`time.perf_counter` stamps.
    """

    id: int
    row: GenerationRow
    sink: Sink | None = None
    tokens: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    error: str | None = None
    submitted: float = 0.0
    started: float | None = None
    first_token: float | None = None
    _cancel: bool = False
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> JobResult:
        """Block until the job ends; its tokens and why it ended.

        Example:
            >>> scheduler.submit(row).wait(timeout=30).finish_reason      # doctest: +SKIP
            'length'
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.id} did not finish in {timeout} s")
        assert self.finish_reason is not None
        return JobResult(list(self.tokens), self.finish_reason, self.error)


@dataclass(eq=False)
class _Cohort:
    decoder: Decoder
    jobs: list[Job]
    context: contextvars.Context
    reported: set[int] = field(default_factory=set)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.context.run(fn, *args)

    @property
    def live(self) -> int:
        return len(self.decoder.active)


class Scheduler:
    """The worker that owns ``model`` and runs every job through batched decoding.

    ``max_batch`` caps the rows generating at once (all cohorts together), ``max_queue`` the
    jobs waiting for a row (:class:`QueueFull` past it), ``max_cohorts`` how many batches run
    interleaved (1 = strictly batch after batch), ``batch_wait_s`` the quiet gap after which
    an idle worker stops waiting for more jobs and starts a batch.

    Example:
        >>> scheduler = Scheduler(lm, max_batch=16).start()               # doctest: +SKIP
        >>> scheduler.submit(GenerationRow(ids, 32), sink=print)          # doctest: +SKIP
        >>> scheduler.stop()                                              # doctest: +SKIP
    """

    def __init__(self, model: LoadedModel | Any, *, max_batch: int = 16, max_queue: int = 64,
                 max_cohorts: int = 4, batch_wait_s: float = 0.03):
        for name, value in (("max_batch", max_batch), ("max_cohorts", max_cohorts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SteerlabError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise SteerlabError(f"max_queue must be an integer >= 0, got {max_queue!r}")
        if not batch_wait_s >= 0:
            raise SteerlabError(f"batch_wait_s must be >= 0, got {batch_wait_s!r}")
        self.lm = as_loaded(model)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_cohorts = max_cohorts
        self.batch_wait_s = float(batch_wait_s)
        self._pending: deque[Job] = deque()
        self._cohorts: list[_Cohort] = []
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failure: str | None = None
        self.steps = 0  # forwards run (all cohorts)
        self.batches = 0  # cohorts started
        self.max_live = 0  # most rows generating at once
        self.finished: Counter[str] = Counter()  # jobs ended, by finish reason

    # ---- lifetime -------------------------------------------------------------------------
    def start(self) -> Scheduler:
        """Start the worker thread (idempotent); returns ``self``."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stopping = False
            self._failure = None
            self._thread = threading.Thread(target=self._run, name="steerlab-serve-worker",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the worker: waiting and running jobs end as ``cancelled``."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    # ---- the API used by request handlers (any thread) -------------------------------------
    def submit(self, row: GenerationRow, sink: Sink | None = None) -> Job:
        """Queue one row; raises :class:`QueueFull` when ``max_queue`` jobs already wait for a
        row."""
        return self.submit_many([row], [sink])[0]

    def submit_many(self, rows: Sequence[GenerationRow],
                    sinks: Sequence[Sink | None] | None = None) -> list[Job]:
        """Queue several rows at once, all or none (one request with several choices)."""
        sinks = list(sinks) if sinks is not None else [None] * len(rows)
        if len(sinks) != len(rows):
            raise SteerlabError(f"{len(sinks)} sinks for {len(rows)} rows")
        with self._cond:
            if not self.running:
                raise SchedulerStopped(self._failure or "the generation worker is not running")
            free = max(0, self.max_batch - sum(c.live for c in self._cohorts))
            if len(self._pending) + len(rows) > self.max_queue + free:
                waiting = max(0, len(self._pending) - free)
                raise QueueFull(f"the server is busy: {waiting} requests are waiting for a "
                                f"row (limit {self.max_queue}); retry later")
            now = time.perf_counter()
            jobs = [Job(next(self._ids), row, sink, submitted=now)
                    for row, sink in zip(rows, sinks, strict=True)]
            self._pending.extend(jobs)
            self._cond.notify_all()
        return jobs

    def cancel(self, job: Job) -> None:
        """Stop ``job`` (thread-safe): a waiting job leaves the queue now, a running one
        leaves its batch at the next step. Its sink gets ``FinishEvent("cancelled")``."""
        with self._cond:
            if job.done:
                return
            job._cancel = True
            if job in self._pending:
                self._pending.remove(job)
                self._finish(job, "cancelled")
            self._cond.notify_all()

    def stats(self) -> dict[str, int]:
        """Counts for monitoring: waiting and running rows, cohorts, steps so far."""
        with self._cond:
            return {"waiting": len(self._pending),
                    "running": sum(c.live for c in self._cohorts),
                    "cohorts": len(self._cohorts), "steps": self.steps,
                    "batches": self.batches, "max_live": self.max_live,
                    **{f"finished_{r}": self.finished[r]
                       for r in ("stop", "length", "cancelled", "error")}}

    # ---- the worker -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopping and not self._pending and not self._cohorts:
                        self._cond.wait()
                    if self._stopping:
                        break
                    self._admit()
                    cohorts = list(self._cohorts)
                for cohort in cohorts:
                    self._step(cohort)
        except BaseException as exc:  # never leave clients waiting on a dead worker
            log.exception("generation worker failed")
            self._failure = f"the generation worker failed: {type(exc).__name__}: {exc}"
        finally:
            with self._cond:
                self._stopping = True
                reason: FinishReason = "error" if self._failure else "cancelled"
                for cohort in self._cohorts:
                    for job in cohort.jobs:
                        self._finish(job, reason, self._failure)
                    cohort.call(cohort.decoder.close)
                self._cohorts = []
                while self._pending:
                    self._finish(self._pending.popleft(), reason, self._failure)

    def _admit(self) -> None:
        """Start a cohort from the waiting jobs if there is room (called holding the lock)."""
        if not self._pending or len(self._cohorts) >= self.max_cohorts:
            return
        if not self._cohorts and self.batch_wait_s > 0:
            self._gather()
            if self._stopping or not self._pending:
                return
        room = self.max_batch - sum(c.live for c in self._cohorts)
        if room <= 0:
            return
        jobs = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
        now = time.perf_counter()
        for job in jobs:
            job.started = now
        context = contextvars.copy_context()
        try:
            decoder = context.run(Decoder, self.lm, [job.row for job in jobs])
        except SteerlabError as exc:
            for job in jobs:
                self._finish(job, "error", str(exc))
            return
        self._cohorts.append(_Cohort(decoder, jobs, context))
        self.batches += 1
        self.max_live = max(self.max_live, sum(c.live for c in self._cohorts))

    def _gather(self) -> None:
        """Idle worker, first job waiting: wait while more keep arriving (holding the lock).

        A burst of requests rarely lands at once (each is parsed and tokenized in turn), so
        the batch starts when none has arrived for ``batch_wait_s``, or after
        ``GATHER_ROUNDS × batch_wait_s`` in all, or when ``max_batch`` jobs wait.
        """
        start = last = time.perf_counter()
        seen = len(self._pending)
        while len(self._pending) < self.max_batch and not self._stopping and self._pending:
            now = time.perf_counter()
            if len(self._pending) != seen:
                seen, last = len(self._pending), now
            left = min(last + self.batch_wait_s, start + GATHER_ROUNDS * self.batch_wait_s) - now
            if left <= 0:
                return
            self._cond.wait(left)

    def _step(self, cohort: _Cohort) -> None:
        decoder = cohort.decoder
        for index, job in enumerate(cohort.jobs):
            if job._cancel and index not in cohort.reported:
                cohort.call(decoder.cancel, index)
        if not decoder.finished:
            try:
                emitted = cohort.call(decoder.step)
            except Exception as exc:
                log.exception("a batch failed")
                message = str(exc) if isinstance(exc, SteerlabError) else \
                    f"generation failed: {type(exc).__name__}: {exc}"
                cohort.call(decoder.close)
                with self._cond:
                    for index, job in enumerate(cohort.jobs):
                        if index not in cohort.reported:
                            cohort.reported.add(index)
                            self._finish(job, "error", message)
                    self._cohorts.remove(cohort)
                return
            self.steps += 1
            now = time.perf_counter()
            for index, token in emitted:
                job = cohort.jobs[index]
                if job.first_token is None:
                    job.first_token = now
                job.tokens.append(token)
                self._emit(job, TokenEvent(token))
        with self._cond:
            for index, job in enumerate(cohort.jobs):
                if index in cohort.reported or not decoder.done[index]:
                    continue
                cohort.reported.add(index)
                if job._cancel:
                    reason: FinishReason = "cancelled"
                elif len(decoder.outputs[index]) >= job.row.max_new_tokens:
                    reason = "length"
                else:
                    reason = "stop"
                self._finish(job, reason)
            if decoder.finished:
                cohort.call(decoder.close)
                self._cohorts.remove(cohort)
                self._cond.notify_all()

    def _emit(self, job: Job, event: Event) -> None:
        if job.sink is None:
            return
        try:
            job.sink(event)
        except Exception:  # a broken client must not take the worker down
            log.exception("job %s: sink failed; cancelling it", job.id)
            job._cancel = True

    def _finish(self, job: Job, reason: FinishReason, error: str | None = None) -> None:
        if job.done:
            return
        job.finish_reason, job.error = reason, error
        self.finished[reason] += 1
        job._done.set()
        self._emit(job, FinishEvent(reason, error))
