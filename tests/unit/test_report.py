"""``steerlab report`` / ``inspect``: every run type renders, offline, with every figure.

The run directories are made by the real commands on a tiny random model saved to disk (a few
items each), so the report is tested on exactly what the commands write. For each run type
the page must render, hold no external URL (no http(s) or protocol-relative address in any
``src``/``href``/CSS ``url()``, no script), and every figure must be present and non-empty,
with a caption stating n, the band, the model and the layer. The token heatmap must have
exactly one ``<span>`` per token, and token i must carry (and be coloured by) its own
projection — checked against hidden states computed independently here.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.eval import figures as fg
from steerlab.report.page import Page
from steerlab.report.render import inspect_page, parse_verdicts, render_html, report_page
from steerlab.testing.tiny import tiny_model, tiny_tokenizer

#: run type → (directory name, figures its own section must have)
RUN_TYPES = {"sweep": 3, "samples": 1, "ood": 1, "perplexity": 1, "capabilities": 1,
             "sentiment": 1, "models": 1}


# ---------------------------------------------------------------------------------------------
# a tiny DOM (stdlib only)


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.text: list[str] = []

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        out = []
        for child in self.children:
            if (tag is None or child.tag == tag) and (
                    cls is None or cls in child.attrs.get("class", "").split()):
                out.append(child)
            out += child.all(tag, cls)
        return out

    def content(self) -> str:
        return "".join(self.text) + "".join(c.content() for c in self.children)


VOID = {"meta", "br", "link", "img", "input", "hr", "path", "use", "rect", "stop", "circle",
        "line", "ellipse", "polygon", "polyline", "image"}


class Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.node = self.root
        self.attributes: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.attributes += [(tag, k, v) for k, v in values.items()]
        node = Node(tag, values, self.node)
        self.node.children.append(node)
        if tag not in VOID:
            self.node = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.attributes += [(tag, k, v) for k, v in values.items()]
        self.node.children.append(Node(tag, values, self.node))

    def handle_endtag(self, tag: str) -> None:
        node = self.node
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.node = node.parent

    def handle_data(self, data: str) -> None:
        self.node.text.append(data)


def parse(html: str) -> Tree:
    tree = Tree()
    tree.feed(html)
    tree.close()
    return tree


EXTERNAL = re.compile(r"^\s*(https?:)?//", re.I)


def assert_offline(html: str) -> Tree:
    """No external URL anywhere a browser would fetch one, no script, no external CSS."""
    tree = parse(html)
    bad = [(t, k, v) for t, k, v in tree.attributes
           if k in ("src", "href", "xlink:href", "srcset", "action", "data", "poster")
           and (EXTERNAL.search(v) or re.match(r"^\s*[a-z][a-z0-9+.-]*:", v, re.I))
           and not v.startswith("data:image/")]  # inline, nothing to fetch
    assert not bad, f"external references: {bad[:5]}"
    assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", " ".join(
        v for _, k, v in tree.attributes if k in ("src", "href", "style"))), "URL in attributes"
    assert not tree.root.all("script"), "the page must need no JavaScript"
    assert not tree.root.all("link"), "no external stylesheet"
    assert not tree.root.all("iframe") and not tree.root.all("img")
    styles = " ".join(n.content() for n in tree.root.all("style"))
    assert "@import" not in styles
    assert all(u.startswith("#") for u in re.findall(r"url\(\s*['\"]?([^'\")]*)", html)), \
        "CSS url() may only point inside the page"
    assert "http://" not in html and "https://" not in html  # not even a namespace URI
    return tree


def check_figures(tree: Tree, page: Page) -> list[Node]:
    """Every figure of the page model is in the HTML, non-empty, with its four facts."""
    figures = tree.root.all("figure", "fig")
    assert [f.attrs["id"] for f in figures] == [f.id for f in page.figures()]
    for fig in figures:
        svgs = fig.all("svg")
        assert len(svgs) == 1, fig.attrs["id"]
        drawn = svgs[0].all("path") + svgs[0].all("use") + svgs[0].all("image")
        assert len(drawn) >= 10, f"{fig.attrs['id']}: an empty figure"
        assert svgs[0].all("text"), f"{fig.attrs['id']}: no axis text"
        caption = fig.all("figcaption")[0].content()
        for fact in ("n = ", "band: ", "model ", "layer "):
            assert fact in caption, f"{fig.attrs['id']}: caption lacks {fact!r}: {caption}"
    ids = [v for _, k, v in tree.attributes if k == "id"]
    assert len(ids) == len(set(ids)), "ids must be unique in the page"
    return figures


def sections(tree: Tree) -> dict[str, Node]:
    return {n.attrs["data-kind"]: n for n in tree.root.all("section", "study")
            if "data-kind" in n.attrs and n.attrs["data-kind"] not in ("vector",)}


# ---------------------------------------------------------------------------------------------
# tiny run directories, made by the real commands


def build_runs(root: Path) -> dict[str, Path]:
    """Every run type into ``root/<type>``, on a tiny random llama saved to ``root/tiny``."""
    from steerlab.eval.protocols import (
        capabilities,
        models,
        ood,
        perplexity,
        samples,
        sentiment,
        sweep,
    )

    model = root / "tiny"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    m = str(model)
    out = {name: root / name for name in RUN_TYPES}
    common = {"model": m, "data": "builtin:optimism", "train_limit": 6, "limit": 3,
              "form": "ab"}
    sweep.run(sweep.SweepConfig(out=out["sweep"], unit="strength", values=[-0.5, 0.0, 0.5],
                                layers="1-2", **common))  # type: ignore[arg-type]
    vec = out["sweep"] / "vector.safetensors"
    samples.run(samples.SamplesConfig(out=out["samples"], layer=1, values=[-0.5, 0.5],
                                      sizes=[1, 2, 4], seeds=2, **common))  # type: ignore[arg-type]
    models.run(models.ModelsConfig(out=out["models"], models=[m], data="builtin:optimism",
                                   depths="0.5,1.0", values=[-0.5, 0.5], train_limit=6, limit=3,
                                   form="ab"))
    perplexity.run(perplexity.PerplexityConfig(out=out["perplexity"], vector=vec, model=m,
                                               layers="1", unit="strength",
                                               values=[0.0, 0.5, 1.0], window=16, limit=3))
    capabilities.run(capabilities.CapabilitiesConfig(
        out=out["capabilities"], vector=vec, model=m, layers="1", unit="strength",
        values=[-0.5, 0.0, 0.5], limit=3))
    sentiment.run(sentiment.SentimentConfig(out=out["sentiment"], vector=vec, model=m,
                                            layers="1", unit="strength",
                                            values=[-0.5, 0.0, 0.5], limit=2, max_new_tokens=4,
                                            temperature=0))
    ood.run(ood.OODConfig(out=out["ood"], vector=vec, model=m, layers="1",
                          trait="agreeableness", judge="local:" + m, unit="strength",
                          values=[-0.5, 0.0, 0.5], formats=["open-ended"], lengths=["short"],
                          limit=2, max_new_tokens=4, id_data="builtin:optimism"))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("report-runs")
    yield build_runs(root)


# ---------------------------------------------------------------------------------------------
# every run type


@pytest.mark.parametrize("kind", sorted(RUN_TYPES))
def test_every_run_type_renders_offline_with_every_figure(runs: dict[str, Path],
                                                          kind: str) -> None:
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in runs[kind].iterdir()
              if p.is_file()}
    page = report_page(runs[kind])
    html = render_html(page)
    tree = assert_offline(html)
    check_figures(tree, page)
    own = sections(tree)
    assert list(own) == [kind]
    assert len(own[kind].all("figure", "fig")) == RUN_TYPES[kind]
    prov = own[kind].all("table", "provenance")[0].content()
    assert "model" in prov and "steerlab version" in prov and "0." in prov
    warnings = " ".join(n.content() for n in own[kind].all("ul", "warnings"))
    assert "n = " in warnings and "< 10" in warnings  # the tiny runs have a few items
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in runs[kind].iterdir()
             if p.is_file()}
    assert after == before, "rendering must not touch the run directory"


def test_sections_say_what_to_watch_out_for(runs: dict[str, Path]) -> None:
    text = {kind: " ".join(w for s in report_page(runs[kind]).sections for w in s.warnings)
            for kind in ("capabilities", "sweep", "ood", "samples")}
    assert "letter mass p(A)+p(B) is below 0.8" in text["capabilities"]
    assert "fewer than the ~80" in text["sweep"] and "fewer than the ~80" in text["samples"]
    assert "judge puts only" in text["ood"]


def test_ood_shows_both_effects_and_generations_side_by_side(runs: dict[str, Path]) -> None:
    page = report_page(runs["ood"])
    section = next(s for s in page.sections if s.kind == "ood")
    groups = {row[0] for t in section.tables for row in t.rows}
    assert groups == {"ID builtin:optimism", "OOD open-ended/short"}
    gens = section.generations[0]
    assert gens.columns == ["s = -0.5", "s = 0", "s = +0.5"]
    assert len(gens.rows) == 2 and all(len(r.answers) == 3 for r in gens.rows)
    stored = [json.loads(line) for line in
              (runs["ood"] / "generations.jsonl").read_text().splitlines()]
    first = gens.rows[0]
    for value, answer in zip((-0.5, 0.0, 0.5), first.answers, strict=True):
        row = next(r for r in stored if r["prompt"] == first.prompt and r["strength"] == value)
        assert answer.text == row["answer"]  # each column holds its own value's answer
    tree = parse(render_html(page))
    assert len(tree.root.all("div", "gens")) == 1


def test_an_audit_directory_renders_every_study_and_the_verdicts(runs: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    for kind, path in runs.items():
        shutil.copytree(path, audit / "studies" / kind)
    verdicts = [
        {"finding": "1. layer matters", "verdict": "holds", "rule": "best val layer's CI > 0",
         "numbers": {"effect": 0.31, "ci": [0.12, 0.5]}, "warnings": ["n = 3 < 10"]},
        {"finding": "2. ~80 pairs", "verdict": "does not hold", "numbers": "plateau at 4",
         "warnings": []},
        {"finding": "4. OOD", "verdict": "inconclusive", "numbers": None, "extra": "kept"},
        "not an object",
    ]
    (audit / "verdicts.json").write_text(json.dumps(verdicts))
    page = report_page(audit)
    html = render_html(page)
    tree = assert_offline(html)
    check_figures(tree, page)
    assert set(sections(tree)) == set(RUN_TYPES)
    table = tree.root.all("table", "verdicts")[0]
    rows = table.all("tr")[1:]
    assert [r.all("td")[0].content() for r in rows] == ["1. layer matters", "2. ~80 pairs",
                                                        "4. OOD"]
    badges = [r.all("span", "verdict")[0].attrs["class"] for r in rows]
    assert badges == ["verdict holds", "verdict fails", "verdict unsure"]
    assert "effect: 0.31" in rows[0].content() and "extra: kept" in rows[2].content()
    assert "not an object (left out)" in html


@pytest.mark.parametrize(("payload", "message"), [
    ("{not json", "not readable JSON"),
    ('{"verdicts": 3}', "expected a list of verdicts"),
    ("[]", "holds no verdicts"),
])
def test_a_bad_verdicts_file_is_said_not_fatal(runs: dict[str, Path], tmp_path: Path,
                                               payload: str, message: str) -> None:
    shutil.copytree(runs["samples"], tmp_path / "r")
    (tmp_path / "r" / "verdicts.json").write_text(payload)
    html = render_html(report_page(tmp_path / "r"))
    assert message in html
    assert_offline(html)


def test_several_commands_in_one_directory_get_a_section_each(runs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    settings: dict[str, Any] = {}
    with (tmp_path / "results.jsonl").open("w") as fh:
        for kind in ("sweep", "perplexity"):
            fh.write((runs[kind] / "results.jsonl").read_text())
            settings.update(json.loads((runs[kind] / "run.json").read_text()))
    (tmp_path / "run.json").write_text(json.dumps(settings))
    page = report_page(tmp_path)
    assert [s.kind for s in page.sections] == ["sweep", "perplexity"]
    assert all(s.provenance[0] == ("directory", ".") for s in page.sections)
    assert_offline(render_html(page))


def test_verdicts_below_the_root_get_a_table_each(runs: dict[str, Path],
                                                 tmp_path: Path) -> None:
    for model in ("m1", "m2"):
        shutil.copytree(runs["samples"], tmp_path / model / "samples")
        (tmp_path / model / "verdicts.json").write_text(json.dumps(
            [{"finding": f"plateau on {model}", "verdict": "holds"}]))
    page = report_page(tmp_path)
    assert [g.where for g in page.verdicts] == ["m1", "m2"]
    html = render_html(page)
    assert "plateau on m1" in html and "plateau on m2" in html
    assert [s.title for s in page.sections if s.kind == "samples"] == ["m1/samples",
                                                                       "m2/samples"]


def test_ood_prefers_the_effect_records_it_stored(runs: dict[str, Path],
                                                  tmp_path: Path) -> None:
    from steerlab.eval.store import make_record
    from steerlab.report.generation_sections import ood_effects
    from steerlab.report.runs import find_runs

    target = tmp_path / "ood"
    shutil.copytree(runs["ood"], target)
    results = target / "results.jsonl"
    kept = [line for line in results.read_text().splitlines()
            if json.loads(line)["metric"] != "effect"]  # what the protocol stored itself
    assert len(kept) < len(results.read_text().splitlines())
    results.write_text("".join(line + "\n" for line in kept))
    derived = ood_effects(find_runs(target)[0], "strength")
    with (target / "results.jsonl").open("a") as fh:
        for i, e in enumerate(derived):
            record = make_record("effect", 0.125, ci=(0.0, 0.25), n=e["n"], layer=e["layer"],
                                 strength=e["value"], command="eval ood", group=e["group"],
                                 kind=e["kind"], baseline=e["baseline"])
            fh.write(json.dumps({**record, "cell": f"effect/{i}", "cell_records": 1}) + "\n")
    stored = ood_effects(find_runs(target)[0], "strength")
    assert [(e["group"], e["value"]) for e in stored] == [(e["group"], e["value"])
                                                         for e in derived]
    assert {e["mean"] for e in stored} == {0.125}


def test_verdict_rows_take_any_shape() -> None:
    rows, note = parse_verdicts({"verdicts": [{"verdict": "HOLDS", "numbers": [1.5, "x"]},
                                              {}]})
    assert [r.css for r in rows] == ["holds", "unsure"] and rows[0].numbers == ["1.5", "x"]
    assert rows[1].finding == "–" and note == ""


def test_a_torn_results_file_is_shown_without_being_repaired(runs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    target = tmp_path / "torn"
    shutil.copytree(runs["sweep"], target)
    results = target / "results.jsonl"
    lines = results.read_text().splitlines()
    torn = "\n".join(lines[:-1]) + "\n" + lines[-1][:25]  # the last cell loses a record
    results.write_text(torn)
    page = report_page(target)
    assert results.read_text() == torn
    problems = " ".join(w for s in page.sections for w in s.warnings)
    assert "torn last line" in problems and "unfinished cell" in problems
    assert_offline(render_html(page))


def test_generations_json_renders_side_by_side(tmp_path: Path) -> None:
    rows = [{"prompt": "How are you?", "strength": v, "answer": f"answer at {v}", "layer": 12,
             "score": 5.0 + v} for v in (-0.5, 0.0, 0.5)]
    (tmp_path / "generations.json").write_text(json.dumps(rows))
    page = report_page(tmp_path)
    gens = page.sections[0].generations[0]
    assert gens.columns == ["s = -0.5", "s = 0", "s = +0.5"]
    assert [a.text for a in gens.rows[0].answers] == ["answer at -0.5", "answer at 0.0",
                                                      "answer at 0.5"]
    assert_offline(render_html(page))


def test_nothing_to_render_is_said(tmp_path: Path) -> None:
    page = report_page(tmp_path)
    assert "no run found" in render_html(page)
    with pytest.raises(SteerlabError, match="no such run directory"):
        report_page(tmp_path / "missing")


def test_model_text_cannot_break_the_page() -> None:
    from steerlab.report.page import Section, Table

    section = Section("s", "x", "x", tables=[Table("t", ["a"], [["<script>alert(1)</script>"
                                                                "\x0e\x00"]])])
    html = render_html(Page("t", "s", [], [section]))
    assert "<script>" not in html and "\\x0e" in html and "\x00" not in html


def test_svg_is_an_html_element_without_urls_and_with_page_unique_ids() -> None:
    one = fg.draw([fg.Curves("a", "x", "y", [fg.Line("l", [0, 1], [0, 1], [0, 0], [1, 1])])],
                  salt="one")
    two = fg.draw([fg.Curves("a", "x", "y", [fg.Line("l", [0, 1], [0, 1], [0, 0], [1, 1])])],
                  salt="two")
    for svg in (one, two):
        assert svg.startswith("<svg") and "http" not in svg and "<metadata" not in svg
    ids = set(re.findall(r'id="([^"]+)"', one)) & set(re.findall(r'id="([^"]+)"', two))
    assert not ids
    refs = re.findall(r'href="#([^"]+)"', one) + re.findall(r"url\(#([^)]+)\)", one)
    assert refs and all(r in re.findall(r'id="([^"]+)"', one) for r in refs)
    assert one == fg.draw([fg.Curves("a", "x", "y", [fg.Line("l", [0, 1], [0, 1], [0, 0],
                                                              [1, 1])])], salt="one")


# ---------------------------------------------------------------------------------------------
# inspect


@pytest.fixture(scope="module")
def tiny_lm() -> Any:
    from steerlab.model.load import as_loaded

    torch.manual_seed(0)
    return as_loaded(tiny_model("llama"), tiny_tokenizer())


PROMPTS = ["I love sunny days and happy people.", "Everything is terrible.", "Hi"]


@pytest.fixture(scope="module")
def inspected(tiny_lm: Any) -> tuple[Page, Any, list[Any]]:
    from steerlab.data.loaders import load_dataset
    from steerlab.extraction import extract

    data = load_dataset("builtin:optimism", split="all")
    vec = extract(tiny_lm, data.subset(8, 0), layers=[1, 2], progress=False)
    other = extract(tiny_lm, data.subset(8, 1), layers=[1, 2], progress=False)
    page = inspect_page(tiny_lm, [vec, other], ["a.safetensors", "b.safetensors"],
                        prompts=PROMPTS, layers=[1], items=list(data.subset(10, 2)),
                        data="builtin:optimism", chat=True)
    return page, vec, PROMPTS


def _independent_projections(lm: Any, vec: Any, layer: int, prompt: str) -> tuple[list[int],
                                                                                  list[float]]:
    """Token ids and h_i · v̂ from Hugging Face's own hidden states (block k = index k + 1)."""
    from steerlab.model.prompts import prompt_ids

    ids, _ = prompt_ids(lm.tokenizer, prompt, chat=True)
    with torch.no_grad():
        hidden = lm.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    unit = vec.directions[layer] / vec.directions[layer].norm()
    return ids, (hidden[layer + 1][0].float() @ unit).tolist()


def test_token_heatmap_one_span_per_token_coloured_by_its_own_value(
        inspected: tuple[Page, Any, list[Any]], tiny_lm: Any) -> None:
    page, vec, prompts = inspected
    tree = assert_offline(render_html(page))
    blocks = tree.root.all("div", "tokens")
    assert len(blocks) == 1 and blocks[0].attrs["data-layer"] == "1"
    limit = float(blocks[0].attrs["data-limit"])
    lines = blocks[0].all("div", "line")
    assert len(lines) == len(prompts)
    for line, prompt in zip(lines, prompts, strict=True):
        ids, expected = _independent_projections(tiny_lm, vec, 1, prompt)
        spans = line.all("span", "tok")
        assert len(spans) == len(ids), prompt
        assert all(not s.all("span") for s in spans), "a token span holds only its text"
        assert [int(s.attrs["data-i"]) for s in spans] == list(range(len(ids)))
        values = [float(s.attrs["data-value"]) for s in spans]
        assert values == pytest.approx(expected, abs=1e-4)
        assert len({round(v, 4) for v in values}) > 1  # an off-by-one would be visible
        for span, value in zip(spans, values, strict=True):
            colour = re.search(r"background:(#[0-9a-f]{6})", span.attrs["style"])
            assert colour is not None
            assert colour.group(1) == fg.diverging_colour(value, limit)
            assert f"{value:+.4g}" in span.attrs["title"]
        text = "".join(s.content() for s in spans)
        assert prompt in text  # the tokens spell the prompt


def test_shared_scale_is_one_limit_for_every_prompt(inspected: tuple[Page, Any, list[Any]]
                                                    ) -> None:
    page, _, _ = inspected
    block = page.sections[0].tokens[0]
    values = [t.value for line in block.lines for t in line.tokens[1:]]
    assert block.limit == pytest.approx(max(abs(v) for v in values))
    assert fg.diverging_colour(block.limit, block.limit) == fg.diverging_colour(
        10 * block.limit, block.limit)


def test_inspect_page_has_geometry_pca_and_cross_vector_views(
        inspected: tuple[Page, Any, list[Any]]) -> None:
    page, _, _ = inspected
    tree = assert_offline(render_html(page))
    check_figures(tree, page)
    kinds = [s.kind for s in page.sections]
    assert kinds == ["tokens", "pca", "vector", "vector", "vectors"]
    pca = page.sections[1].figures[0]
    assert "answer letter" in pca.note and "(A)" in pca.svg and "(B)" in pca.svg
    titles = [f.title for s in page.sections for f in s.figures]
    assert "vector norm vs the residual stream's" in titles
    assert "cosine between the vector's layers" in titles and "cross-vector cosine" in titles


def test_the_letter_confound_is_flagged() -> None:
    from steerlab.report.insight import PairActivations, pca_figure, separation

    torch.manual_seed(0)
    # 20 items; the matching answer's letter alternates, and the activations mostly encode
    # the letter (dimension 0) and only a little the behaviour (dimension 1)
    letters = [x for j in range(20) for x in (("A", "B") if j % 2 == 0 else ("B", "A"))]
    matching = [i % 2 == 0 for i in range(40)]
    acts = torch.randn(40, 8) * 0.01
    acts[:, 0] += torch.tensor([3.0 if x == "A" else -3.0 for x in letters])
    acts[:, 1] += torch.tensor([0.3 if m else -0.3 for m in matching])
    pairs = PairActivations(1, acts, matching, letters, "answer_token")
    sep = separation(pairs, None)
    assert abs(sep["pc1_letter"]) > 0.99 and abs(sep["pc1_behaviour"]) < 0.2
    _, warnings = pca_figure(pairs, None, prefix="t", count=[0], data="d", model="m")
    assert any(w.startswith("letter confound") for w in warnings)
    biased = PairActivations(1, acts, matching, ["A", "B"] * 20, "answer_token")
    _, warnings = pca_figure(biased, None, prefix="t", count=[0], data="d", model="m")
    assert any(w.startswith("letter bias") for w in warnings)


def test_cli_commands_are_light_and_fail_in_one_line(tmp_path: Path) -> None:
    import ast

    import typer
    from typer.testing import CliRunner

    from steerlab.cli import report as cli_report

    tree = ast.parse(Path(cli_report.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name for n in top for a in n.names} | {
        n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "annotations", "collections.abc", "Callable", "pathlib",
                     "Path", "typing", "Any", "typer", "steerlab.cli", "options"}
    assert [c[0] for c in cli_report.COMMANDS] == ["report", "inspect"]
    assert all(c[2].startswith("steerlab ") for c in cli_report.COMMANDS)
    app = typer.Typer()
    for name, function, _ in cli_report.COMMANDS:
        app.command(name)(function)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(tmp_path / "nope"), "-o",
                                 str(tmp_path / "p.html")])
    assert isinstance(result.exception, SteerlabError)
    assert "no such run directory" in str(result.exception)
    result = runner.invoke(app, ["inspect", str(tmp_path / "v.safetensors"), "-o",
                                 str(tmp_path / "p.html")])
    assert isinstance(result.exception, SteerlabError) and "nothing to inspect" in str(
        result.exception)
    result = runner.invoke(app, ["report", str(tmp_path), "-o", str(tmp_path / "p.html")])
    assert result.exit_code == 0 and (tmp_path / "p.html").is_file()
