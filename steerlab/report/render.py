"""Build report pages and render them to one self-contained HTML file (Jinja2 template).

* :func:`report_page` — every run found at or below a directory (one command, several in one
  directory, or an ``audit`` directory of studies) → a :class:`~steerlab.report.page.Page`:
  provenance, the verdict table from ``verdicts.json`` (whatever it holds, gracefully), the
  warnings, one section per run and one per vector file found beside the runs.
* :func:`inspect_page` — the insight views of one or more vectors on a model.
* :func:`render_html` / :func:`write` — the page as HTML: styles inline, figures inline SVG, no
  script, no external URL (it works offline from ``file://``), written atomically.

Example:
    >>> page = report_page("runs/audit")                                   # doctest: +SKIP
    >>> write(page, "audit.html")                                          # doctest: +SKIP
    PosixPath('audit.html')

    A directory without runs still gives a page, which says so in its ``problems``:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     page = report_page(folder)
    ...     out = write(page, folder + "/audit.html")
    >>> out.name, "no run found" in page.problems[0]
    ('audit.html', True)
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from steerlab.report.page import Page, Section, Verdict, VerdictGroup, slug, text_of
from steerlab.report.runs import VERDICTS, find_runs, read_json
from steerlab.version import __version__

TEMPLATE = "report.html.j2"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean(value: Any) -> Markup:
    """Text for the page: escaped, control characters shown as ``\\xNN`` (a model's raw bytes
    must not break the document).

    Example:
        >>> str(clean("a<b\\x0e"))
        'a&lt;b\\\\x0e'
    """
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
    return escape(text)


def _environment() -> Any:
    import jinja2

    source = resources.files("steerlab.report").joinpath("templates", TEMPLATE)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=False, lstrip_blocks=False)
    env.filters["clean"] = clean
    return env.from_string(source.read_text(encoding="utf-8"))


def render_html(page: Page) -> str:
    """The page as one HTML document.

    Example:
        >>> html = render_html(Page("t", "s", [("a", "b")], []))
        >>> html.startswith("<!DOCTYPE html>") and "<script" not in html
        True
    """
    return str(_environment().render(page=page))


def write(page: Page, out: str | os.PathLike[str]) -> Path:
    """Render ``page`` and write it to ``out`` atomically."""
    from steerlab.util.io import atomic_write

    return atomic_write(Path(out), render_html(page), what="report")


# ---------------------------------------------------------------------------------------------
# verdicts

VERDICT_CSS = {"holds": "holds", "does not hold": "fails", "inconclusive": "unsure"}


def _lines(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, dict):
        return [f"{k}: {text_of(v)}" for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [text_of(v) for v in value]
    return [text_of(value)]


def parse_verdicts(loaded: Any) -> tuple[list[Verdict], str]:
    """Verdict rows from ``verdicts.json`` (a list of objects, or ``{"verdicts": [...]}``),
    and a note on what could not be shown.

    Example:
        >>> rows, note = parse_verdicts([{"finding": "layer", "verdict": "holds",
        ...                               "numbers": {"effect": 0.3}}, 7])
        >>> rows[0].css, rows[0].numbers, note
        ('holds', ['effect: 0.3'], '1 entry of verdicts.json is not an object (left out)')
    """
    if isinstance(loaded, dict) and isinstance(loaded.get("verdicts"), list):
        loaded = loaded["verdicts"]
    if not isinstance(loaded, list):
        return [], f"{VERDICTS}: expected a list of verdicts, got {type(loaded).__name__}"
    rows, bad = [], 0
    known = {"finding", "verdict", "rule", "numbers", "warnings"}
    for entry in loaded:
        if not isinstance(entry, dict):
            bad += 1
            continue
        verdict = text_of(entry.get("verdict"))
        rows.append(Verdict(
            finding=text_of(entry.get("finding")), verdict=verdict,
            css=VERDICT_CSS.get(verdict.strip().lower(), "unsure"),
            rule=text_of(entry.get("rule")) if entry.get("rule") is not None else "",
            numbers=_lines(entry.get("numbers")), warnings=_lines(entry.get("warnings")),
            extra=[(str(k), text_of(v)) for k, v in entry.items() if k not in known]))
    note = f"{bad} entr{'y' if bad == 1 else 'ies'} of {VERDICTS} {'is' if bad == 1 else 'are'} " \
           "not an object (left out)" if bad else ""
    return rows, note


def verdict_groups(root: Path) -> list[VerdictGroup]:
    """One group per ``verdicts.json`` at or below ``root`` (the root's first), each shown
    whatever it holds; an unreadable file becomes a group with only its problem.

    Example:
        >>> import tempfile
        >>> verdict_groups(Path(tempfile.mkdtemp()))
        []
    """
    found = [root / VERDICTS] if (root / VERDICTS).is_file() else []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        if Path(current) != root and VERDICTS in files:
            found.append(Path(current) / VERDICTS)
    groups = []
    for path in found:
        where = "." if path.parent == root else str(path.parent.relative_to(root))
        loaded, why = read_json(path)
        if why:
            groups.append(VerdictGroup(where, [], f"{why}: the verdict table could not be "
                                                  "shown"))
            continue
        rows, note = parse_verdicts(loaded)
        groups.append(VerdictGroup(where, rows, note))
    return groups


# ---------------------------------------------------------------------------------------------
# pages


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def _vector_sections(directory: Path, rel: str, seen: set[Path]) -> tuple[list[Section],
                                                                           list[str]]:
    from steerlab.errors import SteerlabError
    from steerlab.report.insight import vector_section
    from steerlab.vector import SteeringVector

    sections, problems = [], []
    for path in sorted(directory.glob("*.safetensors")):
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            vec = SteeringVector.load(path)
        except SteerlabError as exc:
            problems.append(f"{path.name}: not shown ({exc})")
            continue
        name = path.name if rel == "." else f"{rel}/{path.name}"
        sections.append(vector_section(vec, name=name, prefix=slug(f"vec-{name}"), path=path))
    return sections, problems


def report_page(run_dir: str | os.PathLike[str], *, title: str | None = None,
                vectors: bool = True) -> Page:
    """The report of every run at or below ``run_dir`` (see the module notes).

    Example:
        >>> report_page("runs/sweep").sections[0].kind                      # doctest: +SKIP
        'sweep'
    """
    from steerlab.report.builders import section_for

    root = Path(run_dir)
    runs = find_runs(root)
    sections: list[Section] = []
    problems: list[str] = []
    seen_ids: set[str] = set()
    seen_vectors: set[Path] = set()
    directories: list[Path] = []
    for run in runs:
        prefix = slug(f"{run.rel}-{run.command}")
        while prefix in seen_ids:
            prefix += "-2"
        seen_ids.add(prefix)
        sections.append(section_for(run, prefix))
        if run.path not in directories:
            directories.append(run.path)
    if vectors:
        for directory in directories:
            rel = str(directory.relative_to(root)) if directory != root else "."
            more, bad = _vector_sections(directory, rel, seen_vectors)
            sections += more
            problems += bad
    verdicts = verdict_groups(root)
    if not runs:
        problems.append(f"{root}: no run found (no results.jsonl, run.json, verdicts.json or "
                        "generations file at or below it)")
    commands = [f"{r.command} ({r.rel})" if r.rel != "." else r.command for r in runs]
    versions = sorted({str(r.get("steerlab_version")) for run in runs for r in run.records
                       if r.get("steerlab_version")})
    from steerlab.report.sections import model_of

    models = sorted({model_of(run) for run in runs if run.records or run.settings})
    provenance = [("run directory", str(root)), ("runs", ", ".join(commands) or "none"),
                  ("models", ", ".join(models) or "–"),
                  ("measured with steerlab", ", ".join(versions) or "–"),
                  ("report made with steerlab", __version__), ("made", _now())]
    name = root.resolve().name or str(root)
    return Page(title or f"steerlab report · {name}",
                f"{len(runs)} run(s) below {root}: the studies, their intervals and what to "
                "watch out for", provenance, sections, verdicts, _now(), __version__, problems)


def inspect_page(lm: Any, vectors: Sequence[Any], names: Sequence[str], *,
                 paths: Sequence[Path | None] | None = None, prompts: Sequence[Any] = (),
                 layers: Sequence[int] = (), items: Sequence[Any] | None = None,
                 data: str = "", chat: bool = True, system: str | None = None,
                 batch_size: int = 16) -> Page:
    """Insight views of ``vectors[0]`` on ``lm`` (per-token projections of ``prompts`` at
    each of ``layers``; the PCA of ``items`` at the first layer), the geometry of every
    vector, and their cross-vector cosine when there are several.

    Example:
        >>> import steerlab
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()                     # steerlab.load_model(...) on a real model
        >>> vec = steerlab.extract(lm, [("I love it.", "I hate it.")], layers=[1], progress=False)
        >>> page = inspect_page(lm, [vec], ["v"], prompts=["Hi"], layers=[1])
        >>> [section.kind for section in page.sections]
        ['tokens', 'vector']
    """
    from steerlab.report import insight

    main = vectors[0]
    paths = list(paths) if paths is not None else [None] * len(vectors)
    sections: list[Section] = []
    if prompts:
        tokens = Section("tokens", f"per-token projection · {names[0]}", "tokens",
                         summary=f"{len(prompts)} prompt(s) on {lm.model_id}"
                                 f"{' (chat-formatted)' if chat else ' (raw text)'}")
        for layer in layers:
            rows = insight.token_projections(lm, main, layer, prompts, chat=chat, system=system)
            tokens.tokens.append(insight.token_block(rows, layer=layer))
        sections.append(tokens)
    if items is not None and layers:
        count = [0]
        pca = Section("separation", f"separation · {data or 'data'}", "pca",
                      summary="answer-token activations of the contrast data, marked by "
                              "behaviour and by answer letter")
        pairs = insight.pair_activations(lm, items, layers[0], site=main.site,
                                         batch_size=batch_size, system=system)
        figure, warnings = insight.pca_figure(pairs, main, prefix="separation", count=count,
                                              data=data or "data", model=lm.model_id)
        pca.figures.append(figure)
        pca.warnings += warnings
        sections.append(pca)
    for index, (vec, name, path) in enumerate(zip(vectors, names, paths, strict=True)):
        sections.append(insight.vector_section(vec, name=name, prefix=f"vector-{index + 1}",
                                               path=path))
    if len(vectors) > 1:
        sections.append(insight.cross_vector_section(
            vectors, names, prefix="cross", layer=layers[0] if layers else None))
    provenance = [("model", f"{lm.model_id} (revision {text_of(lm.revision)})"),
                  ("vectors", ", ".join(names)),
                  ("layers", ", ".join(map(str, layers)) or "–"),
                  ("prompts", str(len(prompts))), ("data", data or "–"),
                  ("report made with steerlab", __version__), ("made", _now())]
    return Page(f"steerlab inspect · {names[0]}",
                f"where the vector lights up, what it is, and what it separates, on "
                f"{lm.model_id}", provenance, sections, [], _now(), __version__)
