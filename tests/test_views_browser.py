"""The Attention Flows views in a real headless Chromium (Playwright), served by Panel in a thread.

On a real MiniLM pair (packaged MiniLM vs. its short MRPC fine-tune): hovering a token or a head glyph
highlights in the page exactly what graph.py / compare.py answer, clicking freezes, shift-click brushes
and selects across rings, clicking empty space clears, the τ slider changes the rings, the radial view's
SVG/PNG toolbar buttons download valid files, and the browser logs no error. The Sentence and Sentence
Context views (JSComponents too) draw the frozen highlight's states, a click on a sentence token selects it
at the chosen level, the sentence view wraps at its own width, and a context wedge's tooltip names its token.
Screenshots go to test-output/<test>/.

Every wait is on a condition (page function or server state), never a fixed sleep.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from attnflows_panel.compare import GraphComparison
from attnflows_panel.graph import AttentionGraph
from attnflows_panel.views.attention_flows import AttentionFlowsView
from browser_support import served_panel, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

SENTENCE_A = "The company said it expects the deal to close in the third quarter."
SENTENCE_B = "The deal is expected to close in the third quarter, the company said."
TAU = 0.1  # MiniLM's [CLS] attends mostly to itself above 0.2; 0.1 gives rings of 6, 11, 26, 32 tokens

RADIAL = ".attnflows-radial"


def _points(page, kind="nodes"):
    """Where the radial component draws its tokens / head glyphs on the page (its test hook)."""
    return page.locator(RADIAL).evaluate("(el, kind) => el.attnflowsPoints(kind)", kind)


def _node_xy(page, i):
    p = next(q for q in _points(page) if q["id"] == i)
    return p["x"], p["y"]


def _wait(cond, timeout=15.0, what="condition"):
    wait_for(cond, timeout, what, interval=0.02)


def _open(browser, port, width=1500, height=1250):
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{port}/")
    wait_for(lambda: page.locator(RADIAL).count() and page.locator(RADIAL).get_attribute("data-ready") == "1",
             30, "the radial view")
    return page, errors


def _states(page) -> dict:
    s = page.locator(RADIAL).evaluate("(el) => el.attnflowsStates()")
    s["keys"] = list(zip(s["level"], s["pos"], strict=True))
    return s


def _lit(keys, st) -> dict:
    """{(level, pos): code} of what the page highlights (state 1-3, or 9-11 for the selected token)."""
    return {k: (s - 8 if s >= 9 else s) for k, s in zip(keys, st, strict=True) if 1 <= s <= 3 or s >= 9}


def _hover_node(page, i):
    x, y = _node_xy(page, i)
    page.mouse.move(x, y)
    _wait(lambda: page.locator(RADIAL).get_attribute("data-hover") == f"node:{i}:0", 10, "the hover")
    return x, y


def _empty_spot(page):
    box = page.locator(RADIAL).bounding_box()
    return box["x"] + 4, box["y"] + box["height"] - 4


SENTENCE = ".attnflows-sentence"
CONTEXT = ".attnflows-context"


def _check_sentence_and_context(page, view, comp, keys):
    """The Sentence view's token states and the Context view's wedge states are what Python computes for
    the frozen selection; clicking a sentence token selects it at the chosen level; the sentence view wraps
    at its own width with a font of at least 10 px; hovering a wedge names its token, position and level."""
    from attnflows_panel.views.context import context_states
    from attnflows_panel.views.sentence import sentence_states

    sent = page.locator(SENTENCE)
    _wait(lambda: sent.get_attribute("data-ready") == "1", 10, "the sentence view")
    assert float(sent.get_attribute("data-font-px")) >= 10
    want = ",".join(str(int(v)) for v in sentence_states(view.data, view.highlight()))
    _wait(lambda: sent.get_attribute("data-states") == want, 5, "the sentence view's frozen states")
    wedges = page.locator(CONTEXT).evaluate("(el) => el.attnflowsWedges()")
    assert [(w["level"], w["pos"]) for w in wedges] == keys  # the radial view's nodes, in its order
    assert [w["state"] for w in wedges] == context_states(view.data, view.highlight()).tolist()

    # click a sentence token that is a node of the chosen level: it is selected at that level
    level = view.level
    pos = int(comp.levels[level][len(comp.levels[level]) // 2])
    tok = next(t for t in sent.evaluate("(el) => el.attnflowsTokens()") if t["pos"] == pos)
    sent.evaluate("(el, y) => { el.scrollTop = Math.max(0, y - el.getBoundingClientRect().top - 40); }", tok["y"])
    tok = next(t for t in sent.evaluate("(el) => el.attnflowsTokens()") if t["pos"] == pos)
    page.mouse.move(tok["x"] + tok["w"] / 2, tok["y"])
    _wait(lambda: sent.get_attribute("data-hover") == str(pos), 5, "the sentence hover")
    expect_tip = page.locator(".attnflows-sentence-tip")
    assert f"position {pos + 1}" in expect_tip.inner_text()
    page.mouse.click(tok["x"] + tok["w"] / 2, tok["y"])
    _wait(lambda: view.selection == [[level, pos]], what="the sentence click to reach the server")
    _wait(lambda: sent.get_attribute("data-states").split(",")[pos] in ("9", "10", "11"), 5, "the selected token")
    radial_sel = keys.index((level, pos))
    _wait(lambda: _states(page)["fz"][radial_sel] >= 9, 5, "the radial view's frozen token")

    # the wrap follows the component's width
    rows = int(sent.get_attribute("data-rows"))
    sent.evaluate("(el) => { el.style.width = '200px'; }")
    _wait(lambda: int(sent.get_attribute("data-rows")) > rows, 5, "the narrower sentence view to wrap more")
    sent.evaluate("(el) => { el.style.width = ''; }")
    _wait(lambda: int(sent.get_attribute("data-rows")) == rows, 5, "the sentence view's width back")

    # hover a context wedge: its tooltip
    w = next(w for w in page.locator(CONTEXT).evaluate("(el) => el.attnflowsWedges()") if w["level"] == 0)
    page.mouse.move(w["x"], w["y"])
    _wait(lambda: page.locator(CONTEXT).get_attribute("data-hover") == f"0:{w['pos']}", 5, "the wedge hover")
    tip = page.locator(".attnflows-context-tip").inner_text()
    assert f"token {w['pos'] + 1} of the input" in tip and "level 1" in tip


@pytest.fixture(scope="module")
def minilm_result(minilm_pair):
    return minilm_pair.run(SENTENCE_A, SENTENCE_B)


def test_hover_click_brush_tau_export_on_minilm(browser, minilm_result, output_dir):
    r = minilm_result
    views: list[AttentionFlowsView] = []

    def app():
        v = AttentionFlowsView(r, tau=TAU, mode="combined", level=2)
        views.append(v)
        return v

    pre = AttentionGraph.build(r.pretrained.attentions, TAU)
    fine = AttentionGraph.build(r.finetuned.attentions, TAU)
    comp = GraphComparison(pre, fine)

    with served_panel(app) as port:
        # 1200 px wide: the radial view beside the side column (340 px) is 860 px, the size these pointer
        # positions were worked out at (at 1160 px a token's centre lies under one of its head glyphs)
        page, errors = _open(browser, port, width=1200)
        view = views[-1]
        s = _states(page)
        keys = s["keys"]
        assert keys == [(k, int(t)) for k in range(comp.L + 1) for t in comp.levels[k]]

        # --- hover a token: the page highlights compare.trace (each model traversed, coloured by model)
        picks = [keys.index((lv, int(comp.levels[lv][len(comp.levels[lv]) // 2]))) for lv in (0, 2, comp.L - 1)]
        from attnflows_panel.bottleneck import bottleneck, describe_width

        widths = [bottleneck(out.attentions).node for out in (r.pretrained, r.finetuned)]
        for i in picks:
            _hover_node(page, i)
            s = _states(page)
            assert _lit(keys, s["st"]) == dict(comp.trace(*keys[i])), keys[i]
            # each model's "in the graph for τ < x" (issue 27): the token's widest-path width in that model
            said = page.locator(f"{RADIAL} .attnflows-radial-info .af-width").all_inner_texts()
            lv, pos = keys[i]
            assert said == [describe_width(float(np.float32(w[lv, pos]))) for w in widths], (keys[i], said)
        assert len(_lit(keys, s["st"])) > 3  # a real trace, not just the token

        # --- hover a head glyph: that layer restricted to that head, that model only; shift: both models
        data = view.data
        gl = data.glyphs
        split = gl[gl.duplicated(["node", "head"], keep=False)]
        row = int(split.index[0]) if len(split) else int(gl.index[len(gl) // 2])
        node, head, model = int(gl["node"][row]), int(gl["head"][row]), int(gl["model"][row])
        lv, pos = keys[node]
        nd = data.nodes  # zoom in on the token (wheel and drag do the same) until its glyphs are a few px
        page.locator(RADIAL).evaluate("(el, p) => el.attnflowsView(6, p[0], p[1])",
                                      [float(nd["hx"].iloc[node]), float(nd["hy"].iloc[node])])
        g = next(q for q in _points(page, "glyphs") if q["row"] == row)
        assert g["size"] >= 3
        gx, gy = g["x"], g["y"]
        page.mouse.move(gx, gy)
        _wait(lambda: page.locator(RADIAL).get_attribute("data-hover") == f"glyph:{row}:0", 10, "the glyph hover")
        expected = dict(comp.trace(lv, [pos], head=(lv - 1, head), model=model))
        _wait(lambda: _lit(keys, _states(page)["st"]) == expected, 5, "the head-glyph highlight")
        if len(split):
            page.keyboard.down("Shift")
            page.mouse.move(gx, gy + 0.01)
            both = dict(comp.trace(lv, [pos], head=(lv - 1, head)))
            _wait(lambda: _lit(keys, _states(page)["st"]) == both, 5, "the shift comparison highlight")
            page.keyboard.up("Shift")
        page.locator(RADIAL).locator(".af-tool-reset").click()
        _wait(lambda: page.locator(RADIAL).get_attribute("data-zoom") == "1.000", 5, "the zoom reset")

        # --- click a token: freezes; the frozen highlight stays when the mouse leaves
        i = picks[1]
        x, y = _hover_node(page, i)
        page.mouse.click(x, y)
        _wait(lambda: view.selection == [list(keys[i])], what="the click to reach the server")
        page.mouse.move(*_empty_spot(page))
        frozen = dict(comp.trace(*keys[i]))
        _wait(lambda: _lit(keys, _states(page)["st"]) == frozen, 5, "the frozen highlight")
        s = _states(page)
        assert s["st"] == s["fz"]
        page.screenshot(path=str(output_dir / "minilm_combined_frozen.png"), full_page=True)

        # --- shift-click a second token of the same ring: brushed intersection
        lv_i = keys[i][0]
        j = next(k for k, key in enumerate(keys) if key[0] == lv_i and k != i)
        x2, y2 = _node_xy(page, j)
        page.mouse.move(x2, y2)
        page.keyboard.down("Shift")
        page.mouse.click(x2, y2)
        page.keyboard.up("Shift")
        sel = sorted([list(keys[i]), list(keys[j])])
        _wait(lambda: sorted(view.selection) == sel, what="the brush to reach the server")
        page.mouse.move(*_empty_spot(page))
        brushed = dict(comp.trace(lv_i, sorted([keys[i][1], keys[j][1]])))
        _wait(lambda: _lit(keys, _states(page)["st"]) == brushed, 5, "the brushed intersection")

        # --- click empty space: clears
        page.mouse.click(*_empty_spot(page))
        _wait(lambda: view.selection == [], what="the clear")
        _wait(lambda: _lit(keys, _states(page)["st"]) == {}, 5, "the cleared highlight")

        # --- tokens in two rings: the paths between them
        a = keys.index((comp.L - 1, int(comp.levels[comp.L - 1][0])))
        below = sorted(n for n in comp.trace(*keys[a]) if n[0] == 1)  # a token that a path reaches
        b = keys.index(below[len(below) // 2])
        xa, ya = _node_xy(page, a)
        page.mouse.click(xa, ya)
        _wait(lambda: view.selection == [list(keys[a])], what="the first ring's click")
        xb, yb = _node_xy(page, b)
        page.mouse.move(xb, yb)
        page.keyboard.down("Shift")
        page.mouse.click(xb, yb)
        page.keyboard.up("Shift")
        _wait(lambda: len(view.selection) == 2, what="the second ring's shift-click")
        page.mouse.move(*_empty_spot(page))
        paths = dict(comp.paths(keys[a][0], [keys[a][1]], keys[b][0], [keys[b][1]]))
        assert len(paths) > 2  # intermediate tokens on the paths
        _wait(lambda: _lit(keys, _states(page)["st"]) == paths, 5, "the paths highlight")

        # --- the sentence and context views draw the frozen highlight as Python computes it
        _check_sentence_and_context(page, view, comp, keys)

        # --- export from the radial view's toolbar: valid SVG and PNG of the current view, selection included
        with page.expect_download() as dl:
            page.locator(RADIAL).locator(".af-tool-svg").click()
        svg_path = output_dir / "export.svg"
        dl.value.save_as(svg_path)
        tree = ET.parse(svg_path).getroot()
        assert tree.tag.endswith("svg")
        assert any(t.text == "[CLS]" for t in tree.iter("{http://www.w3.org/2000/svg}text"))
        with page.expect_download() as dl:
            page.locator(RADIAL).locator(".af-tool-png").click()
        png_path = output_dir / "export.png"
        dl.value.save_as(png_path)
        from PIL import Image

        im = Image.open(png_path)
        im.verify()
        assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # --- τ slider: the rings change in the page
        handle = page.locator(".noUi-handle").first
        handle.focus()
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        _wait(lambda: view.tau > TAU + 0.04, what="the τ slider to reach the server")
        new = GraphComparison(AttentionGraph.build(r.pretrained.attentions, view.tau),
                              AttentionGraph.build(r.finetuned.attentions, view.tau))
        new_keys = [(k, int(t)) for k in range(new.L + 1) for t in new.levels[k]]
        assert new_keys != keys
        _wait(lambda: _states(page)["keys"] == new_keys, 10, "the rings to change in the page")

        assert errors == [], errors
        page.close()


def test_bert_base_density_screenshot(browser, tmp_path_factory, minilm_path, output_dir):
    """BERT-base shape (12 layers × 12 heads) on ~80 tokens, random init: dense rings; the combined view
    must render legibly (the screenshot is for a human to look at) with no browser error."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from attnflows_panel.models import ModelPair

    root = tmp_path_factory.mktemp("bert-base-shape")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=96, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=192, max_position_embeddings=128)
    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        d = root / f"m{seed}"
        BertModel(cfg).save_pretrained(d)
        tok.save_pretrained(d)
        dirs.append(d)
    pair = ModelPair.load(str(dirs[0]), str(dirs[1]))
    a = ("Wireless power transmission was demonstrated in the laboratory, where researchers lit a bulb "
         "from two metres away without any cables between the source and the light, and the team said "
         "the percentage of energy lost on the way was smaller than fifty per cent.")
    b = ("The experiment shows that energy can travel through the air to light a lamp, a step towards "
         "charging phones and laptops without wires in homes and offices, according to the researchers "
         "who ran it.")
    r = pair.run(a, b)
    assert 70 <= r.n <= 100
    # τ at which [CLS] keeps a handful of tokens in the last layer, as BERT-base does at 0.3
    last = r.pretrained.attentions[-1][:, 0, :].max(axis=0)
    tau = float(np.sort(last)[-8])
    views = []

    def app():
        v = AttentionFlowsView(r, tau=tau, mode="combined", level=6)
        views.append(v)
        return v

    with served_panel(app) as port:
        page, errors = _open(browser, port, width=1900, height=1750)
        view = views[-1]
        sizes = [len(lv) for lv in view.data.levels]
        assert sizes[-1] == 1 and max(sizes) >= 60  # dense, BERT-base-like rings
        page.screenshot(path=str(output_dir / "bert_base_shape_combined.png"), full_page=True)
        # freeze a token in the middle ring so that a second picture shows a traversal
        keys = _states(page)["keys"]
        i = keys.index((6, int(view.data.levels[6][len(view.data.levels[6]) // 3])))
        x, y = _hover_node(page, i)
        page.mouse.click(x, y)
        _wait(lambda: view.selection == [list(keys[i])], what="the click")
        page.mouse.move(*_empty_spot(page))
        _wait(lambda: _states(page)["st"] == _states(page)["fz"], 5, "the frozen state")
        page.screenshot(path=str(output_dir / "bert_base_shape_combined_frozen.png"), full_page=True)
        (output_dir / "bert_base_shape_export.svg").write_bytes(view.export("svg"))
        assert errors == [], errors
        page.close()
