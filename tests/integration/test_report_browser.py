"""The report pages in a real headless Chromium (Debian ``chromium``, driven by Playwright).

Each page is opened from ``file://`` with every non-file request intercepted and refused, and
must: load; log no console error and throw no page error; make no failed and no external
request; show every figure, present and visibly non-empty (a bounding box of real size and
pixels that are not all background); show the token heatmap with one ``span`` per token, each
painted (computed style) with the colour of its own value; not overflow the window sideways.
Full-page screenshots go to ``tests/artifacts/report/`` (or ``$STEERLAB_TEST_ARTIFACTS``).

Playwright never downloads a browser here: it drives ``/usr/bin/chromium`` (or
``$STEERLAB_CHROMIUM``). In CI a missing browser or Playwright fails the test.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steerlab.eval import figures as fg
from steerlab.report.page import Page
from steerlab.report.render import inspect_page, report_page, write
from tests.conftest import _missing
from tests.unit.test_report import PROMPTS, build_runs

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("STEERLAB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("STEERLAB_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 1280


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        _missing(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    out = ARTIFACTS / "report"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _visibly_drawn(png: bytes) -> tuple[float, int]:
    """Share of pixels that are not the background, and the number of distinct colours."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)
    flat = pixels.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    ink = float((np.abs(flat - background).sum(axis=1) > 40).mean())
    return ink, len(colours)


def check_in_browser(browser: Any, path: Path, expected: Page, shot: Path) -> dict[str, Any]:
    """Open ``path`` and check everything the module docstring lists; returns what it saw."""
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    external: list[str] = []

    def refuse(route: Any) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            external.append(url)
            route.abort()

    context.route("**/*", refuse)
    page = context.new_page()
    console: list[str] = []
    errors: list[str] = []
    failed: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("request", lambda r: requests.append(r.url))
    response = page.goto(path.resolve().as_uri(), wait_until="load")
    assert response is None or response.ok
    page.wait_for_timeout(200)
    assert page.title() == expected.title
    assert page.locator("script").count() == 0

    figures = page.locator("figure.fig")
    n_figures = figures.count()
    assert n_figures == len(expected.figures()) > 0
    for index, fig in enumerate(expected.figures()):
        svg = page.locator(f"figure#{fig.id} > svg")
        assert svg.count() == 1, fig.id
        box = svg.bounding_box()
        assert box is not None and box["width"] > 150 and box["height"] > 100, (fig.id, box)
        assert box["x"] + box["width"] <= WIDTH + 1, f"{fig.id} is wider than the window"
        ink, colours = _visibly_drawn(svg.screenshot())
        assert ink > 0.02 and colours > 3, f"{fig.id} looks empty ({ink:.3f}, {colours})"
        caption = page.locator(f"figure#{fig.id} figcaption").inner_text()
        assert fig.caption in caption, fig.id
        if index == 0:
            svg.screenshot(path=str(shot.with_name(shot.stem + "-figure.png")))

    blocks = [b for s in expected.sections for b in s.tokens]
    seen_tokens = 0
    for block_index, block in enumerate(blocks):
        lines = page.locator(".tokens").nth(block_index).locator(".line")
        assert lines.count() == len(block.lines)
        for line_index, line in enumerate(block.lines):
            spans = lines.nth(line_index).locator("span.tok")
            assert spans.count() == len(line.tokens)
            painted = spans.evaluate_all(
                "els => els.map(e => [e.dataset.value, getComputedStyle(e).backgroundColor,"
                " e.title, e.children.length])")
            for token, (value, colour, title, children) in zip(line.tokens, painted,
                                                                strict=True):
                assert float(value) == pytest.approx(token.value, rel=1e-6, abs=1e-9)
                assert colour == _rgb(fg.diverging_colour(float(value), block.limit))
                assert title == token.title and children == 0
            seen_tokens += len(line.tokens)
        first = page.locator(".tokens").nth(block_index).locator("span.tok").first
        first.hover()  # the value shows on hover through the title attribute
        assert first.get_attribute("title")

    overflow = page.evaluate("() => document.documentElement.scrollWidth")
    assert overflow <= WIDTH + 1, f"the page scrolls sideways ({overflow} px)"
    page.screenshot(path=str(shot), full_page=True)
    context.close()
    assert not console, console
    assert not errors, errors
    assert not failed, failed
    assert not external, external
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert shot.stat().st_size > 10_000
    return {"figures": n_figures, "tokens": seen_tokens}


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("browser-runs")
    runs = build_runs(root / "made")
    audit = root / "audit"
    for kind, path in runs.items():
        shutil.copytree(path, audit / kind)
    (audit / "verdicts.json").write_text(json.dumps([
        {"finding": "the layer matters", "verdict": "inconclusive",
         "rule": "the best val layer's interval excludes 0",
         "numbers": {"effect": 0.01, "ci": [-0.08, 0.1]}, "warnings": ["n = 3 < 10"]},
        {"finding": "effects shrink out of distribution", "verdict": "does not hold",
         "numbers": "ID −0.02, OOD −0.01", "warnings": []},
        {"finding": "~80 pairs suffice", "verdict": "holds", "numbers": "plateau at 2"}]))
    return audit


def test_report_of_every_run_type_in_chromium(browser: Any, audit_dir: Path, shots: Path,
                                              tmp_path: Path) -> None:
    page = report_page(audit_dir)
    html = write(page, tmp_path / "audit.html")
    seen = check_in_browser(browser, html, page, shots / "audit.png")
    assert seen["figures"] >= 9
    assert {s.kind for s in page.sections} >= {"sweep", "samples", "ood", "perplexity",
                                               "capabilities", "sentiment", "models"}


def test_inspect_page_in_chromium(browser: Any, shots: Path, tmp_path: Path) -> None:
    import torch

    from steerlab.data.loaders import load_dataset
    from steerlab.extraction import extract
    from steerlab.model.load import as_loaded
    from steerlab.testing.tiny import tiny_model, tiny_tokenizer

    torch.manual_seed(0)
    lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    data = load_dataset("builtin:optimism", split="all")
    vec = extract(lm, data.subset(8, 0), layers=[1, 2], progress=False)
    other = extract(lm, data.subset(8, 1), layers=[1, 2], progress=False)
    page = inspect_page(lm, [vec, other], ["a.safetensors", "b.safetensors"], prompts=PROMPTS,
                        layers=[1, 2], items=list(data.subset(10, 2)), data="builtin:optimism")
    html = write(page, tmp_path / "inspect.html")
    seen = check_in_browser(browser, html, page, shots / "inspect-tiny.png")
    assert seen["tokens"] == sum(len(line.tokens) for s in page.sections for b in s.tokens
                                 for line in b.lines) > 0


def test_inspect_smollm2_in_chromium(browser: Any, smollm2: Any, shots: Path,
                                     tmp_path: Path) -> None:
    from steerlab.data.loaders import load_dataset
    from steerlab.extraction import extract

    train = load_dataset("builtin:optimism", split="train").subset(40, 0)
    vec = extract(smollm2, train, layers=[10, 12, 14], progress=False)
    prompts = ["My manager wants to talk to me tomorrow. What could it be about?",
               "The weather ruined our picnic, but maybe the evening will be nice.",
               "I failed the exam again and I don't see the point in trying."]
    test = load_dataset("builtin:optimism", split="test")
    page = inspect_page(smollm2, [vec], ["optimism.safetensors"], prompts=prompts, layers=[12],
                        items=list(test.subset(30, 0)), data="builtin:optimism (test)")
    html = write(page, tmp_path / "inspect-smollm2.html")
    check_in_browser(browser, html, page, shots / "inspect-smollm2.png")
    text = html.read_text()
    assert re.search(r"PC1 follows behaviour with \|r\| = [0-9.]+ and the answer letter", text)
