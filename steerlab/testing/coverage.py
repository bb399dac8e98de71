"""Steering coverage of every causal-LM architecture the installed transformers knows.

For each model type of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``: build a tiny random model
(:mod:`steerlab.testing.zoo`), run :func:`steerlab.testing.checks.check_model` on it and end
with one verdict and one line saying why:

* ``exact`` — blocks found; at every block, steerlab's steering equals a hand-written hook
  adding v at the block's output and moves the logits; ``hidden_states[k+1]`` is ``h + v``;
  extraction reads the block output; ``prompt`` / ``generation`` positions are right under
  ``generate`` with the KV cache; per-row specs are right in a padded batch.
* ``refused`` — loudly: steerlab raises a one-line error for this architecture, or the model
  cannot be part of the check (not a text decoder, cannot be built tiny, its own cached
  ``generate`` fails unsteered, ...).
* ``no-op`` / ``mismatch`` — steering ran without an error but changed nothing, or changed the
  wrong thing. These are bugs: the coverage test fails on them.

Types run in worker processes (``jobs``), one at a time each, so a type that crashes, hangs or
asks for too much memory costs only itself.

Example:
    >>> [r.status for r in run_coverage(["llama", "gpt2"])]
    ['exact', 'exact']
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from steerlab.errors import SteerlabError

__all__ = ["STATUSES", "TypeResult", "check_type", "counts", "load_expected", "markdown",
           "regressions", "run_coverage", "write_expected"]

STATUSES = ("exact", "refused", "no-op", "mismatch")
#: A type that takes longer than this in a worker is stopped and reported as refused.
TYPE_TIMEOUT_S = 180.0
#: Address-space limit of a worker process (a guard, on top of the meta-device size check).
WORKER_MEMORY = 6 << 30


@dataclass
class TypeResult:
    """One model type's verdict, one line why, and what steerlab saw of it."""

    model_type: str
    status: str
    reason: str
    model_class: str = ""
    blocks: str = ""
    features: str = ""
    seconds: float = 0.0

    @property
    def category(self) -> str:
        """The reason's kind (the text before its first colon)."""
        return self.reason.split(":", 1)[0] if self.status != "exact" else "exact"


def _one_line(exc: BaseException, limit: int = 140) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


def _class_name(model_type: str) -> str:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return str(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, ""))


def check_type(model_type: str) -> TypeResult:
    """Build ``model_type`` tiny and check it; never raises for a model's own failures.

    Example:
        >>> check_type("gpt2").status
        'exact'
    """
    import torch

    from steerlab.model.arch import unsteerable_reason
    from steerlab.testing.checks import check_model
    from steerlab.testing.zoo import TINY, TooBig, build_tiny, tiny_config

    start = time.perf_counter()
    result = TypeResult(model_type, "refused", "", _class_name(model_type))

    def done(status: str, reason: str) -> TypeResult:
        result.status, result.reason = status, reason
        result.seconds = round(time.perf_counter() - start, 2)
        return result

    row = TINY.get(model_type)
    if row is not None and row.refuse:
        return done("refused", row.refuse)
    try:
        config = tiny_config(model_type)
    except Exception as exc:
        return done("refused", f"cannot be built tiny: config: {_one_line(exc)}")
    try:
        model = build_tiny(model_type)
    except TooBig as exc:
        return done("refused", f"cannot be built tiny: {exc}")
    except ImportError as exc:
        return done("refused", f"needs a missing dependency: {_one_line(exc, 80)}")
    except Exception as exc:
        if not _default_builds(model_type):
            return done("refused", f"cannot be built: transformers fails on its own default "
                                   f"config too: {_one_line(exc)}")
        return done("refused", f"cannot be built tiny: {_one_line(exc)}")
    if getattr(model.config, "is_encoder_decoder", False) and \
            callable(getattr(model, "get_encoder", None)):
        return done("refused", "encoder-decoder: no decoder-only residual stream to steer")
    set_language = getattr(model, "set_default_language", None)
    if callable(set_language):  # X-MOD: one language adapter must be chosen
        languages = getattr(model.config, "languages", None) or []
        if languages:
            set_language(languages[0])
    reason = unsteerable_reason(model)
    if reason is not None:
        return done("refused", f"steerlab refuses: {reason}")
    vocab = int(getattr(config.get_text_config(), "vocab_size", 512) or 512)
    ids = torch.randint(3, min(vocab, 512), (1, 6), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    except Exception as exc:
        return done("refused", f"does not run tiny: forward(input_ids) fails: "
                               f"{_one_line(exc, 100)}")
    try:
        report = check_model(model, prompt=ids)
    except SteerlabError as exc:
        return done("refused", f"steerlab refuses: {exc}")
    result.blocks = ", ".join(f"{len(ks)}× {name}" for name, ks in report.kinds.items())
    result.features = "; ".join(report.features)
    verdict = report.verdict
    if verdict == "exact":
        checks = len(report.findings)
        return done("exact", f"{checks} checks at {report.n_blocks} blocks hold")
    if verdict == "refused":
        refusal = report.refusal or ""
        if refusal.startswith("steerlab refuses"):
            return done("refused", refusal)
        return done("refused", f"model fails unsteered: {refusal}")
    bad = report.failures[0]
    return done(verdict, f"{bad.name}: {bad.detail}"
                         + (f" (max |Δ| {bad.error:.2g})" if bad.error is not None else ""))


def _default_builds(model_type: str) -> bool:
    """Whether transformers builds ``model_type`` from its default config (on the meta
    device: nothing is allocated)."""
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    try:
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(CONFIG_MAPPING[model_type]())
    except Exception:
        return False
    return True


# ---- running many types -------------------------------------------------------------------
def serve_worker() -> None:
    """A worker process: read model types from stdin (one a line), write one JSON result a
    line to stdout, until stdin closes. Started by :func:`run_coverage`."""
    import os
    import resource
    import sys
    import warnings

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    out = sys.stdout
    sys.stdout = sys.stderr  # a model that prints must not corrupt the result stream
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    for line in sys.stdin:
        model_type = line.strip()
        if not model_type:
            continue
        try:
            result = check_type(model_type)
        except BaseException as exc:
            result = TypeResult(model_type, "refused", f"checker crashed: {_one_line(exc)}",
                                _class_name(model_type))
        out.write(json.dumps(asdict(result)) + "\n")
        out.flush()


class _Slot:
    """One worker process (``python -c serve_worker()``) and the type it is working on."""

    def __init__(self) -> None:
        import subprocess
        import sys

        self.process = subprocess.Popen(
            [sys.executable, "-c", "from steerlab.testing.coverage import serve_worker; "
                                   "serve_worker()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1)
        self.model_type: str | None = None
        self.started = 0.0

    def give(self, model_type: str) -> None:
        assert self.process.stdin is not None
        self.model_type, self.started = model_type, time.monotonic()
        self.process.stdin.write(model_type + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except Exception:
            self.process.kill()
            self.process.wait()


def run_coverage(types: Iterable[str] | None = None, jobs: int = 1,
                 on_result: Callable[[TypeResult], None] | None = None,
                 timeout: float = TYPE_TIMEOUT_S) -> list[TypeResult]:
    """Check ``types`` (default: every causal-LM type) and return their results, sorted.

    ``jobs=1`` checks in this process (no isolation); ``jobs > 1`` uses that many worker
    processes, each restarted after a crash or a type that runs past ``timeout`` seconds.
    ``on_result`` is called with each result as it arrives.

    Example:
        >>> run_coverage(["llama"])[0].model_type
        'llama'
    """
    import selectors

    from steerlab.testing.zoo import causal_lm_types

    todo = sorted(types) if types is not None else causal_lm_types()
    results: list[TypeResult] = []

    def keep(result: TypeResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    if jobs <= 1:
        for model_type in todo:
            keep(check_type(model_type))
        return sorted(results, key=lambda r: r.model_type)
    queue = list(reversed(todo))
    slots = [_Slot() for _ in range(min(jobs, len(todo)))]
    try:
        while queue or any(s.model_type is not None for s in slots):
            selector = selectors.DefaultSelector()
            for slot in slots:
                if slot.model_type is None and queue:
                    slot.give(queue.pop())
                if slot.model_type is not None:
                    assert slot.process.stdout is not None
                    selector.register(slot.process.stdout, selectors.EVENT_READ, slot)
            ready = {key.data for key, _ in selector.select(timeout=1.0)}
            selector.close()
            for i, slot in enumerate(slots):
                if slot.model_type is None:
                    continue
                line = ""
                if slot in ready:
                    assert slot.process.stdout is not None
                    line = slot.process.stdout.readline()
                if line:
                    keep(TypeResult(**json.loads(line)))
                    slot.model_type = None
                    continue
                dead = slot.process.poll() is not None
                late = time.monotonic() - slot.started > timeout
                if dead or late:
                    why = (f"checker process died (exit {slot.process.returncode})" if dead
                           else f"timed out after {timeout:.0f} s")
                    keep(TypeResult(slot.model_type, "refused", f"cannot be checked: {why}",
                                    _class_name(slot.model_type),
                                    seconds=round(time.monotonic() - slot.started, 2)))
                    slot.process.kill()
                    slot.process.wait()
                    slots[i] = _Slot()
    finally:
        for slot in slots:
            slot.stop()
    return sorted(results, key=lambda r: r.model_type)


# ---- summaries, the committed table and the expectations ----------------------------------
def counts(results: Sequence[TypeResult]) -> dict[str, Counter[str]]:
    """``{status: Counter(reason category)}`` over ``results``.

    Example:
        >>> counts([TypeResult("a", "exact", "ok")])["exact"]["exact"]
        1
    """
    out: dict[str, Counter[str]] = {s: Counter() for s in STATUSES}
    for r in results:
        out.setdefault(r.status, Counter())[r.category] += 1
    return out


def summary_lines(results: Sequence[TypeResult]) -> list[str]:
    """One line per status with its count, refusals broken down by reason."""
    lines = []
    for status, by in counts(results).items():
        total = sum(by.values())
        if not total and status not in ("exact", "refused"):
            continue
        parts = "" if status == "exact" else " (" + ", ".join(
            f"{cat}: {n}" for cat, n in sorted(by.items(), key=lambda x: (-x[1], x[0]))) + ")"
        lines.append(f"{status}: {total}{parts if total else ''}")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(results: Sequence[TypeResult]) -> str:
    """The committed table (``docs/ARCHITECTURES.md``): deterministic, no timings."""
    import torch
    import transformers

    lines = [
        "# Architectures steerlab steers",
        "",
        "<!-- generated by `steerlab models check --markdown docs/ARCHITECTURES.md`; do not edit"
        " by hand (tests/unit/test_coverage.py checks it is up to date) -->",
        "",
        f"Every model type of transformers {transformers.__version__}'s causal-LM auto mapping "
        f"(torch {torch.__version__.split('+')[0]}), built tiny with random weights "
        "(`steerlab/testing/zoo.py`, per-type overrides in one table) and checked with "
        "steerlab's own machinery (`steerlab/testing/checks.py`):",
        "",
        "* **exact** — blocks found; at every block, `steerlab.steer` equals a hand-written "
        "forward hook adding v to the block's output (logits max |Δ| ≤ 1e-4) and moves the "
        "logits; `output_hidden_states[k+1]` is exactly h + v; extraction reads the block "
        "output; `positions=\"prompt\"` / `\"generation\"` under `model.generate` with the KV "
        "cache and under steerlab's own decoder match a no-cache reference loop; per-row specs "
        "in a left-padded batch match the hand hook row by row.",
        "* **refused** — loudly, with the reason below: steerlab raises a one-line error, or "
        "the model cannot take part (not a text decoder, cannot be built tiny, fails "
        "unsteered).",
        "* **no-op** / **mismatch** — steering ran silently and did nothing / the wrong thing: "
        "a bug (the coverage test fails on any).",
        "",
        "Check your own model: `steerlab doctor --model PATH_OR_ALIAS`.",
        "",
        "**Counts:** " + "; ".join(summary_lines(results)),
        "",
        "| model type | class | verdict | blocks | why / notes |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        why = "; ".join(filter(None, [r.reason, r.features if r.status == "exact" else ""]))
        lines.append(f"| `{r.model_type}` | {_cell(r.model_class)} | {r.status} | "
                     f"{_cell(r.blocks)} | {_cell(why)} |")
    return "\n".join(lines) + "\n"


def load_expected(path: str | Path) -> dict[str, str]:
    """``{model_type: status}`` from an expectations file (JSON)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise SteerlabError(f"{path}: expected a JSON object of model type -> status")
    return {str(k): str(v) for k, v in data.items()}


def write_expected(results: Sequence[TypeResult], path: str | Path) -> None:
    """Write ``{model_type: status}`` for ``results`` (sorted, one per line)."""
    from steerlab.util.io import atomic_write

    data = {r.model_type: r.status for r in sorted(results, key=lambda r: r.model_type)}
    atomic_write(Path(path), json.dumps(data, indent=1) + "\n")


def regressions(results: Sequence[TypeResult], expected: dict[str, str]) -> list[str]:
    """One line per type expected ``exact`` that no longer is (or was not checked)."""
    by_type = {r.model_type: r for r in results}
    out = []
    for model_type, status in sorted(expected.items()):
        if status != "exact":
            continue
        got = by_type.get(model_type)
        if got is None:
            out.append(f"{model_type}: expected exact, not in this transformers")
        elif got.status != "exact":
            out.append(f"{model_type}: expected exact, now {got.status}: {got.reason}")
    return out
