"""``steerlab eval perplexity``: the perplexity cost of steering on WikiText-2 (DESIGN §7).

Protocol. The WikiText-2 raw test text (``<data>/text/wikitext-2-raw-test.txt``) is tokenized
once, without special tokens. The tiling is every window of W tokens (``--window``, default
256) starting at 0, S, 2S, … (``--stride`` S, default W: non-overlapping) that fits in the
text; ``--windows N`` (default 32; 0 = all) of them are used, evenly spaced over the tiling
(indices round(i·(M−1)/(N−1)) of the M windows), so they sample the whole test set. A model
whose tokenizer adds a BOS token gets one in front of each window (never scored, not counted
in W).

In each window, local token t (0-based) is scored from the logits at t − 1, for
``context ≤ t ≤ W − 1`` where ``context = max(1, W − S, K)``:

* S = W (default): every token but the first is scored (W − 1 per window);
* S < W: only the last S tokens, so each scored token has at least W − S tokens of context;
* K = 0 with ``--positions all``: steering is added at **every** token of the window
  (context and scored alike) — the cost of a vector left on for the whole text;
* ``--positions generation``: the first K tokens (``--prompt-tokens``, default W/2) are a
  "prompt" that runs unsteered; steering starts at token K (steerlab's ``generation``
  positions with prompt length K) and only tokens K … W − 1 are scored. Token K itself comes
  from the last unsteered prompt position, exactly as the first token a steered
  ``generate(..., positions="generation")`` would produce. This is the likelihood that a
  generator steered from the end of its prompt on assigns to natural text.

Every window has the same number of scored tokens, so token-level perplexity is
exp(mean over windows of the window's mean NLL). The steered/unsteered **ratio** is
exp(mean_w d_w), d_w = steered − unsteered mean NLL of window w (the same tokens), and its 95 %
interval is exp of the seeded percentile bootstrap over windows of mean d (paired, 2000
resamples); the perplexity's own interval is the bootstrap over window NLLs likewise.

Example:
    $ steerlab eval perplexity --model smollm2-135m --vector v.safetensors --layer 12 \\
          --coefficients=0,1,2,4,8 --out runs/ppl
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from tqdm.auto import tqdm

from steerlab.errors import SteerlabError
from steerlab.eval import common
from steerlab.eval.plots import save_curves
from steerlab.eval.store import ResultStore, make_record
from steerlab.model.load import LoadedModel
from steerlab.scoring.likelihood import continuation_nll
from steerlab.steering.spec import SteeringSpec
from steerlab.util import stats
from steerlab.util.parse import resolve_layers, unit_values
from steerlab.vector import SteeringVector

TEXT = "text/wikitext-2-raw-test.txt"
DATA_NAME = "wikitext-2-raw-test"
POSITIONS = ("all", "generation")


@dataclass(frozen=True)
class WindowPlan:
    """Which windows of the token stream are scored, and where scoring starts in each.

    Example:
        >>> plan = plan_windows(1000, window=256, stride=256, n_windows=2)
        >>> plan.starts, plan.context, plan.n_scored
        ((0, 512), 1, 255)
    """

    window: int
    stride: int
    context: int  # first scored local index; steering starts here in generation mode
    starts: tuple[int, ...]
    prompt_tokens: int = 0  # K: unsteered prompt in generation mode (0 = steer everything)

    @property
    def n_scored(self) -> int:
        """Scored tokens per window."""
        return self.window - self.context

    def rows(self, tokens: Sequence[int], prefix: Sequence[int] = ()) -> list[list[int]]:
        """The token rows of the windows (``prefix``, e.g. BOS, in front of each)."""
        return [[*prefix, *tokens[s:s + self.window]] for s in self.starts]


def plan_windows(n_tokens: int, *, window: int = 256, stride: int = 0, n_windows: int = 32,
                 prompt_tokens: int = 0) -> WindowPlan:
    """Lay W-token windows every ``stride`` tokens and pick ``n_windows`` evenly (0 = all).

    ``stride`` 0 means ``window`` (non-overlapping). Scored local positions are
    ``max(1, window − stride, prompt_tokens) … window − 1``.

    Example:
        >>> p = plan_windows(10, window=4, stride=2, n_windows=0)
        >>> p.starts, p.context, p.n_scored
        ((0, 2, 4, 6), 2, 2)
        >>> plan_windows(10, window=4, n_windows=0, prompt_tokens=3).context
        3
    """
    stride = stride or window
    if window < 2:
        raise SteerlabError(f"--window must be at least 2 tokens, got {window}")
    if not 1 <= stride <= window:
        raise SteerlabError(f"--stride must be between 1 and the window ({window}), got {stride}")
    if not 0 <= prompt_tokens < window:
        raise SteerlabError(f"--prompt-tokens must be in [0, {window - 1}], got {prompt_tokens}")
    if n_windows < 0:
        raise SteerlabError(f"--windows must be 0 (all) or positive, got {n_windows}")
    if n_tokens < window:
        raise SteerlabError(f"the text has {n_tokens} tokens, fewer than one window of {window}")
    tiling = list(range(0, n_tokens - window + 1, stride))
    count = len(tiling) if n_windows == 0 else min(n_windows, len(tiling))
    if count == 1:
        picked = [0]
    else:
        picked = [round(i * (len(tiling) - 1) / (count - 1)) for i in range(count)]
    context = max(1, window - stride, prompt_tokens)
    return WindowPlan(window, stride, context, tuple(tiling[i] for i in picked), prompt_tokens)


def perplexity(window_nll: Sequence[float]) -> float:
    """Token-level perplexity from per-window mean NLLs (equal token counts per window).

    Example:
        >>> round(perplexity([math.log(2.0), math.log(8.0)]), 6)   # exp(mean) = 4
        4.0
    """
    if not window_nll:
        return math.nan
    return math.exp(sum(window_nll) / len(window_nll))


def ppl_ci(window_nll: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """Perplexity and its 95 % interval: exp of the bootstrap over windows of the mean NLL.

    Example:
        >>> [round(x, 6) for x in ppl_ci([math.log(3.0)] * 4)]
        [3.0, 3.0, 3.0]
    """
    mean, low, high = stats.bootstrap_ci(list(window_nll), seed=seed)
    return _exp3(mean, low, high)


def ratio_ci(steered: Sequence[float], base: Sequence[float],
             seed: int = 0) -> tuple[float, float, float]:
    """Steered/unsteered perplexity ratio exp(mean d) with a paired bootstrap 95 % interval.

    Example:
        >>> r, lo, hi = ratio_ci([1.5, 2.5], [1.0, 2.0])   # every window +0.5 nats
        >>> round(r, 4), round(lo, 4), round(hi, 4)
        (1.6487, 1.6487, 1.6487)
    """
    if len(steered) != len(base):
        raise SteerlabError(f"ratio needs paired windows, got {len(steered)} and {len(base)}")
    diffs = [s - b for s, b in zip(steered, base, strict=True)]
    return _exp3(*stats.bootstrap_ci(diffs, seed=seed))


def _exp3(mean: float, low: float, high: float) -> tuple[float, float, float]:
    return math.exp(mean), math.exp(low), math.exp(high)


def window_nlls(lm: LoadedModel, rows: Sequence[Sequence[int]], plan: WindowPlan,
                steering: SteeringSpec | None = None, *, prefix_len: int = 0,
                batch_size: int = 4, progress: bool = False) -> list[float]:
    """Mean NLL (nats/token) of each window's scored tokens, under ``steering``.

    ``rows`` come from :meth:`WindowPlan.rows`; ``prefix_len`` is the BOS prefix length.
    In ``generation`` mode the spec's prompt is the prefix plus the window's first
    ``plan.prompt_tokens`` tokens.

    Example:
        >>> window_nlls(lm, plan.rows(tokens), plan)        # doctest: +SKIP
        [3.1, 2.9]
    """
    start = prefix_len + plan.context
    prompt = [prefix_len + plan.prompt_tokens] * len(rows)
    nll = continuation_nll(lm, rows, [start] * len(rows), steering, prompt_lengths=prompt,
                           batch_size=batch_size, progress=progress, desc="windows")
    return [sum(row) / len(row) for row in nll]


def load_tokens(lm: LoadedModel, path: Path | None = None) -> tuple[list[int], list[int]]:
    """WikiText-2 test tokenized once (no special tokens), and the BOS prefix (or ``[]``)."""
    from steerlab.data.loaders import data_dir

    source = path or data_dir() / TEXT
    if not source.is_file():
        raise SteerlabError(f"{source}: WikiText-2 test text not found (put shared/data beside "
                            "the repo or set STEERLAB_DATA)")
    text = source.read_text(encoding="utf-8")
    tokens = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = lm.tokenizer.bos_token_id
    with_special = list(lm.tokenizer("a")["input_ids"])
    prefix = [int(bos)] if bos is not None and with_special[:1] == [bos] else []
    return tokens, prefix


def _spec(vec: SteeringVector, layer: int, unit: str, value: float,
          positions: str) -> SteeringSpec:
    return SteeringSpec(vec, layers=[layer], positions=positions,
                        coefficient=value if unit == "coefficient" else None,
                        strength=value if unit == "strength" else None)


@dataclass
class _Run:
    """Everything one perplexity run shares across its cells."""

    lm: LoadedModel
    vec: SteeringVector
    store: ResultStore
    plan: WindowPlan
    rows: list[list[int]]
    prefix_len: int
    positions: str
    unit: str
    seed: int
    batch_size: int

    def fields(self, **extra: Any) -> dict[str, Any]:
        return {"command": "perplexity", "model": self.lm.model_id, "data": DATA_NAME,
                "split": "test", "seed": self.seed, "n": len(self.rows), "method": self.vec.method,
                "site": self.vec.site, "window": self.plan.window, "stride": self.plan.stride,
                "context": self.plan.context, "positions": self.positions,
                "tokens_per_window": self.plan.n_scored, **extra}

    def cell(self, **parts: Any) -> str:
        return common.cell_id("perplexity", window=self.plan.window, stride=self.plan.stride,
                              windows=len(self.rows), positions=self.positions,
                              context=self.plan.context, **parts)

    def nll(self, spec: SteeringSpec | None) -> list[float]:
        return window_nlls(self.lm, self.rows, self.plan, spec, prefix_len=self.prefix_len,
                           batch_size=self.batch_size, progress=True)


def _baseline(run: _Run) -> list[float]:
    """Unsteered per-window NLLs: from the store if an earlier run measured them."""
    cell = run.cell(baseline=True)
    if not run.store.done(cell):
        with common.stopwatch() as t:
            nll = run.nll(None)
        ppl = ppl_ci(nll, run.seed)
        run.store.add(cell, [make_record("ppl", ppl[0], ci=ppl[1:], seconds=t[0],
                                         **run.fields(window_nll=nll, baseline=True))])
    record = run.store.records(cell=cell, metric="ppl")[0]
    return [float(x) for x in record["extra"]["window_nll"]]


def _measure(run: _Run, layer: int, value: float, base: list[float]) -> None:
    cell = run.cell(layer=layer, **{run.unit: value})
    if run.store.done(cell):
        return
    with common.stopwatch() as t:
        nll = base if value == 0 else run.nll(_spec(run.vec, layer, run.unit, value,
                                                    run.positions))
    ppl, ratio = ppl_ci(nll, run.seed), ratio_ci(nll, base, run.seed)
    fields = run.fields(layer=layer, seconds=t[0], **{run.unit: value})
    run.store.add(cell, [make_record("ppl", ppl[0], ci=ppl[1:], **fields, window_nll=nll),
                         make_record("ppl_ratio", ratio[0], ci=ratio[1:], **fields)])


def _report(run: _Run, layers: list[int], values: list[float], out: Path) -> Path:
    rows, series = [], {}
    for layer in layers:
        band: tuple[list[float], list[float], list[float]] = ([], [], [])
        for value in values:
            cell = run.cell(layer=layer, **{run.unit: value})
            ppl = run.store.records(cell=cell, metric="ppl")[0]
            ratio = run.store.records(cell=cell, metric="ppl_ratio")[0]
            for seq, key in zip(band, ("value", "ci_low", "ci_high"), strict=True):
                seq.append(math.nan if ratio[key] is None else ratio[key])
            rows.append([layer, f"{value:+g}", common.fmt_ci(ppl["value"], ppl["ci_low"],
                                                             ppl["ci_high"], 2),
                         common.fmt_ci(ratio["value"], ratio["ci_low"], ratio["ci_high"]),
                         ppl["n"], common.fmt(ppl["seconds"], 1)])
        series[f"layer {layer}"] = band
    common.print_table(f"perplexity ({DATA_NAME}, {len(run.rows)} windows × "
                       f"{run.plan.n_scored} tokens, positions={run.positions})",
                       ["layer", run.unit, "ppl [95% CI]", "ratio [95% CI]", "windows", "s"],
                       rows)
    plot = out / "perplexity_ratio.png"
    save_curves(plot, values, series, xlabel=run.unit, ylabel="steered / unsteered perplexity",
                title=f"{run.lm.model_id}: perplexity cost ({run.positions})", hline=1.0)
    return plot


def command(
    vector: Path = typer.Option(..., "--vector", help="Steering vector (.safetensors)."),
    layers: str = typer.Option(..., "--layer", "--layers", help="Layer(s), each on its own: "
                               "12 or 8,12,16."),
    coefficients: str = typer.Option(None, "--coefficients", help="e.g. 0,1,2,4,8 or 0:8:2"),
    strengths: str = typer.Option(None, "--strengths", help="Like --coefficients, in units of "
                                  "the mean residual norm."),
    positions: str = typer.Option("all", "--positions", help="all: steer every token; "
                                  "generation: steer from --prompt-tokens on, score only "
                                  "those tokens."),
    window: int = typer.Option(256, "--window", help="Tokens per window (W)."),
    stride: int = typer.Option(0, "--stride", help="Window start spacing S (0 = W). S < W "
                               "scores only each window's last S tokens."),
    windows: int = typer.Option(32, "--windows", help="Windows used, evenly spaced over the "
                                "text (0 = all)."),
    prompt_tokens: int = typer.Option(0, "--prompt-tokens", help="K for --positions "
                                      "generation (0 = W/2)."),
    model: str = common.MODEL,
    out: Path = common.OUT,
    limit: int = common.LIMIT,
    seed: int = common.SEED,
    batch_size: int = typer.Option(4, "--batch-size", help="Windows per forward pass."),
) -> None:
    """Perplexity ratio (steered / unsteered) on WikiText-2 test vs coefficient, with CIs."""
    import steerlab

    common.check_limit(limit)
    unit, values = unit_values(coefficients, strengths)
    if positions not in POSITIONS:
        raise SteerlabError(f"--positions must be one of {', '.join(POSITIONS)}, got "
                            f"{positions!r}")
    if batch_size < 1:
        raise SteerlabError(f"--batch-size must be >= 1, got {batch_size}")
    store = ResultStore(out)
    lm = steerlab.load_model(model)
    vec = steerlab.SteeringVector.load(vector, model=lm)
    layer_list = resolve_layers(layers, lm.n_layers)
    for layer in layer_list:
        _spec(vec, layer, unit, values[-1], positions).resolved_layers(lm.n_layers)
    tokens, prefix = load_tokens(lm)
    k = (prompt_tokens or window // 2) if positions == "generation" else 0
    n_windows = min(windows, limit) if limit and windows else (limit or windows)
    plan = plan_windows(len(tokens), window=window, stride=stride, n_windows=n_windows,
                        prompt_tokens=k)
    run = _Run(lm, vec, store, plan, plan.rows(tokens, prefix), len(prefix), positions, unit,
               seed, batch_size)
    base = _baseline(run)
    cells = [(layer, value) for layer in layer_list for value in values]
    for layer, value in tqdm(cells, desc="perplexity cells"):
        _measure(run, layer, value, base)
    plot = _report(run, layer_list, values, out)
    common.done_line(out, [plot])
