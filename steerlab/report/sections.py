"""What every report section shares: :class:`Context` (the run, figure ids, the warnings a
reader should see before trusting a number: n < 10, letter mass < 0.8, fewer than ~80 pairs,
layer 0, a push larger than the residual stream, ...), the small formatting helpers, a run's
provenance and settings rows, its generations side by side, and the generic records table for a
command no builder knows.

The studies' sections: :mod:`steerlab.report.score_sections` (sweep, models, samples,
perplexity, capabilities), :mod:`steerlab.report.generation_sections` (ood, sentiment,
prompting), :mod:`steerlab.report.robustness` (adversarial, defence, CAA's check);
:func:`~steerlab.report.builders.section_for` picks one by the run's command.

Example:
    >>> from steerlab.report.builders import section_for
    >>> from steerlab.report.runs import find_runs
    >>> [section_for(run).title for run in find_runs("runs/r")]         # doctest: +SKIP
    ['sweep · runs/r']
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from steerlab.eval import figures as fg
from steerlab.eval.tables import fmt_ci
from steerlab.report.page import (
    Answer,
    Figure,
    GenerationRow,
    Generations,
    Section,
    Table,
    text_of,
)
from steerlab.report.runs import GENERATIONS, Run, read_json

MIN_ITEMS = 10  # fewer items than this: intervals are wide and the warning says so
MIN_PAIRS = 80  # CAE finding 2: effects plateau near ~80 contrast pairs
MIN_LETTER_MASS = 0.8  # below it the A/B readout says little
MAX_SHOWN_GENERATIONS = 12  # prompts per side-by-side table
JUDGE_SPAN = 9.0  # a judge's 1..10 scale

Band = tuple[list[float | None], list[float | None], list[float | None]]


# ---------------------------------------------------------------------------------------------
# small helpers


def rec_ci(record: dict[str, Any] | None, digits: int = 3) -> str:
    """:func:`~steerlab.eval.tables.fmt_ci` of a record (``–`` for None)."""
    if record is None:
        return "–"
    return fmt_ci(record.get("value"), record.get("ci_low"), record.get("ci_high"), digits)


def unit_of(run: Run) -> str:
    """``strength`` or ``coefficient``: the run's unit (from settings, else its records).

    Example:
        >>> unit_of(Run(Path("."), ".", "x", {"unit": "coefficient"}, []))
        'coefficient'
    """
    unit = run.settings.get("unit")
    if unit in ("strength", "coefficient"):
        return str(unit)
    if any(r.get("coefficient") is not None for r in run.records) and not any(
            r.get("strength") is not None for r in run.records):
        return "coefficient"
    return "strength"


def value_label(unit: str, value: float) -> str:
    """``s = +0.5`` / ``c = 0`` (the column heads of side-by-side tables).

    Example:
        >>> value_label("strength", 0.5), value_label("coefficient", 0.0)
        ('s = +0.5', 'c = 0')
    """
    short = "s" if unit == "strength" else "c"
    return f"{short} = 0" if value == 0 else f"{short} = {value:+g}"


def signed(value: float | None) -> str:
    """``+0.5`` / ``-0.5`` / ``0``.

    Example:
        >>> signed(0.5), signed(0.0), signed(None)
        ('+0.5', '0', '–')
    """
    if value is None:
        return "–"
    return "0" if value == 0 else f"{value:+g}"


def unit_value(record: dict[str, Any], unit: str) -> float | None:
    """The record's value of ``unit`` (``strength``, ``coefficient``) as a float; None if unset."""
    value = record.get(unit)
    return None if value is None else float(value)


def sorted_unique(values: Iterable[Any]) -> list[Any]:
    """The distinct values, sorted, ``None`` left out."""
    return sorted({v for v in values if v is not None})


def band_of(records: Sequence[dict[str, Any] | None] | Sequence[dict[str, Any]]) -> Band:
    """(values, lows, highs) of the records for a figure's line, None for a missing record."""
    return ([None if r is None else r.get("value") for r in records],
            [None if r is None else r.get("ci_low") for r in records],
            [None if r is None else r.get("ci_high") for r in records])


def last_record(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The last of the records (the latest measured), or None when there is none."""
    return records[-1] if records else None


def _ns(records: Iterable[dict[str, Any] | None]) -> list[int]:
    return sorted({int(r["n"]) for r in records
                   if r is not None and isinstance(r.get("n"), int | float)})


def n_text(records: Iterable[dict[str, Any] | None], what: str) -> str:
    """``20 items`` or ``8–20 items`` from the records' ``n``.

    Example:
        >>> n_text([{"n": 8}, {"n": 20}], "items"), n_text([], "items")
        ('8–20 items', '? items')
    """
    ns = _ns(records)
    if not ns:
        return f"? {what}"
    return f"{ns[0]} {what}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]} {what}"


def layers_text(layers: Iterable[Any]) -> str:
    """The distinct layers as ``3, 5, 7`` (``–`` when there is none)."""
    got = sorted_unique(layers)
    return ", ".join(str(k) for k in got) if got else "–"


def model_of(run: Run) -> str:
    """The model the run measured (settings, else its records)."""
    model = run.settings.get("model")
    if model:
        return str(model)
    models = sorted_unique(str(r.get("model")) for r in run.records if r.get("model"))
    return ", ".join(models) if models else "?"


class Context:
    """What a section builder needs: the run, unique figure ids, and the warnings it raises."""

    def __init__(self, run: Run, prefix: str):
        self.run = run
        self.prefix = prefix
        self.unit = unit_of(run)
        self.model = model_of(run)
        self.warnings: list[str] = []
        self._count = 0

    def figure(self, title: str, panels: Sequence[fg.Panel], *, n: str, band: str,
               layer: str, model: str | None = None, note: str = "",
               suptitle: str = "") -> Figure:
        """Draw the panels and wrap them with their caption facts."""
        self._count += 1
        fid = f"{self.prefix}-f{self._count}"
        return Figure(fid, title, fg.draw(panels, title=suptitle, salt=fid), n=n, band=band,
                      model=model or self.model, layer=layer, note=note)

    def warn(self, text: str) -> None:
        """Add a warning once."""
        if text not in self.warnings:
            self.warnings.append(text)

    def check_items(self, records: Iterable[dict[str, Any]], what: str = "items") -> None:
        """Warn when a measured cell has fewer than :data:`MIN_ITEMS` items."""
        ns = _ns(records)
        if ns and ns[0] < MIN_ITEMS:
            self.warn(f"only n = {ns[0]} {what} in some cells (< {MIN_ITEMS}): the intervals "
                      "are wide and a 'finding' is easily noise")

    def check_layers(self, layers: Iterable[Any]) -> None:
        """Warn when layer 0 is steered."""
        if 0 in set(layers):
            self.warn("layer 0 is steered: the first block's output is mostly the token "
                      "embedding, effects there rarely mean what they seem, and llama.cpp "
                      "cannot apply a direction at layer 0")

    def check_pairs(self, n_pairs: Iterable[Any], source: str = "the vector") -> None:
        """Warn when the vector came from fewer than ~80 pairs."""
        counts = sorted_unique(int(n) for n in n_pairs if isinstance(n, int | float))
        if counts and counts[-1] < MIN_PAIRS:
            self.warn(f"{source} comes from {counts[-1]} contrast pairs, fewer than the ~"
                      f"{MIN_PAIRS} where effects plateau (CAE finding 2)")

    def check_values(self, values: Iterable[float]) -> None:
        """Warn when a strength pushes harder than the residual stream itself."""
        if self.unit != "strength":
            return
        big = [v for v in values if abs(v) > 1.0]
        if big:
            self.warn(f"strength {max(big, key=abs):+g} adds a vector longer than the mean "
                      "residual-stream norm at its layer (norm blow-up): outputs there are "
                      "off-distribution")

    def check_missing(self, records: Iterable[dict[str, Any]]) -> None:
        """Warn about records whose value was not finite (stored as null)."""
        bad = [r for r in records if r.get("value") is None]
        if bad:
            self.warn(f"{len(bad)} record(s) have no finite value (NaN/inf stored as null)")


def provenance(run: Run) -> list[tuple[str, str]]:
    """Model + revision, data + sha, vector + sha, method, site, pairs, steerlab version."""
    s = run.settings
    out: list[tuple[str, str]] = [("directory", run.rel), ("command", run.command)]
    models = s.get("models")
    if isinstance(models, list):
        for name in models:
            out.append((f"model {name}", f"revision {text_of(s.get(f'revision:{name}'))}"))
    else:
        out.append(("model", model_of(run)))
        out.append(("model revision", text_of(s.get("model_revision"))))
    data = s.get("data") or s.get("trait") or s.get("task") or sorted_unique(
        str(r.get("data")) for r in run.records if r.get("data"))
    out.append(("data", text_of(data)))
    if s.get("data_sha256"):
        out.append(("data sha256", str(s["data_sha256"])))
    if s.get("vector") or s.get("vector_sha256"):
        out.append(("vector", f"{text_of(s.get('vector'))} (sha256 "
                              f"{text_of(s.get('vector_sha256'))})"))
    elif s.get("pair"):
        out.append(("vector", f"ActAdd pair {text_of(s.get('pair'))}"))
    for key in ("method", "site"):
        got = sorted_unique(str(r.get(key)) for r in run.records if r.get(key))
        if got or s.get(key):
            out.append((key, text_of(s.get(key)) if s.get(key) else ", ".join(got)))
    pairs = sorted_unique(r.get("n_pairs") for r in run.records
                           if isinstance(r.get("n_pairs"), int) and r.get("command") != "samples")
    if pairs:
        out.append(("contrast pairs", ", ".join(map(str, pairs))))
    versions = sorted_unique(str(r.get("steerlab_version")) for r in run.records
                              if r.get("steerlab_version"))
    out.append(("steerlab version", ", ".join(versions) if versions else "–"))
    seconds = sum(float(r["seconds"]) for r in _first_per_cell(run.records)
                  if isinstance(r.get("seconds"), int | float))
    out.append(("measured", f"{len(run.records)} records, {seconds:.1f} s of compute"))
    return out


def _first_per_cell(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for r in records:
        if r.get("cell") not in seen:
            seen.add(r.get("cell"))
            out.append(r)
    return out


def settings_rows(run: Run) -> list[tuple[str, str]]:
    """Every setting of ``run.json`` for this command, as text."""
    return [(str(k), text_of(v)) for k, v in sorted(run.settings.items())]


# ---------------------------------------------------------------------------------------------
# behaviour cells: sweep and models


def layer_choice(run: Run, layers: list[int], split: str = "val", **match: Any
                 ) -> tuple[int | None, str]:
    """The layer the run's effects on ``split`` single out (``choose_best``), and why."""
    from steerlab.eval.run import choose_best

    effects = {}
    for k in layers:
        rec = last_record(run.select("effect", split=split, layer=k, **match))
        if rec is None:
            continue
        effects[k] = tuple(math.nan if rec.get(f) is None else float(rec[f])
                           for f in ("value", "ci_low", "ci_high"))
    if not effects:
        return None, "no layer has a measured effect"
    choice = choose_best(effects)  # type: ignore[arg-type]
    return choice.layer, choice.reason


def warn_base_rate(ctx: Context, scores: Sequence[dict[str, Any]], where: str) -> None:
    """Warn when the unsteered score is near 0 or 1 (the base rate bounds the effect)."""
    at_zero = [r for r in scores
               if unit_value(r, ctx.unit) == 0.0 and r.get("value") is not None]
    if not at_zero:
        return
    rate = sum(float(r["value"]) for r in at_zero) / len(at_zero)
    if rate < 0.05 or rate > 0.95:
        ctx.warn(f"{where}: the unsteered behaviour score is {rate:.2f}, near "
                 f"{'0' if rate < 0.5 else '1'}: there is little room to move, so the effect "
                 "is bounded by the base rate")


def rows_of_generations(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The generation rows of a ``.jsonl`` / ``.json`` file, and what is wrong with it."""
    if path.suffix == ".jsonl":
        rows = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows, None
    loaded, why = read_json(path)
    if isinstance(loaded, dict):
        loaded = loaded.get("rows", loaded.get("generations"))
    if not isinstance(loaded, list):
        return [], why or f"{path.name}: expected a list of generation rows"
    return [r for r in loaded if isinstance(r, dict)], None


def generations_tables(run: Run, unit: str) -> list[Generations]:
    """Answers side by side per prompt, one column per value (−s, 0, +s, ...), from
    ``generations.jsonl`` / ``generations.json`` rows: ``prompt``, ``answer`` (or ``text``),
    the value under ``strength`` or ``coefficient`` (or ``value``), and optional ``score``,
    ``layer``, ``id``, ``format``/``length``/``group``.
    """
    out = []
    for name in GENERATIONS:
        path = run.path / name
        if not path.is_file():
            continue
        rows, why = rows_of_generations(path)
        if why:
            out.append(Generations(f"generations ({name})", [], [], note=why))
            continue
        keyed: dict[tuple[Any, ...], dict[float, dict[str, Any]]] = {}
        values: set[float] = set()
        for row in rows:
            raw = row.get(unit, row.get("value", row.get("strength", row.get("coefficient"))))
            if not isinstance(raw, int | float):
                continue
            value = float(raw)
            group = row.get("group") or "/".join(str(row[k]) for k in ("format", "length")
                                                 if row.get(k))
            key = (str(group), row.get("layer"), str(row.get("id", row.get("prompt", ""))),
                   str(row.get("prompt", "")))
            keyed.setdefault(key, {})[value] = row
            values.add(value)
        columns = sorted(values)
        table_rows = []
        for (group, layer, ident, prompt), by_value in list(keyed.items())[
                :MAX_SHOWN_GENERATIONS]:
            answers = []
            for value in columns:
                got = by_value.get(value)
                text = "" if got is None else str(got.get("answer", got.get("text", "")))
                score = got.get("score") if got else None
                answers.append(Answer(text, "" if not isinstance(score, int | float)
                                      else f"score {score:.2f}"))
            where = " · ".join(x for x in (group, f"layer {layer}" if layer is not None else "",
                                           f"#{ident}" if ident != prompt else "") if x)
            table_rows.append(GenerationRow(where, prompt, answers))
        shown = min(len(keyed), MAX_SHOWN_GENERATIONS)
        out.append(Generations(
            f"generations at {', '.join(value_label(unit, v) for v in columns)}",
            [value_label(unit, v) for v in columns], table_rows,
            note=f"showing {shown} of {len(keyed)} prompts from {name}; greedy answers, "
                 "scores from the judge where it rated them"))
    return out


# ---------------------------------------------------------------------------------------------
# perplexity, capabilities, sentiment


def generic_section(ctx: Context) -> Section:
    """A run of a command this report does not know: its records as a table."""
    run = ctx.run
    section = Section(ctx.prefix, "", run.command,
                      summary=f"{len(run.records)} records of a command without a dedicated "
                              "view; shown as a table")
    rows = []
    for r in run.records[:300]:
        where = ", ".join(f"{k} {r[k]}" for k in ("split", "layer", "strength", "coefficient",
                                                  "n_pairs") if r.get(k) is not None)
        rows.append([str(r.get("metric")), where, rec_ci(r), text_of(r.get("n"))])
    if rows:
        section.tables.append(Table("records", ["metric", "where", "value [95 % CI]", "n"],
                                    rows, note="" if len(run.records) <= 300 else
                                    f"first 300 of {len(run.records)} records"))
    section.generations += generations_tables(run, ctx.unit)
    ctx.check_items(run.records)
    return section
