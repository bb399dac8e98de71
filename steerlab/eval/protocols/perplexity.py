"""The perplexity cost of steering on WikiText-2 (``steerlab eval perplexity``, DESIGN §7).

Protocol. The WikiText-2 raw test text (``<data>/text/wikitext-2-raw-test.txt``) is tokenized
once, without special tokens. The tiling is every window of W tokens (``--window``, default
256) starting at 0, S, 2S, … (``--stride`` S, default W: non-overlapping) that fits in the
text; ``--limit N`` (default 32; 0 = all) of them are used, a seeded random choice over the
whole tiling (in text order), so they sample the whole test set. A model
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
    $ steerlab eval perplexity --model smollm2-135m --vector v.safetensors --layers 12 \\
          --strengths=0,0.1,0.2,0.4 --out runs/ppl
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.data.benchmarks import WIKITEXT_NAME, wikitext_text
from steerlab.errors import SteerlabError
from steerlab.eval.configs.perplexity import POSITIONS, PerplexityConfig
from steerlab.eval.figures import Curves, band_lines, save_png
from steerlab.eval.run import EvalRun, file_sha256, stopwatch
from steerlab.eval.store import cell_id, make_record
from steerlab.eval.tables import console, fmt, fmt_ci, print_table
from steerlab.model.load import LoadedModel, load_model
from steerlab.scoring.likelihood import continuation_nll
from steerlab.steering.spec import SteeringSpec
from steerlab.util import stats
from steerlab.util.parse import resolve_layers
from steerlab.util.progress import bar
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector

DATA_NAME = WIKITEXT_NAME


@dataclass(frozen=True)
class WindowPlan:
    """Which windows of the token stream are scored, and where scoring starts in each.

    Example:
        >>> plan = plan_windows(1000, window=256, stride=256, n_windows=2)
        >>> plan.starts, plan.context, plan.n_scored
        ((256, 512), 1, 255)
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
                 prompt_tokens: int = 0, seed: int = 0) -> WindowPlan:
    """Lay W-token windows every ``stride`` tokens and pick ``n_windows`` of them by a seeded
    draw (in text order; 0 = all) — ``--limit``'s one meaning: a seeded subset of the items.

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
        raise SteerlabError(f"--limit must be 0 (all) or positive, got {n_windows}")
    if n_tokens < window:
        raise SteerlabError(f"the text has {n_tokens} tokens, fewer than one window of {window}")
    tiling = list(range(0, n_tokens - window + 1, stride))
    count = len(tiling) if n_windows == 0 else min(n_windows, len(tiling))
    picked = (list(range(len(tiling))) if count == len(tiling) else
              sorted(random.Random(seed).sample(range(len(tiling)), count)))
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
    text = wikitext_text(path)
    tokens = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = lm.tokenizer.bos_token_id
    with_special = list(lm.tokenizer("a")["input_ids"])
    prefix = [int(bos)] if bos is not None and with_special[:1] == [bos] else []
    return tokens, prefix


@dataclass
class _Run:
    """Everything one perplexity run shares across its cells."""

    lm: LoadedModel
    vec: SteeringVector
    run: EvalRun
    plan: WindowPlan
    rows: list[list[int]]
    prefix_len: int
    positions: str
    unit: Unit
    seed: int
    batch_size: int

    def fields(self, **extra: Any) -> dict[str, Any]:
        return {"command": "perplexity", "model": self.lm.model_id, "data": DATA_NAME,
                "split": "test", "seed": self.seed, "n": len(self.rows), "method": self.vec.method,
                "site": self.vec.site, "window": self.plan.window, "stride": self.plan.stride,
                "context": self.plan.context, "positions": self.positions,
                "tokens_per_window": self.plan.n_scored, **extra}

    def cell(self, **parts: Any) -> str:
        return cell_id("perplexity", window=self.plan.window, stride=self.plan.stride,
                              windows=len(self.rows), positions=self.positions,
                              context=self.plan.context, **parts)

    def nll(self, spec: SteeringSpec | None) -> list[float]:
        return window_nlls(self.lm, self.rows, self.plan, spec, prefix_len=self.prefix_len,
                           batch_size=self.batch_size, progress=False)


def _baseline(run: _Run) -> list[float]:
    """Unsteered per-window NLLs: from the store if an earlier run measured them."""
    cell = run.cell(baseline=True)
    if not run.run.store.done(cell):
        with stopwatch() as t:
            nll = run.nll(None)
        ppl = ppl_ci(nll, run.seed)
        run.run.add(cell, [make_record("ppl", ppl[0], ci=ppl[1:], seconds=t[0],
                                         **run.fields(window_nll=nll, baseline=True))])
    record = run.run.store.records(cell=cell, metric="ppl")[0]
    return [float(x) for x in record["extra"]["window_nll"]]


def _measure(run: _Run, layer: int, value: float, base: list[float]) -> None:
    cell = run.cell(layer=layer, **{run.unit: value})
    if run.run.store.done(cell):
        return
    with stopwatch() as t:
        nll = base if value == 0 else run.nll(SteeringSpec.at(run.vec, [layer], value,
                                                              unit=run.unit,
                                                              positions=run.positions))
    ppl, ratio = ppl_ci(nll, run.seed), ratio_ci(nll, base, run.seed)
    fields = run.fields(layer=layer, seconds=t[0], **{run.unit: value})
    run.run.add(cell, [make_record("ppl", ppl[0], ci=ppl[1:], **fields, window_nll=nll),
                         make_record("ppl_ratio", ratio[0], ci=ratio[1:], **fields)])


def _report(run: _Run, layers: list[int], values: list[float], out: Path) -> Path:
    rows, series = [], {}
    for layer in layers:
        band: tuple[list[float], list[float], list[float]] = ([], [], [])
        for value in values:
            cell = run.cell(layer=layer, **{run.unit: value})
            ppl = run.run.store.records(cell=cell, metric="ppl")[0]
            ratio = run.run.store.records(cell=cell, metric="ppl_ratio")[0]
            for seq, key in zip(band, ("value", "ci_low", "ci_high"), strict=True):
                seq.append(math.nan if ratio[key] is None else ratio[key])
            rows.append([layer, f"{value:+g}", fmt_ci(ppl["value"], ppl["ci_low"],
                                                             ppl["ci_high"], 2),
                         fmt_ci(ratio["value"], ratio["ci_low"], ratio["ci_high"]),
                         ppl["n"], fmt(ppl["seconds"], 1)])
        series[f"layer {layer}"] = band
    print_table(f"perplexity ({DATA_NAME}, {len(run.rows)} windows × "
                       f"{run.plan.n_scored} tokens, positions={run.positions})",
                ["layer", run.unit, "ppl [95% CI]", "ratio [95% CI]", "windows", "seconds"],
                rows, caption="95 % seeded paired bootstrap intervals over windows")
    plot = out / "perplexity_ratio.png"
    save_png(plot, [Curves(f"{run.lm.model_id}: perplexity cost on {DATA_NAME} "
                           f"({len(run.rows)} windows × {run.plan.n_scored} tokens, "
                           f"positions={run.positions})", run.unit,
                           "steered / unsteered perplexity (log scale)",
                           band_lines(values, series), logy=True, hline=1.0)],
             note=f"shaded: 95 % paired bootstrap interval over {len(run.rows)} windows")
    return plot


def run(cfg: PerplexityConfig) -> dict[tuple[int, float], tuple[float, float, float]]:
    """Perplexity ratio (steered / unsteered) per (layer, value), with intervals.

    ``limit`` is the number of windows (a seeded choice among all that fit; 0 = all).
    """
    if cfg.positions not in POSITIONS:
        raise SteerlabError(f"--positions must be one of {', '.join(POSITIONS)}, got "
                            f"{cfg.positions!r}")
    values = [float(v) for v in cfg.values]
    study = EvalRun(cfg.out, "perplexity", cfg.settings())
    lm = load_model(cfg.model)
    vec = SteeringVector.load(cfg.vector, model=lm)
    study.update({"model_revision": lm.revision, "vector_sha256": file_sha256(cfg.vector)})
    layer_list = resolve_layers(cfg.layers, lm.n_layers)
    for layer in layer_list:
        SteeringSpec.at(vec, [layer], values[-1], unit=cfg.unit,
                        positions=cfg.positions).resolved_layers(lm.n_layers)
    from steerlab.eval.behaviour import explain_values

    explain_values(vec, layer_list, cfg.unit, values)
    tokens, prefix = load_tokens(lm)
    k = (cfg.prompt_tokens or cfg.window // 2) if cfg.positions == "generation" else 0
    plan = plan_windows(len(tokens), window=cfg.window, stride=cfg.stride, n_windows=cfg.limit,
                        prompt_tokens=k, seed=cfg.seed)
    console.print(f"{DATA_NAME}: {len(plan.starts)} windows × {plan.n_scored} scored tokens "
                  f"(--limit {cfg.limit}; 0 = all)")
    ppl_run = _Run(lm, vec, study, plan, plan.rows(tokens, prefix), len(prefix), cfg.positions,
                   cfg.unit, cfg.seed, cfg.batch_size)
    base = _baseline(ppl_run)
    cells = [(layer, value) for layer in layer_list for value in values]
    with bar(len(cells), "perplexity cells", unit="cell") as progress:
        for layer, value in cells:
            _measure(ppl_run, layer, value, base)
            progress.update(1)
    plot = _report(ppl_run, layer_list, values, Path(cfg.out))
    study.finish([plot])
    out = {}
    for layer, value in cells:
        rec = study.store.records(cell=ppl_run.cell(layer=layer, **{cfg.unit: value}),
                                  metric="ppl_ratio")[0]
        out[(layer, value)] = (rec["value"], rec["ci_low"], rec["ci_high"])
    return out
