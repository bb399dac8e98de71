"""One gradient-guided discrete suffix search; GCG and EPO are configurations of it.

Each iteration:

1. **Token gradient.** For every population member i, the gradient of
   ``loss_i = −objective + X_i · xent`` w.r.t. the one-hot of its suffix (one batched forward
   and backward over the members whose suffix changed, the prompt prefix from the KV cache).
2. **Top-k.** Per position, the ``topk`` allowed tokens with the most negative gradient.
3. **Candidates.** ``children`` single-token swaps per member: positions spread evenly over
   the suffix (in a random order), at each position distinct tokens drawn uniformly from its
   top-k, never the token already there; duplicates across members are dropped.
4. **Filter.** Candidates must survive decode → encode (``retokenize``: the whole prompt text,
   by default, or the suffix alone); twice as many are drawn so filtering does not thin the
   batch.
5. **Evaluate** all candidates (batched; the prompt prefix from the KV cache, and each band of
   children continues its parent's cache after the suffix tokens they all share — a swap at
   position p leaves tokens 0…p−1 as they were) and **select**: slot i takes the
   candidate (GCG) or candidate-or-parent (EPO, ``keep_parents``) minimising ``loss_i``. GCG
   moves to its best child even when it is worse than the current suffix, as GCG does; the
   result is always the best suffix *seen* (highest objective, then lowest xent), the start
   included, so it is never worse than the start. EPO restarts every ``restart_every``
   iterations: every slot takes the pool's best under ``−objective + restart_penalty · xent``.

Over the whole run the Pareto frontier of (objective ↑, xent ↓) of every evaluated suffix is
kept (the true frontier, not only its convex hull). When selection never reads xent (GCG: no
fluency penalty, no restarts; :attr:`SearchConfig.selects_on_xent`), candidates are scored
without the logits of their suffix positions — about a tenth of a candidate forward saved — and
only the chosen member's xent is measured each iteration, so the frontier holds the members;
the best objective reached is the same either way (tested). Everything random comes from one
``torch.Generator`` seeded by ``seed``; on CPU a run is bit-for-bit repeatable.

**Steering and the suffix.** The suffix sits in the user turn (see
:mod:`steerlab.attack.layout`). With ``positions="all"`` (or ``"prompt"``) the steering covers
the suffix tokens, so the search attacks a model that is steered while it reads the suffix; with
``"after_instruction"`` (CAA's choice) the suffix is read unsteered and only the tokens after
the user turn are steered. Both are tested. The suffix cross-entropy ``xent`` is measured in
the same (steered) forward; :attr:`SearchResult.xent_unsteered` is the best suffix's under the
unsteered model.

Defaults: :func:`gcg` — 250 iterations, 20 tokens, 512 candidates, top-k 256 (llm-attacks /
nanoGCG); :func:`epo` — population 8 with X log-spaced from 0.1 to 10
(``exp(linspace(log 0.1, log 10, 8))`` ≈ 0.10, 0.19, 0.37, 0.72, 1.39, 2.68, 5.18, 10.0, as in
the EPO code; there is no X = 0 member there — pass ``x_penalties`` with a 0 to add one),
300 iterations, 12 tokens, 32 children per member, top-k 512, restart every 50 iterations
with penalty 2.

Example:
    >>> from steerlab.data import ABItem
    >>> from steerlab.attack.objectives import ab_flip
    >>> from steerlab.model.load import as_loaded
    >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
    >>> lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    >>> obj = ab_flip(lm, ABItem("Yes or no?\\n(A) Yes\\n(B) No", "(A)", "(B)"))
    >>> res = search(lm, obj, None, gcg(suffix_length=4, iterations=2, children=8, topk=16),
    ...              progress=False)
    >>> res.objective >= res.start_objective
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from steerlab.attack.layout import decode_all
from steerlab.attack.objectives import Objective
from steerlab.attack.runner import SuffixRunner
from steerlab.attack.search_config import SearchConfig, gcg
from steerlab.attack.search_result import Best, Frontier, SearchResult, StepRecord
from steerlab.attack.tokens import allowed_tokens, initial_suffix
from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel
from steerlab.steering.spec import Steering
from steerlab.util.progress import bar as progress_bar

#: How many candidates are drawn per kept one when a re-tokenisation filter is on.
OVERSAMPLE = 2


def sample_swaps(suffix: torch.Tensor, grad: torch.Tensor, allowed: torch.Tensor, n: int,
                 topk: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``n`` distinct single-token swaps ``[m, L]`` of ``suffix`` guided by ``grad``.

    Positions are spread evenly (each gets ⌈n/L⌉ or one fewer, in a random order); at each,
    distinct tokens are drawn from its ``topk`` allowed tokens with the most negative gradient,
    excluding the token already there. Rows come interleaved across positions.

    Example:
        >>> g = torch.zeros(2, 6); g[:, 4] = -1.0
        >>> sorted(sample_swaps(torch.tensor([0, 1]), g, torch.ones(6, dtype=torch.bool), 2, 1,
        ...                     torch.Generator().manual_seed(0)).tolist())
        [[0, 4], [4, 1]]
    """
    length = int(suffix.shape[0])
    scores = grad.clone()
    scores[:, ~allowed] = math.inf
    k = min(int(topk), int(allowed.sum()))
    top = (-scores).topk(k, dim=1).indices  # [L, k]
    per = min(k, -(-n // length))
    ranks = torch.argsort(torch.rand(length, k, generator=generator), dim=1)[:, :per]
    order = torch.randperm(length, generator=generator)
    pos = order[:, None].expand(length, per).T.reshape(-1)  # rank-major: positions interleaved
    tok = torch.gather(top[order], 1, ranks[order]).T.reshape(-1)
    keep = tok != suffix[pos]
    pos, tok = pos[keep][:n], tok[keep][:n]
    out = suffix.repeat(len(pos), 1)
    out[torch.arange(len(pos)), pos] = tok
    return out


def _check_lm(lm: Any) -> LoadedModel:
    if not isinstance(lm, LoadedModel):
        raise SteerlabError(f"expected a LoadedModel, got {type(lm).__name__} "
                            "(wrap a bare model with steerlab.model.load.as_loaded)")
    if lm.tokenizer is None:
        raise SteerlabError("the model has no tokenizer; the suffix search needs one")
    return lm


class _Setup:
    """What every search on one item needs: runners, mask, start, reference values."""

    def __init__(self, lm: LoadedModel, objective: Objective, steering: Steering,
                 config: SearchConfig):
        self.lm, self.objective, self.config = lm, objective, config
        self.tok = lm.tokenizer
        self.runner = SuffixRunner(lm, objective, steering,
                                   use_prefix_cache=config.use_prefix_cache,
                                   batch_size=config.batch_size)
        self.plain = SuffixRunner(lm, objective, None, use_prefix_cache=config.use_prefix_cache,
                                  batch_size=config.batch_size)
        self.allowed = allowed_tokens(self.tok, self.runner.rows,
                                      allow_non_ascii=config.allow_non_ascii,
                                      forbid=config.forbid)
        self.start = torch.tensor(initial_suffix(self.tok, config.suffix_length, self.allowed,
                                                 config.init), dtype=torch.long)
        empty = torch.zeros(1, 0, dtype=torch.long)
        self.reference = float(self.plain.score(empty)[0][0])
        self.steered_no_suffix = float(self.runner.score(empty)[0][0])
        value, xent = self.runner.score(self.start[None])
        self.start_value, self.start_xent = float(value[0]), float(xent[0])

    def filter(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows that pass the re-tokenisation filter (all when it is off)."""
        if self.config.retokenize == "off" or not len(rows):
            return rows
        ok = self.objective.prompt.stable(self.tok, rows.tolist(), self.config.retokenize)
        return rows[torch.tensor(ok, dtype=torch.bool)]

    def finish(self, method: str, best: Best, frontier: Frontier, steps: list[StepRecord],
               iterations: int, evaluations: int, started: float) -> SearchResult:
        text = decode_all(self.tok, [best.ids.tolist()])[0]
        xent_unsteered = float(self.plain.score(best.ids[None])[1][0])
        return SearchResult(
            method=method, objective_name=self.objective.name,
            suffix_ids=tuple(best.ids.tolist()), suffix_text=text,
            user_text=self.objective.prompt.user_text(text), objective=best.value,
            xent=best.xent, xent_unsteered=xent_unsteered,
            start_ids=tuple(self.start.tolist()), start_objective=self.start_value,
            start_xent=self.start_xent, reference=self.reference,
            steered_no_suffix=self.steered_no_suffix, success=best.value >= self.reference,
            iterations=iterations, evaluations=evaluations,
            seconds=time.perf_counter() - started, seed=self.config.seed,
            frontier=frontier.export(self.tok), steps=steps)


def _fresh(rows: torch.Tensor, seen: set[tuple[int, ...]]) -> torch.Tensor:
    """Rows not in ``seen`` (and not repeated), in order; adds them to ``seen``."""
    keep = []
    for i, row in enumerate(rows.tolist()):
        key = tuple(row)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return rows[torch.tensor(keep, dtype=torch.long)] if keep else rows[:0]


def _known_xent(setup: _Setup, members: torch.Tensor, xents: torch.Tensor) -> torch.Tensor:
    """``xents`` with the NaN ones (skipped when scoring candidates) measured."""
    missing = torch.isnan(xents)
    if not bool(missing.any()):
        return xents
    out = xents.clone()
    out[missing] = setup.runner.score(members[missing])[1]
    return out


def search(lm: LoadedModel, objective: Objective, steering: Steering = None,
           config: SearchConfig | None = None, *, progress: bool = True) -> SearchResult:
    """Search for a suffix that maximises ``objective`` under ``steering``.

    ``steering``: what :func:`steerlab.steer` takes as ``spec`` (a SteeringSpec or a list of
    them); active in every forward. ``config``: :func:`gcg` (default) or :func:`epo`. A tqdm
    bar shows the best objective and its xent.

    Example:
        >>> import steerlab
        >>> from steerlab.attack.objectives import ab_flip
        >>> from steerlab.attack.search_config import epo
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()                     # steerlab.load_model(...) on a real model
        >>> item = steerlab.ABItem("Yes or no?\\n(A) Yes\\n(B) No", "(A)", "(B)")
        >>> vec = steerlab.extract(lm, [("I refuse to help.", "Sure, here you go.")], layers=[2],
        ...                        progress=False)
        >>> spec = steerlab.SteeringSpec(vec, layers=[2], strength=0.4)
        >>> res = search(lm, ab_flip(lm, item), spec,
        ...              epo(iterations=1, suffix_length=3, children=2, topk=8), progress=False)
        >>> type(res.success), len(res.suffix_ids), len(res.frontier) > 0
        (<class 'bool'>, 3, True)
    """
    lm = _check_lm(lm)
    config = config or gcg()
    if config.method == "random":
        raise SteerlabError("method 'random' is the baseline: use random_search()")
    started = time.perf_counter()
    setup = _Setup(lm, objective, steering, config)
    gen = torch.Generator().manual_seed(int(config.seed))
    penalties = torch.tensor(config.x_penalties, dtype=torch.float32)
    slots = config.population
    members = setup.start.repeat(slots, 1)
    m_value = torch.full((slots,), setup.start_value)
    m_xent = torch.full((slots,), setup.start_xent)
    best = Best(setup.start, setup.start_value, setup.start_xent)
    frontier = Frontier()
    frontier.add(setup.start[None], m_value[:1], m_xent[:1], 0)
    grads: dict[int, tuple[tuple[int, ...], torch.Tensor]] = {}
    steps: list[StepRecord] = []
    evaluations, done = 1, 0
    draw = config.children * (1 if config.retokenize == "off" else OVERSAMPLE)
    fluent = config.selects_on_xent
    bar = progress_bar(config.iterations, f"{config.method} {objective.name}",
                       unit="iteration", enabled=progress)
    try:
        for it in range(1, config.iterations + 1):
            if config.early_stop and best.value >= setup.reference:
                break
            stale = [i for i in range(slots)
                     if grads.get(i, ((), None))[0] != tuple(members[i].tolist())]
            if stale:
                grad, _, _ = setup.runner.gradient(members[stale], penalties[stale])
                for j, i in enumerate(stale):
                    grads[i] = (tuple(members[i].tolist()), grad[j])
            seen = {tuple(row) for row in members.tolist()}
            children, scored = [], []
            for i in range(slots):
                rows = sample_swaps(members[i], grads[i][1], setup.allowed, draw, config.topk,
                                    gen)
                rows = _fresh(setup.filter(rows), seen)[: config.children]
                children.append(rows)
                scored.append(setup.runner.score_children(members[i], rows, xent=fluent))
            cand = torch.cat(children)
            if len(cand):
                values = torch.cat([v for v, _ in scored])
                xents = torch.cat([x for _, x in scored])
                evaluations += len(cand)
                if fluent:
                    frontier.add(cand, values, xents, it)
                    best.update(cand, values, xents)
                if config.keep_parents:
                    pool = torch.cat([members, cand])
                    p_value, p_xent = torch.cat([m_value, values]), torch.cat([m_xent, xents])
                else:
                    pool, p_value, p_xent = cand, values, xents
                safe = torch.where(torch.isfinite(p_value), p_value,
                                   torch.full_like(p_value, -math.inf))
                loss = -safe[None] + penalties[:, None] * p_xent[None] if fluent else \
                    -safe[None].expand(slots, -1)  # candidates' xent is NaN: unread
                keep = loss.argmin(dim=1)
                if config.restart_every and it % config.restart_every == 0:
                    keep[:] = int((-safe + config.restart_penalty * p_xent).argmin())
                members, m_value, m_xent = pool[keep].clone(), p_value[keep], p_xent[keep]
                if not fluent:  # the candidates' xent was skipped: measure the members' only
                    m_xent = _known_xent(setup, members, m_xent)
                    frontier.add(members, m_value, m_xent, it)
                    best.update(members, m_value, m_xent)
            done = it
            previous = steps[-1].seconds if steps else 0.0
            elapsed = time.perf_counter() - started
            steps.append(StepRecord(it, best.value, best.xent,
                                    tuple(zip(m_value.tolist(), m_xent.tolist(), strict=True)),
                                    len(cand), elapsed))
            bar.update(1)
            bar.set_postfix_str(f"objective {best.value:.3f}, xent {best.xent:.2f}")
            if config.time_limit is not None and \
                    elapsed + (elapsed - previous) > config.time_limit:
                break  # the next iteration would end past the limit
    finally:
        bar.close()
    return setup.finish(config.method, best, frontier, steps, done, evaluations, started)


def random_search(lm: LoadedModel, objective: Objective, steering: Steering = None,
                  config: SearchConfig | None = None, *, evaluations: int | None = None,
                  progress: bool = True) -> SearchResult:
    """The random-suffix baseline: ``evaluations`` random suffixes of allowed tokens (same
    length, filter and seed handling as ``config``), the best kept.

    Give it the search's :attr:`SearchResult.evaluations` so both had the same budget of scored
    suffixes (the search's gradient passes are not counted). Default budget:
    ``config.iterations × config.candidates`` + 1.

    Example:
        >>> import steerlab
        >>> from steerlab.attack.objectives import ab_flip
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()
        >>> obj = ab_flip(lm, steerlab.ABItem("Yes or no?\\n(A) Yes\\n(B) No", "(A)", "(B)"))
        >>> cfg = gcg(suffix_length=3, iterations=1, children=4, topk=8)
        >>> res = search(lm, obj, None, cfg, progress=False)
        >>> base = random_search(lm, obj, None, cfg, evaluations=res.evaluations, progress=False)
        >>> base.method, base.evaluations == res.evaluations, base.objective >= base.start_objective
        ('random', True, True)
    """
    lm = _check_lm(lm)
    config = config or gcg()
    started = time.perf_counter()
    setup = _Setup(lm, objective, steering, config)
    budget = config.iterations * config.candidates + 1 if evaluations is None else evaluations
    gen = torch.Generator().manual_seed(int(config.seed))
    choices = torch.nonzero(setup.allowed).flatten()
    length = int(setup.start.shape[0])
    best = Best(setup.start, setup.start_value, setup.start_xent)
    frontier = Frontier()
    frontier.add(setup.start[None], torch.tensor([setup.start_value]),
                 torch.tensor([setup.start_xent]), 0)
    seen = {tuple(setup.start.tolist())}
    used, rounds, steps = 1, 0, []
    per = max(1, config.candidates)
    bar = progress_bar(budget, f"random {objective.name}", unit="suffix", enabled=progress)
    bar.update(1)
    try:
        while used < budget and rounds < 100 * max(1, budget // per + 1):
            if config.early_stop and best.value >= setup.reference:
                break
            rounds += 1
            n = min(per, budget - used)
            rows = choices[torch.randint(len(choices), (n * OVERSAMPLE, length), generator=gen)]
            rows = _fresh(setup.filter(rows), seen)[:n]
            if not len(rows):
                continue
            values, xents = setup.runner.score(rows)
            used += len(rows)
            frontier.add(rows, values, xents, rounds)
            best.update(rows, values, xents)
            steps.append(StepRecord(rounds, best.value, best.xent, (), len(rows),
                                    time.perf_counter() - started))
            bar.update(len(rows))
            bar.set_postfix_str(f"objective {best.value:.3f}, xent {best.xent:.2f}")
            if config.time_limit is not None and \
                    time.perf_counter() - started >= config.time_limit:
                break
    finally:
        bar.close()
    return setup.finish("random", best, frontier, steps, rounds, used, started)


def evaluate(lm: LoadedModel, objective: Objective, steering: Steering = None,
             suffixes: Sequence[Sequence[int]] = ((),), *, use_prefix_cache: bool = True,
             batch_size: int | None = None) -> tuple[list[float], list[float]]:
    """Objective and xent of given suffixes (ids) under ``steering`` (None: unsteered).

    An empty suffix scores the prompt alone (its xent is NaN). Suffixes of different lengths
    are run in groups.

    Example:
        >>> import math, steerlab
        >>> from steerlab.attack.objectives import ab_flip
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()
        >>> obj = ab_flip(lm, steerlab.ABItem("Yes or no?\\n(A) Yes\\n(B) No", "(A)", "(B)"))
        >>> suffix = lm.tokenizer(" please", add_special_tokens=False).input_ids
        >>> values, xents = evaluate(lm, obj, None, [(), suffix])
        >>> len(values), math.isnan(xents[0]), xents[1] > 0
        (2, True, True)
    """
    lm = _check_lm(lm)
    runner = SuffixRunner(lm, objective, steering, use_prefix_cache=use_prefix_cache,
                          batch_size=batch_size)
    rows = [list(s) for s in suffixes]
    values: list[float] = [math.nan] * len(rows)
    xents: list[float] = [math.nan] * len(rows)
    for length in sorted({len(r) for r in rows}):
        index = [i for i, r in enumerate(rows) if len(r) == length]
        ids = torch.tensor([rows[i] for i in index], dtype=torch.long).reshape(len(index), length)
        v, x = runner.score(ids)
        for j, i in enumerate(index):
            values[i], xents[i] = float(v[j]), float(x[j])
    return values, xents
