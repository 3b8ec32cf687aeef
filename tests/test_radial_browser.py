"""The radial Attention Flow component (views/radial.js) in a real headless Chromium.

- The label placement (``placeLabels``, exported by the ES module) on 200 random layouts: no two placed
  boxes overlap, ever.
- The view served by Panel (one server in a thread of this process, one browser for the module) with
  real MiniLM pairs of about 44, 128, 256 and 512 tokens built from GLUE RTE sentences, at 1280×800 and
  1600×1000: the labels drawn (``data-label-boxes``) never overlap and never go below 10 px; at 256
  tokens every token of the frozen trace from [CLS] gets a label when zoomed in (what wheel and drag
  do, through the component's ``attnflowsView`` hook); hover, click, shift-click on two rings, a head
  glyph, box and lasso brushes and clear, each checked by what the page and the view show.

Every test fails on a console error, a page error or a failed request (tests/browser_support.py).
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.real_model]


from attnflows_panel.layout import display_token  # noqa: E402
from attnflows_panel.views.radial import esm_source, label_inside, label_overlaps  # noqa: E402
from browser_support import (  # noqa: E402
    IMPORT_RADIAL,
    PageProblems,
    served_panel,
    wait_for,
)

SIZES = {44: None, 128: None, 256: None, 512: None}
VIEWPORTS = [(1280, 800), (1600, 1000)]


def _overlaps(boxes) -> list:
    """Pairs of label boxes that overlap, each box turned by its angle (labels run along their ring)."""
    return label_overlaps(boxes)


def _pair_of(sentences: list[str], minilm_pair, target: int) -> tuple[str, str]:
    """Sentence A and B from consecutive GLUE sentences (cut at a word), each about target/2 tokens long:
    a long pair concatenates several RTE sentences."""
    tok = minilm_pair.tokenizer
    words = iter(" ".join(sentences).split())
    sides = []
    for _ in range(2):
        count, side = 0, []
        while count < target // 2 - 2:
            w = next(words)
            side.append(w)
            count += len(tok.tokenize(w))
        sides.append(" ".join(side))
    return sides[0], sides[1]


@pytest.fixture(scope="module")
def results(minilm_pair, glue_dir):
    import csv

    with open(glue_dir / "RTE" / "dev.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences = [r["sentence1"] for r in rows] + [r["sentence2"] for r in rows]
    out = {}
    for n in SIZES:
        if n > 44:
            a, b = _pair_of(sentences[n // 4:], minilm_pair, n)
        else:  # the first RTE pair of 40-48 tokens
            tok = minilm_pair.tokenizer
            a, b = next((r["sentence1"], r["sentence2"]) for r in rows
                        if 40 <= len(tok.tokenize(r["sentence1"])) + len(tok.tokenize(r["sentence2"])) + 3 <= 48)
        out[n] = minilm_pair.run(a, b)
    return out


@pytest.fixture(scope="module")
def server(results):
    import panel as pn

    from attnflows_panel.views.attention_flows import AttentionFlowsView

    views: dict[int, AttentionFlowsView] = {}

    def factory():
        n = int(pn.state.session_args.get("n", [b"128"])[0])
        view = AttentionFlowsView(results[n], tau=0.1, level=0)
        views[n] = view
        return view

    with served_panel(factory) as port:
        yield f"http://127.0.0.1:{port}/", views


def _open(browser, url, w, h):
    page = browser.new_page(viewport={"width": w, "height": h})
    problems = PageProblems(page, url.split("?")[0])
    page.goto(url)
    root = page.locator(".attnflows-radial")
    wait_for(lambda: root.count() and root.get_attribute("data-ready") == "1", what="the radial view")
    # the sentence view above it grows with the tokens: bring the radial view into the window
    root.evaluate("(el) => el.scrollIntoView({block: 'end'})")
    return page, root, problems


def test_label_placement_never_overlaps_on_random_layouts(browser):
    """placeLabels on 200 random layouts (rings of random sizes, random label widths, crowded and sparse,
    labels upright or turned along their ring): the boxes it places never overlap (checked in the page and,
    independently, by radial.label_overlaps in Python), stay inside the bounds, and a label that fits
    alone is placed."""
    page = browser.new_page()
    problems = PageProblems(page)
    page.set_content("<!doctype html><html><body></body></html>")
    page.evaluate(IMPORT_RADIAL, esm_source())
    res = page.evaluate("""() => {
      let seed = 7;
      const rnd = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
      const out = {overlaps: 0, placed: 0, layouts: 0, firstPlaced: 0, boxes: [], turned: 0};
      for (let t = 0; t < 200; t++) {
        const along = t % 2 === 1;  // odd layouts: each label turned along its ring (upright)
        const W = 300 + rnd() * 900, H = 300 + rnd() * 700, items = [];
        const rings = 1 + Math.floor(rnd() * 12);
        for (let k = 0; k < rings; k++) {
          const m = 1 + Math.floor(rnd() * 300), r = (k + 1) / rings * Math.min(W, H) * 0.48;
          for (let i = 0; i < m; i++) {
            const a = 2 * Math.PI * (i + 0.5) / m, x = W / 2 + r * Math.cos(a), y = H / 2 + r * Math.sin(a);
            const turn = along ? (Math.sin(a) > 0 ? a - Math.PI / 2 : a + Math.PI / 2) : 0;
            const out = [x + 14 * Math.cos(a), y + 14 * Math.sin(a)];
            items.push({w: 8 + rnd() * 90, h: 13, a: turn, cands: [[x, y], out]});
          }
        }
        items.sort(() => rnd() - 0.5);
        const boxes = window.radial.placeLabels(items, {bounds: [0, 0, W, H]}).filter((b) => b);
        out.layouts += 1; out.placed += boxes.length;
        if (window.radial.anyOverlap(boxes)) out.overlaps += 1;
        if (boxes.length) out.firstPlaced += 1;
        for (const b of boxes) if (Math.abs(b[4]) > 0.05) out.turned += 1;
        if (t % 20 === 1) out.boxes.push([W, H, boxes]);  // checked again in Python
      }
      return out;
    }""")
    assert res["layouts"] == 200 and res["overlaps"] == 0
    assert res["placed"] > 2000 and res["firstPlaced"] == 200 and res["turned"] > 500
    for W, H, boxes in res["boxes"]:
        published = [[*b[:4], 0, 0, b[4]] for b in boxes]
        assert label_overlaps(published) == [] and all(label_inside(b, W, H, 0.01) for b in published)
    # the overlap checks themselves see an overlap, of upright and of turned boxes (crossed, or turned into
    # each other although their upright boxes would not touch), and none between parallel turned neighbours
    assert page.evaluate("() => window.radial.anyOverlap([[0, 0, 10, 10], [9, 9, 5, 5]])") is True
    crossed = [[0, 0, 100, 10, 0.785], [0, 0, 100, 10, -0.785]]
    turned_in = [[0, 0, 100, 10, 0], [40, 30, 100, 10, 0.785]]
    parallel = [[0, 0, 100, 10, 0.785], [0, 20, 100, 10, 0.785]]
    for boxes, want in ((crossed, True), (turned_in, True), (parallel, False)):
        assert page.evaluate("(b) => window.radial.anyOverlap(b)", boxes) is want
        assert bool(label_overlaps([[*b[:4], 0, 0, b[4]] for b in boxes])) is want
    assert problems.take() == []
    page.close()


@pytest.mark.parametrize("w, h", VIEWPORTS)
@pytest.mark.parametrize("n", list(SIZES))
def test_labels_never_overlap_and_stay_readable(server, browser, results, n, w, h):
    url, views = server
    page, root, problems = _open(browser, f"{url}?n={n}", w, h)
    assert int(root.get_attribute("data-nodes")) == len(views[n].data.nodes)
    assert abs(results[n].n - n) <= max(12, n // 6)
    boxes = json.loads(root.get_attribute("data-label-boxes"))
    assert len(boxes) >= 8
    assert _overlaps(boxes) == []
    assert all(b[3] >= 12 for b in boxes)  # 11 px text in a box of 13 px: never below 10 px
    bb = root.bounding_box()
    assert all(label_inside(b, bb["width"], bb["height"]) for b in boxes)
    # zoomed in: more labels, still none over another
    nd = views[n].data.nodes
    outer = nd[nd["level"] == 0].iloc[len(nd[nd["level"] == 0]) // 3]
    zoomed = root.evaluate("(el, p) => el.attnflowsView(4, p[0], p[1])", [float(outer["hx"]), float(outer["hy"])])
    assert len(zoomed) >= 3 and _overlaps(zoomed) == []
    assert problems.take() == []
    page.close()


def test_every_token_of_the_trace_from_cls_can_be_read_at_256_tokens(server, browser):
    """1280×800, 256 tokens: freeze the trace from [CLS] by a click; zooming in over the drawing labels
    every token of that trace (the test hook counts the trace's labels of each view)."""
    url, views = server
    page, root, problems = _open(browser, f"{url}?n=256", 1280, 800)
    view = views[256]
    L = view.data.L
    cls = [p for p in root.evaluate("(el) => el.attnflowsPoints('nodes')") if p["level"] == L][0]
    page.mouse.click(cls["x"], cls["y"])
    wait_for(lambda: view.selection == [[L, 0]], what="the click on [CLS] to reach the view")
    page.mouse.move(1, 1)  # off the view: the frozen trace shows (a hover would show over it)
    wait_for(lambda: root.get_attribute("data-trace") == "frozen", what="the frozen trace")
    total = int(root.get_attribute("data-trace-total"))
    d = view.flow.data
    texts = d["label_text"].split("\n")
    traced = {(int(lv), int(p)) for (lv, p), t in zip(zip(d["n_level"], d["n_pos"], strict=True), texts, strict=True)
              if t and (int(lv), int(p)) in view.highlight().node_set(view.data)}
    assert total == len(traced) > 100
    extent = d["extent"]
    seen = root.evaluate("""(el, ext) => {
      const seen = new Set();
      for (const zoom of [1, 3, 6, 10, 16]) {
        const step = ext / zoom * 1.2;
        for (let x = -ext; x <= ext + 1e-6; x += step)
          for (let y = -ext; y <= ext + 1e-6; y += step)
            for (const b of el.attnflowsView(zoom, x, y)) seen.add(`${b[5]},${b[4]}`);
      }
      return Array.from(seen);
    }""", extent)
    seen = {tuple(int(v) for v in s.split(",")) for s in seen}
    missing = traced - seen
    assert not missing, f"{len(missing)} of {len(traced)} traced tokens never labelled, e.g. {sorted(missing)[:5]}"
    assert problems.take() == []
    page.close()


@pytest.mark.parametrize("n", [44, 256])
def test_a_folded_run_opens_into_its_tokens_when_zoomed_in(server, browser, output_dir, n):
    """1280×800: a folded run shows its count at rest; zoomed in until its arc holds its tokens' labels, it
    opens into them: every token of the run is written along the arc, in its sentence's reading direction
    (A clockwise, B counter-clockwise), over no other label."""
    import math

    url, views = server
    page, root, problems = _open(browser, f"{url}?n={n}", 1280, 800)
    view = views[n]
    runs = root.evaluate("(el) => el.attnflowsRuns()")
    rest = json.loads(root.get_attribute("data-label-boxes"))

    def opened(boxes, run):
        return [b for b in boxes if len(b) > 7 and b[7] == 1 and b[5] == run["level"]
                and run["first"] <= b[4] <= run["last"]]

    # runs of 2-8 tokens still folded at rest (a run whose arc holds its labels is open already)
    several = [r for r in runs if 2 <= r["count"] <= 8 and not opened(rest, r)]
    assert several, f"a {n}-token pair at τ 0.1 folds runs of 2-8 tokens"
    run = max(several, key=lambda r: r["arc"] / r["count"])  # the one that opens first
    first_open = None
    for zoom in (2, 3, 4, 6, 8, 12, 16, 24, 32, 40):
        boxes = root.evaluate("(el, a) => el.attnflowsView(a[0], a[1], a[2])", [zoom, run["dx"], run["dy"]])
        assert _overlaps(boxes) == []
        got = opened(boxes, run)
        first_open = first_open or (zoom if got else None)
        if len(got) == run["count"]:
            break
    assert first_open, f"zoomed in 40×, the run of {run['count']} tokens never opened"
    # every token of the run is written once zoomed in far enough (a label of a neighbour may hold its
    # place at first: labels never overlap)
    assert sorted(b[4] for b in got) == list(range(run["first"], run["last"] + 1)), (zoom, got)
    assert all(b[3] >= 11 for b in got)  # 10 px text
    # the reading direction: the angle about the centre falls with the position in sentence A, rises in B
    cx, cy = root.evaluate("(el) => el.attnflowsScreen(0, 0)")
    mid = math.atan2(run["dy"], run["dx"])
    ang = {}
    for b in got:
        a = math.atan2(-(b[1] + b[3] / 2 - cy), b[0] + b[2] / 2 - cx)
        ang[b[4]] = (a - mid + math.pi) % (2 * math.pi) - math.pi
    seq = [ang[p] for p in sorted(ang)]
    steps = [b - a for a, b in zip(seq, seq[1:], strict=False)]
    if int(view.data.segments[run["first"]]) == 0:
        assert all(d < 0 for d in steps), seq
    else:
        assert all(d > 0 for d in steps), seq
    page.screenshot(path=str(output_dir / f"opened-run-{n}.png"))
    assert problems.take() == []
    page.close()


def test_hover_click_shift_click_glyph_brushes_and_clear(server, browser):
    url, views = server
    page, root, problems = _open(browser, f"{url}?n=44", 1280, 800)
    view = views[44]
    pts = root.evaluate("(el) => el.attnflowsPoints('nodes')")
    L = view.data.L
    by_level = {}
    for p in pts:
        by_level.setdefault(p["level"], []).append(p)
    # hover: the trace shows in the page, with the token's details
    p0 = by_level[1][0]
    page.mouse.move(p0["x"], p0["y"])
    wait_for(lambda: root.get_attribute("data-trace") == "hover", what="the hover trace")
    assert root.get_attribute("data-hover") == f"node:{p0['id']}:0"
    assert int(root.get_attribute("data-trace-total")) >= 1
    assert "level 2 of" in page.locator(".attnflows-radial-info").inner_text()
    assert view.selection == []  # a hover changes nothing on the server
    # a folded run (tokens the level does not hold): its count and tokens in the info box, nothing sent
    runs = sorted(root.evaluate("(el) => el.attnflowsRuns()"), key=lambda r: -r["arc"])
    assert runs, "a 44-token pair at τ 0.1 folds some tokens"
    run = runs[0]
    page.mouse.move(run["x"], run["y"])
    wait_for(lambda: root.get_attribute("data-hover") == f"run:{run['i']}", what="the run hover")
    text = page.locator(".attnflows-radial-info").inner_text()
    toks = view.data.tokens
    assert f"{run['count']} token(s) folded" in text and f"level {run['level'] + 1} of" in text
    assert display_token(toks[run["first"]]) in text and run["last"] - run["first"] + 1 == run["count"]
    assert all(view.data.node_index[run["level"], p] < 0 for p in range(run["first"], run["last"] + 1))
    assert view.selection == []
    # click: freeze
    page.mouse.click(p0["x"], p0["y"])
    wait_for(lambda: view.selection == [[1, p0["pos"]]], what="the click")
    # shift-click a token of another ring: the paths between them
    top = by_level[L][0]
    page.keyboard.down("Shift")
    page.mouse.click(top["x"], top["y"])
    page.keyboard.up("Shift")
    wait_for(lambda: sorted(view.selection) == sorted([[1, p0["pos"]], [L, 0]]), what="the shift-click")
    wait_for(lambda: "path" in view.status, what="the paths' status")  # the view redraws on the next tick
    page.mouse.move(1, 1)
    wait_for(lambda: root.get_attribute("data-trace") == "frozen", what="the frozen paths")
    # a head glyph (zoomed in until glyphs are a few px): its head restriction
    node = by_level[2][0]
    root.evaluate("(el, p) => el.attnflowsView(14, p[0], p[1])",
                  [float(view.data.nodes["hx"].iloc[node["id"]]), float(view.data.nodes["hy"].iloc[node["id"]])])
    glyphs = [g for g in root.evaluate("(el) => el.attnflowsPoints('glyphs')") if g["node"] == node["id"]]
    assert glyphs and glyphs[0]["size"] >= 3
    g0 = glyphs[0]
    page.mouse.move(g0["x"], g0["y"])
    wait_for(lambda: (root.get_attribute("data-hover") or "").startswith("glyph:"), what="the glyph hover")
    page.mouse.click(g0["x"], g0["y"])
    wait_for(lambda: view.head == [1, g0["head"]], what="the glyph click")
    assert view.selection == [[2, node["pos"]]]
    page.locator(".af-tool-reset").click()
    wait_for(lambda: root.get_attribute("data-zoom") == "1.000", what="the reset")
    # box brush: two neighbours on the outer ring
    pts = root.evaluate("(el) => el.attnflowsPoints('nodes')")
    ring0 = sorted((p for p in pts if p["level"] == 0), key=lambda p: p["pos"])
    a, b = ring0[3], ring0[4]
    page.locator(".af-tool-box").click()
    pad = 3
    x0, y0 = min(a["x"], b["x"]) - pad, min(a["y"], b["y"]) - pad
    x1, y1 = max(a["x"], b["x"]) + pad, max(a["y"], b["y"]) + pad
    inside = [p for p in pts if x0 <= p["x"] <= x1 and y0 <= p["y"] <= y1]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=3)
    page.mouse.move(x1, y1, steps=3)
    page.mouse.up()
    wait_for(lambda: sorted(map(tuple, view.selection)) == sorted((p["level"], p["pos"]) for p in inside),
             what="the box brush")
    assert root.get_attribute("data-brushed") == str(len(inside)) and len(inside) >= 2
    # lasso around one token
    page.locator(".af-tool-lasso").click()
    c = ring0[8]
    page.mouse.move(c["x"] - 3, c["y"] - 3)
    page.mouse.down()
    for dx, dy in ((3, -3), (3, 3), (-3, 3), (-3, -3)):
        page.mouse.move(c["x"] + dx, c["y"] + dy, steps=2)
    page.mouse.up()
    wait_for(lambda: view.selection == [[0, c["pos"]]], what="the lasso")
    # clear
    page.locator(".af-tool-clear").click()
    wait_for(lambda: view.selection == [] and view.head == [], what="clear")
    page.mouse.move(1, 1)
    wait_for(lambda: root.get_attribute("data-trace") == "", what="the cleared drawing")
    # the export is what is drawn, with both sentences in full and the legend
    svg = root.evaluate("(el) => el.attnflowsSvg()")
    assert svg.startswith("<svg") and "pre-trained model only" in svg
    assert view.result.sentence_a.split()[0] in svg
    assert problems.take() == []
    page.close()


def test_the_browser_derives_the_layouts_edge_curves_and_sparklines(browser, results, minilm_pair):
    """radial.js computes each edge's curve, the sparkline bars, the head glyphs (rows, colours, centres,
    counts) and the edges' upper nodes, models, head counts and rest flags from what pack_flow sends (they
    are not sent, to keep the payload small): the same numbers as layout.edge_curves and FlowData, in both
    modes."""
    import numpy as np

    from attnflows_panel.graph import AttentionGraph
    from attnflows_panel.views.flow_data import FlowData
    from attnflows_panel.views.radial import pack_flow
    from browser_support import radial_page

    r = results[44]
    page = browser.new_page()
    problems = PageProblems(page)
    for mode in ("combined", "finetuned"):
        data = FlowData(r.tokens, r.segments, AttentionGraph.build(r.pretrained.attentions, 0.1),
                        AttentionGraph.build(r.finetuned.attentions, 0.1), mode)
        root = radial_page(page, pack_flow(data), 600, 600)
        geo = root.evaluate("(el) => el.attnflowsGeometry()")
        e = data.edges
        want = np.stack([e[c].to_numpy() for c in ("x0", "y0", "cx0", "cy0", "cx1", "cy1", "x1", "y1")], axis=1)
        # an edge between tokens half a turn apart may go round either way: both are right
        ang = data.nodes["angle"].to_numpy()
        d = np.mod(ang[e["v"].to_numpy()] - ang[e["u"].to_numpy()] + np.pi, 2 * np.pi) - np.pi
        ok = np.abs(np.abs(d) - np.pi) > 1e-6
        assert ok.mean() > 0.98
        np.testing.assert_allclose(np.asarray(geo["curve"]).reshape(-1, 8)[ok], want[ok], atol=0.05)
        got = np.asarray(geo["spark"]).reshape(-1, 6)
        sp = data.sparks
        want = np.stack([sp["node"], sp["model"], sp["x0"], sp["y0"], sp["x1"], sp["y1"]], axis=1).astype(float)
        key = lambda a: a[np.lexsort((a[:, 3], a[:, 2], a[:, 1], a[:, 0]))]  # noqa: E731
        np.testing.assert_allclose(key(got), key(want), atol=0.05)
        # the head glyphs and edge columns that are not sent: derived in the browser as FlowData built them
        g = data.glyphs
        for k in ("node", "head", "model", "part", "gc", "cp", "cf"):
            np.testing.assert_array_equal(geo[f"g_{k}"], g[k].to_numpy(), err_msg=k)
        np.testing.assert_allclose(geo["g_x"], g["x"], atol=1e-3)
        np.testing.assert_allclose(geo["g_y"], g["y"], atol=1e-3)
        for k, c in (("u", "u"), ("mem", "member"), ("nh", "nh"), ("rest", "rest")):
            np.testing.assert_array_equal(geo[f"e_{k}"], e[c].to_numpy(), err_msg=k)
    assert problems.take() == []
    page.close()


TAU_DENSE = 0.03  # the 512-token pair's graph spans most tokens of every level: thousands of glyphs


def test_head_glyphs_written_as_pixels_look_as_the_glyphs_filled_as_paths(browser, results):
    """At 512 tokens the head glyphs are 1-3 device px: the component writes them into one pixel buffer
    (radial_data.js, glyphLayer) instead of filling ~80k turned quads, and the sparkline bars, ~1 px wide,
    likewise (sparkLayer) instead of stroking one bar per edge. The same drawing at device pixel ratio 3,
    where glyphs and bars are large enough to be drawn as paths, brought back to 1× (box filter), is the
    reference: the two differ only in anti-aliasing. (24k glyphs at τ 0.03: as drawn, 0.5 % of the pixels
    differ by more than 40 levels and the mean colour by at most 0.35; a layer left without its glyphs,
    1.4 % and 1.2.)"""
    import io

    import numpy as np
    from PIL import Image

    from attnflows_panel.graph import AttentionGraph
    from attnflows_panel.views.flow_data import FlowData
    from attnflows_panel.views.radial import pack_flow
    from browser_support import radial_page

    r = results[512]
    data = FlowData(r.tokens, r.segments, AttentionGraph.build(r.pretrained.attentions, TAU_DENSE),
                    AttentionGraph.build(r.finetuned.attentions, TAU_DENSE), "combined")
    packed = pack_flow(data)
    shots, how = {}, {}
    for dpr in (1, 3):
        context = browser.new_context(viewport={"width": 740, "height": 740}, device_scale_factor=dpr)
        page = context.new_page()
        problems = PageProblems(page)
        root = radial_page(page, packed, 700, 700)
        how[dpr] = (root.get_attribute("data-glyph-pixels"), root.get_attribute("data-spark-pixels"))
        png = page.screenshot(clip={"x": 0, "y": 0, "width": 700, "height": 700})
        shots[dpr] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").resize((700, 700), Image.BOX), float)
        assert problems.take() == []
        context.close()
    assert how == {1: ("1", "1"), 3: ("0", "0")}  # pixels at 1×, paths at 3× (glyphs, sparklines)
    diff = np.abs(shots[1] - shots[3]).max(axis=2)
    assert (diff > 40).mean() < 0.009, (diff > 40).mean()
    # as much of each glyph colour: the pixels' mean colour within 0.6 levels of the paths'
    np.testing.assert_allclose(shots[1].mean(axis=(0, 1)), shots[3].mean(axis=(0, 1)), atol=0.6)
