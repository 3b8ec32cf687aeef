"""A user's whole journey through the served app, in a real headless Chromium: one test per step, in
order, on one page (the steps build on each other, as a user's do).

open → pick a corpus row → hover a token → click to freeze → box brush → lasso brush → shift-click a
second ring (paths) → head glyph → each mode → τ change → level change → similar samples → pick a
similar sample → head mask → filters → a typed pair → export SVG and PNG → copy the URL → reload it in
a new context and get the same state.

The app runs as the README serves it (``python -m attnflows_panel serve``) in a subprocess on 127.0.0.1
and a free port, on the real MiniLM pair (packaged MiniLM vs. a short MRPC fine-tune) and a small index
over MRPC pairs. After every step, the server's ERROR log records (with tracebacks), the page's console
errors, uncaught page errors, failed requests and requests that leave the server must all be empty
(see tests/browser_support.py). Each step asserts what the user sees: the URL, the sample shown, the
selection named under the view, the similar samples listed, the downloaded files. Steps wait on
conditions, never on fixed sleeps.

Elements are found as a user finds them (roles, labels, visible text). The radial view is a canvas: its
tokens and head glyphs are found through the stable model names ``attnflows-node-targets`` and
``attnflows-glyph-targets`` of their renderers (see tests/browser_support.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from browser_support import (
    GLYPH_POINTS,
    REPO,
    SCROLL_INTO_VIEW,
    TIMEOUT_S,
    PageProblems,
    ServedApp,
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.real_model, pytest.mark.glue]

from playwright.sync_api import expect  # noqa: E402  (a test extra: never skipped)

expect.set_options(timeout=TIMEOUT_S * 1000)
STEP_S = 30.0  # a click, brush or key press and its answer: well under a second, unless the step is broken
N_SAMPLES = 24
INDEX_TAU = 0.2
TAU = 0.1  # the view's τ: low enough that every ring holds several tokens for the brushes
VIEWPORT = {"width": 1500, "height": 1300}
NODES = "attnflows-node-targets"
GLYPHS = "attnflows-glyph-targets"
TYPED_A = "The committee approved the new budget on Monday."
TYPED_B = "On Monday the new budget was approved by the committee."


# ----------------------------------------------------------------------------------------------------
# fixtures: one server, one browser, one page for the whole journey
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def journey_index(minilm_pair, glue_dir, tmp_path_factory) -> Path:
    from attnflows_panel.index import build_index

    out = tmp_path_factory.mktemp("journey-index") / "mrpc"
    return Path(build_index(minilm_pair, str(glue_dir / "MRPC"), "mrpc", out, limit=N_SAMPLES, tau=INDEX_TAU,
                            progress=False))


@pytest.fixture(scope="module")
def server(minilm_path, minilm_finetuned_dir, journey_index, tmp_path_factory):
    srv = ServedApp(["--pretrained", str(minilm_path), "--finetuned", str(minilm_finetuned_dir),
                     "--index", str(journey_index), "--tau", str(TAU)],
                    tmp_path_factory.mktemp("journey-server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def journey(browser, server, journey_index):
    """The user's page, and what the steps hand on to each other (``shared``: the copied URL, …)."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_S * 1000)
    meta = pd.read_parquet(journey_index / "metadata.parquet")
    j = SimpleNamespace(page=page, context=context, server=server, problems=PageProblems(page, server.url),
                        meta=meta, ids=[str(x) for x in meta["id"]], shared=None, similar=None, token=None)
    yield j
    context.close()


@pytest.fixture(autouse=True)
def no_errors(request, journey):
    """After every step: no server-side error, no console error, no page error, nothing fetched offsite."""
    yield
    server_errors = journey.server.new_errors()
    page_errors = journey.problems.take()
    assert not server_errors, f"server-side error during {request.node.name}:\n{server_errors}"
    assert not page_errors, f"browser errors during {request.node.name}:\n" + "\n".join(page_errors)


# ----------------------------------------------------------------------------------------------------
# what the user sees
# ----------------------------------------------------------------------------------------------------


def url(page) -> str:
    """The address bar (``page.url`` misses Panel's ``history.replaceState`` updates)."""
    return page.evaluate("() => window.location.href")


def query(page) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(url(page)).query).items()}


def expect_query(page, **expected: str | None) -> None:
    """Wait until the URL's query has these values (None: absent)."""
    def ok():
        q = query(page)
        return all(q.get(k) == v for k, v in expected.items())

    wait_for(ok, what=f"the URL to hold {expected} (it is {url(page)})")


def expect_sample(page, sample_id: str) -> None:
    """The sample card names ``sample_id`` and the similar-samples panel names the same one."""
    expect(page.get_by_text(re.compile(rf"^Sample {re.escape(sample_id)}(?!\S)"))).to_be_visible()
    expect(page.get_by_text(re.compile(rf"^current: {re.escape(sample_id)}$"))).to_be_visible()


def selection(page) -> list[tuple[int, int]]:
    """The frozen selection, as the URL shares it (levels and tokens counted from 1, as the views show
    them), in the views' own 0-based terms: [(level, position), ...]."""
    sel = query(page).get("sel", "")
    return [tuple(int(v) - 1 for v in item.split(":")) for item in sel.split(",") if item]


def corpus_row(page, sample_id: str):
    return page.get_by_role("row", name=re.compile(rf"^{re.escape(sample_id)} "))


def result_rows(page):
    """The rows of the similar-samples table (they start with a rank and a score)."""
    return page.get_by_role("row", name=re.compile(r"^\d+ \d+ \S"))


def slider(page, title: str):
    return page.locator(".bk-input-group", has_text=title).get_by_role("slider")


def points(page, name: str, cols=("token", "level", "pos")) -> list[dict]:
    """Where the glyphs of the renderer ``name`` are on the screen, once two reads a frame apart agree
    (the view has drawn the latest data: a click then hits what the server last sent)."""
    js = f"""async (args) => {{
        const read = {GLYPH_POINTS};
        const a = read(args);
        await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
        const b = read(args);
        return a !== null && JSON.stringify(a) === JSON.stringify(b) ? a : null;
    }}"""
    return wait_for(lambda: page.evaluate(js, [name, list(cols)]), what=f"the glyphs of {name} to be drawn")


def figure_clip(pts: list[dict], margin: float = 40) -> dict:
    xs, ys = [p["x"] for p in pts], [p["y"] for p in pts]
    x0, y0 = max(0, min(xs) - margin), max(0, min(ys) - margin)
    return {"x": x0, "y": y0, "width": max(xs) + margin - x0, "height": max(ys) + margin - y0}


def away(page) -> None:
    """Move the mouse off the figure (no hover highlight)."""
    page.mouse.move(2, VIEWPORT["height"] - 2)


def tokens_of(pts: list[dict], level: int, specials: bool = False) -> list[dict]:
    out = [p for p in pts if p["level"] == level and (specials or p["token"] not in ("[CLS]", "[SEP]"))]
    assert out, f"no token on level {level}"
    return out


def click_token(page, tok: dict, shift: bool = False) -> None:
    page.mouse.move(tok["x"], tok["y"])
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(tok["x"], tok["y"])
    if shift:
        page.keyboard.up("Shift")


def named(tok: dict) -> str:
    """How the status line names a selected token: “tok”@level (0-based) or “tok” (level k) (1-based)."""
    t = re.escape(tok["token"])
    return rf"“{t}”(@{tok['level']}\b| \(level {tok['level'] + 1}\))"


def where(tok: dict) -> str:
    """How the hover names a token's place: 'level l · position p' (0-based) or 'level l+1 of … · token p+1'."""
    return (rf"level {tok['level']} · position {tok['pos']}\b"
            rf"|level {tok['level'] + 1} of \d+ · token {tok['pos'] + 1}\b")


def expect_selected(page, *tokens: dict) -> None:
    """The URL shares exactly these tokens, and the status under the view names them."""
    want = {(t["level"], t["pos"]) for t in tokens}
    wait_for(lambda: set(selection(page)) == want, timeout=STEP_S,
             what=f"the selection {sorted(want)} in the URL (it is {url(page)})")
    for t in tokens[:3]:
        expect(page.get_by_text(re.compile(rf"selected .*{named(t)}")).first).to_be_visible()


# ----------------------------------------------------------------------------------------------------
# the journey
# ----------------------------------------------------------------------------------------------------


def test_01_open(journey):
    page = journey.page
    page.goto(journey.server.url)
    first = journey.ids[0]
    expect_sample(page, first)
    assert query(page).get("sample", first) == first and "sel" not in query(page)
    expect(page.get_by_role("heading", name="Corpus")).to_be_visible()
    expect(corpus_row(page, first)).to_be_visible()
    assert len(points(page, NODES)) > 1  # the radial view is drawn


def test_02_pick_a_corpus_row(journey):
    page, target = journey.page, journey.ids[5]
    corpus_row(page, target).click()
    expect_sample(page, target)
    expect_query(page, sample=target)
    row = journey.meta.iloc[5]
    expect(page.get_by_text(f"A: {row['sentence_a']}")).to_be_visible()
    expect(page.get_by_text(f"B: {row['sentence_b']}")).to_be_visible()


def test_03_hover_a_token(journey):
    page = journey.page
    page.evaluate(SCROLL_INTO_VIEW, NODES)  # back up to the view: the pick was made in the corpus table below it
    pts = points(page, NODES)
    tok = journey.token = tokens_of(pts, 0)[len(tokens_of(pts, 0)) // 2]
    away(page)
    clip = figure_clip(pts)
    before = page.screenshot(clip=clip)
    page.mouse.move(tok["x"], tok["y"])
    # the tooltip names the token; the highlight is drawn in the browser (no server round trip)
    expect(page.get_by_text(re.compile(where(tok))).first).to_be_visible()
    wait_for(lambda: page.screenshot(clip=clip) != before, what="the hover to highlight the token's flow")
    assert "sel" not in query(page)
    away(page)
    wait_for(lambda: page.screenshot(clip=clip) == before, what="the highlight to go when the mouse leaves")


def test_04_click_to_freeze(journey):
    page = journey.page
    want = (journey.token["level"], journey.token["pos"])
    tok = next(p for p in points(page, NODES) if (p["level"], p["pos"]) == want)
    click_token(page, tok)
    expect_selected(page, tok)
    expect_query(page, sample=journey.ids[5])


def _brush_targets(pts: list[dict], level: int, n: int = 3) -> list[dict]:
    """``n`` tokens of ``level`` that lie next to each other on screen, far from every other ring."""
    ring = sorted(tokens_of(pts, level, specials=True), key=lambda p: (p["x"], p["y"]))
    others = [p for p in pts if p["level"] != level]
    for i in range(len(ring) - n + 1):
        group = ring[i:i + n]
        x0, x1 = min(p["x"] for p in group) - 3, max(p["x"] for p in group) + 3
        y0, y1 = min(p["y"] for p in group) - 3, max(p["y"] for p in group) + 3
        inside = [p for p in pts if x0 <= p["x"] <= x1 and y0 <= p["y"] <= y1]
        clear = all(abs(p["x"] - q["x"]) + abs(p["y"] - q["y"]) > 12 for p in others for q in group)
        if len(inside) == n and clear:
            return group
    raise AssertionError(f"no {n} neighbouring tokens on level {level} away from the other rings")


def test_05_box_brush(journey):
    page = journey.page
    page.locator(".af-tool-box").click()  # the view's own toolbar: a drag pans until a brush is picked
    away(page)
    group = _brush_targets(points(page, NODES), level=0)
    x0, x1 = min(p["x"] for p in group) - 3, max(p["x"] for p in group) + 3
    y0, y1 = min(p["y"] for p in group) - 3, max(p["y"] for p in group) + 3
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    expect_selected(page, *group)


def test_06_lasso_brush(journey):
    page = journey.page
    pts = points(page, NODES)
    page.mouse.move(pts[0]["x"], pts[0]["y"])
    page.locator(".af-tool-lasso").click()  # the view's own toolbar
    away(page)
    group = _brush_targets(points(page, NODES), level=1)
    x0, x1 = min(p["x"] for p in group) - 4, max(p["x"] for p in group) + 4
    y0, y1 = min(p["y"] for p in group) - 4, max(p["y"] for p in group) + 4
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0)):
        page.mouse.move(x, y, steps=5)
    page.mouse.up()
    expect_selected(page, *group)
    page.locator(".af-tool-pan").click()  # back to the default tool


def test_07_shift_click_a_second_ring_shows_paths(journey):
    page = journey.page
    away(page)
    pts = points(page, NODES)
    first, second = tokens_of(pts, 0)[0], tokens_of(pts, 2)[0]
    click_token(page, first)
    expect_selected(page, first)
    click_token(page, second, shift=True)
    expect_selected(page, first, second)


def test_08_head_glyph(journey):
    page = journey.page
    away(page)
    page.evaluate(SCROLL_INTO_VIEW, NODES)  # the glyph is zoomed to the view's middle: in the window
    glyphs = points(page, GLYPHS, cols=("head", "node"))
    nodes = points(page, NODES)
    glyph = glyphs[0]
    page.mouse.move(glyph["x"], glyph["y"])
    # the head's details (a tooltip, or the info box beside the view; 0- or 1-based)
    info = page.locator(".attnflows-radial-info")  # the help's numbering note names a head too, hidden
    expect(info).to_contain_text(re.compile(rf"head ({glyph['head']}|{glyph['head'] + 1})(?!\d)"))
    page.mouse.click(glyph["x"], glyph["y"])
    wait_for(lambda: "head" in query(page), what=f"a head in the URL (it is {url(page)})")
    assert len(selection(page)) == 1
    layer, head = (int(v) - 1 for v in query(page)["head"].split(":"))  # the URL counts from 1
    assert head == glyph["head"]
    named = re.compile(rf"head ({head} of layer {layer}|{head + 1} of layer {layer + 1})\b")
    expect(page.get_by_text(named).filter(visible=True).first).to_be_visible()
    assert nodes  # the node the glyph belongs to is one of the drawn tokens
    # the glyphs were reached zoomed in: back to the whole view (the zoom is not part of a shared link)
    page.locator(".af-tool-reset").click()
    wait_for(lambda: page.locator(".attnflows-radial").get_attribute("data-zoom") == "1.000", what="the reset zoom")


def test_09_each_mode(journey):
    page = journey.page
    for label, value in (("Pre-trained", "pretrained"), ("Combined", None), ("Fine-tuned", "finetuned")):
        page.get_by_role("button", name=label, exact=True).click()
        expect_query(page, mode=value)
        assert len(points(page, NODES)) > 1


def test_10_tau_change(journey):
    page = journey.page
    handle = slider(page, "τ")
    handle.focus()
    handle.press("ArrowLeft")
    expect_query(page, tau=f"{TAU - 0.01:g}")
    expect(page.get_by_text(f"τ (attention threshold): {TAU - 0.01:.2f}")).to_be_visible()


def test_11_level_change(journey):
    page = journey.page
    handle = slider(page, "Level")
    handle.focus()
    handle.press("ArrowRight")
    expect_query(page, level="2")  # the second level, as the slider's label counts (1 = input)


def test_12_similar_samples(journey):
    page = journey.page
    expect(page.get_by_role("heading", name="Similar samples")).to_be_visible()
    rows = result_rows(page)
    expect(rows.first).to_be_visible()
    current = journey.ids[5]
    names = [rows.nth(i).get_attribute("aria-label") or rows.nth(i).inner_text() for i in range(rows.count())]
    assert all(current not in n.split() for n in names), "the current sample is left out of its similar samples"
    first = rows.first.get_by_role("gridcell").nth(2).inner_text().strip()
    assert first in journey.ids and first != current
    journey.similar = first


def test_13_pick_a_similar_sample(journey):
    page, target = journey.page, journey.similar
    result_rows(page).filter(has_text=target).first.click()
    expect_sample(page, target)
    expect_query(page, sample=target)
    row = journey.meta.set_index("id").loc[target]
    expect(page.get_by_text(f"A: {row['sentence_a']}")).to_be_visible()


def _scores(page) -> list[str]:
    rows = result_rows(page)
    return [rows.nth(i).get_by_role("gridcell").nth(1).inner_text() for i in range(rows.count())]


def test_14_head_mask(journey):
    page = journey.page
    expect(result_rows(page).first).to_be_visible()
    before = _scores(page)
    box = page.get_by_role("textbox", name="Heads (layer:head, from 1)")
    box.fill("6:*")  # the last layer, counted from 1 as everything the user reads
    box.press("Enter")
    wait_for(lambda: (s := _scores(page)) and s != before, what="the similar samples to be ranked on layer 6's heads")
    expect(box).to_have_value("6:*")
    expect(page.get_by_text("searching on 12 of 72 heads: 6:*")).to_be_visible()  # the mask is said, not silent


def test_15_filters(journey):
    page, meta = journey.page, journey.meta
    label = "not_equivalent"
    n = int((meta["label_name"] == label).sum())
    page.get_by_role("combobox", name="Label").select_option(label)
    expect(page.get_by_text(f"{n} of {len(meta)} samples")).to_be_visible()
    first_kept = str(meta[meta["label_name"] == label]["id"].iloc[0])
    expect(corpus_row(page, first_kept)).to_be_visible()
    first_dropped = str(meta[meta["label_name"] != label]["id"].iloc[0])
    expect(corpus_row(page, first_dropped)).to_have_count(0)
    word = str(meta[meta["label_name"] == label]["sentence_a"].iloc[0]).split()[0]
    search = page.get_by_role("textbox", name="Search text")
    search.fill(word)
    search.press("Enter")
    kept = meta[(meta["label_name"] == label) & (meta["sentence_a"].str.contains(word, case=False, regex=False)
                                                 | meta["sentence_b"].str.contains(word, case=False, regex=False))]
    expect(page.get_by_text(f"{len(kept)} of {len(meta)} samples")).to_be_visible()
    search.fill("")
    search.press("Enter")
    page.get_by_role("combobox", name="Label").select_option("any")
    expect(page.get_by_text(f"{len(meta)} of {len(meta)} samples")).to_be_visible()


def test_15b_click_a_head_in_the_head_panel(journey):
    """The head panel under the browser: a click on a cell of its heatmap picks that head (README.md,
    "Which heads changed"), restricts the flow view to it (the URL's head) and disables it for the
    current sample."""
    page = journey.page
    panel = page.locator(".af-head-panel")
    expect(panel.get_by_text("Click a head to list the samples")).to_be_visible()
    canvas = panel.locator("canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + 0.45 * box["width"], box["y"] + 0.45 * box["height"])  # inside the cells
    picked = panel.get_by_text(re.compile(r"^head \d+ of layer \d+$"))
    expect(picked).to_be_visible()
    head, layer = re.match(r"^head (\d+) of layer (\d+)$", picked.inner_text()).groups()
    expect_query(page, head=f"{layer}:{head}")  # the flow view traces that head only; the URL counts from 1 too
    expect(panel.get_by_text(re.compile(r"^Current sample: "))).to_be_visible()  # what disabling it does
    page.get_by_role("button", name="Clear selection").click()
    expect_query(page, head=None)


def test_16_a_typed_pair(journey):
    page = journey.page
    page.get_by_role("textbox", name="Sentence A").fill(TYPED_A)
    page.get_by_role("textbox", name="Sentence B").fill(TYPED_B)
    page.get_by_role("button", name="Run pair and find similar samples").click()
    expect(page.get_by_text(f"A: {TYPED_A}")).to_be_visible()
    expect(page.get_by_text(f"B: {TYPED_B}")).to_be_visible()
    expect_query(page, a=TYPED_A, b=TYPED_B, sample=None)
    expect(result_rows(page).first).to_be_visible()  # similar samples of the typed pair


def test_16b_edge_weights(journey):
    """Issue 27 (3): the sidebar's edge weights run the pair again with norm-weighted attention; the URL
    keeps the choice, the note says what the edges are; back to raw attention."""
    page = journey.page
    weights = page.locator(".af-weights")
    before = len(points(page, NODES))
    weights.get_by_role("button", name="Norm", exact=True).click()
    expect_query(page, w="norm", a=TYPED_A)
    expect(page.get_by_text("Edges: norm-weighted")).to_be_visible()
    wait_for(lambda: points(page, NODES), what="the norm-weighted graph to be drawn")
    weights.get_by_role("button", name="Raw", exact=True).click()
    expect_query(page, w=None, a=TYPED_A)
    expect(page.get_by_text("Edges: raw attention.")).to_be_visible()
    wait_for(lambda: len(points(page, NODES)) == before, what="the raw graph to be drawn again")


def test_17_export_svg_and_png(journey):
    page = journey.page
    # the radial view's own toolbar buttons: they export in the browser what the view draws
    for label, magic in (("SVG", b"<svg"), ("PNG", b"\x89PNG\r\n\x1a\n")):
        with page.expect_download() as info:
            page.locator(f".attnflows-radial .af-tool-{label.lower()}").click()
        download = info.value
        data = Path(download.path()).read_bytes()
        assert magic in data[:200], f"{label}: {data[:80]!r}"
        assert download.suggested_filename.endswith("." + label.lower())
        if label == "SVG":
            assert b"[CLS]" in data and b"committee" in data  # the typed pair's tokens are drawn


def test_18_copy_the_url(journey):
    page = journey.page
    away(page)
    page.evaluate(SCROLL_INTO_VIEW, NODES)  # the earlier steps scrolled down to the corpus browser
    pts = points(page, NODES)
    tok = tokens_of(pts, 1)[0]
    click_token(page, tok)
    expect_selected(page, tok)
    journey.shared = url(page)
    q = query(page)
    assert q["a"] == TYPED_A and q["b"] == TYPED_B
    # the typed pair opened at its own informative level, which the link leaves out (the view picks it
    # again when the link is opened)
    assert q["tau"] == f"{TAU - 0.01:g}" and q["mode"] == "finetuned" and "level" not in q
    assert q["sel"] == f"{tok['level'] + 1}:{tok['pos'] + 1}"  # counted from 1, as the views show them
    away(page)
    page.evaluate(SCROLL_INTO_VIEW, NODES)
    # the rings only: the clicked canvas draws a focus outline just outside them, which a freshly opened
    # page has not (focus is not part of the shared state)
    journey.figure = page.screenshot(clip=figure_clip(points(page, NODES), margin=8))


def test_19_reload_in_a_new_context(journey, browser):
    assert journey.shared, "the previous step copied no URL"
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_S * 1000)
        problems = PageProblems(page, journey.server.url)
        page.goto(journey.shared)
        expect(page.get_by_text(f"A: {TYPED_A}")).to_be_visible()
        expect(page.get_by_text(re.compile(r"selected .*“"))).to_be_visible()
        expect(page.get_by_text(f"τ (attention threshold): {TAU - 0.01:.2f}")).to_be_visible()
        expect(page.get_by_role("button", name="Fine-tuned", exact=True)).to_have_class(re.compile(r"\bbk-active\b"))
        wait_for(lambda: url(page) == journey.shared,
                 what=f"the reloaded URL to stay {journey.shared} (it is {url(page)})")
        away(page)
        page.evaluate(SCROLL_INTO_VIEW, NODES)  # as on the shared page: the same place in the window
        pts = points(page, NODES)
        # the same state draws the same picture, selection highlight included
        out = REPO / "test-output" / "journey"
        out.mkdir(parents=True, exist_ok=True)
        (out / "shared.png").write_bytes(journey.figure)

        def same():
            shot = page.screenshot(clip=figure_clip(pts, margin=8))
            (out / "restored.png").write_bytes(shot)
            return shot == journey.figure

        wait_for(same, what=f"the restored view to look as the shared one (see {out})")
        assert problems.take() == []
    finally:
        context.close()
