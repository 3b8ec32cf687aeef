"""Screenshots as evidence (issue: a flow view a researcher can read at any window size).

On the default sample (the first pair of the bundled demo set, the MiniLM pair at τ 0.15) the view is
served in a thread and opened in headless Chromium at 1280×800, 1600×1000 and 1920×1080. At each size
the test saves screenshots of the plain view, a hovered token, a frozen selection and the paths
between two rings into the git-ignored ``test-output/<test>/`` folder and prints their paths, and asserts:

(Which labels show, and that they never overlap, is decided in the browser by the radial component:
tests/test_radial_browser.py checks it on 44- to 512-token pairs.)
- the radial component's labels (``data-label-boxes``) are at least 10 px and never overlap;
- the drawing fits the window's height, and the page does not scroll sideways;
- no console or page error.

Every wait is on a condition, never a fixed sleep.
"""

from __future__ import annotations

import json

import pytest

from attnflows_panel.corpus import demo_path
from attnflows_panel.views.attention_flows import AttentionFlowsView
from browser_support import served_panel, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

SIZES = [(1280, 800), (1600, 1000), (1920, 1080)]
TAU = 0.15

RADIAL = ".attnflows-radial"


def _overlapping(boxes) -> list:
    from attnflows_panel.views.radial import label_overlaps  # labels turned along their ring

    return label_overlaps(boxes)


def _wait(cond, timeout=20.0, what="condition"):
    wait_for(cond, timeout, what, interval=0.02)


def _demo_rows(k: int) -> list[dict]:
    """The first k MRPC pairs of the bundled demo set (the first is the app's default sample)."""
    rows = [json.loads(line) for line in demo_path().read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r.get("task") == "mrpc"][:k]


@pytest.fixture(scope="module")
def default_result(minilm_pair):
    first = _demo_rows(1)[0]
    return minilm_pair.run(first["sentence_a"], first["sentence_b"])


@pytest.mark.parametrize("width,height", SIZES)
def test_screenshots_at_three_window_sizes(browser, default_result, output_dir, width, height):
    view_holder = {}

    def app():
        view_holder["view"] = view = AttentionFlowsView(default_result, tau=TAU)
        return view

    with served_panel(app) as port:
        page = browser.new_page(viewport={"width": width, "height": height})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/")
        root = page.locator(RADIAL)
        _wait(lambda: root.count() and root.get_attribute("data-ready") == "1", 60, "the radial view")
        paths = []
        shot = output_dir / f"{width}x{height}-plain.png"
        page.screenshot(path=str(shot))
        paths.append(shot)
        view = view_holder["view"]
        box = root.bounding_box()
        boxes = json.loads(root.get_attribute("data-label-boxes"))
        print(f"\n{width}x{height}: {len(boxes)} labels drawn of {len(view.data.nodes)} tokens; view {box}")
        # the drawing is the largest square in the view's box, which fits the window's height; no
        # sideways scroll; labels of at least 10 px, none over another
        assert box["y"] + box["height"] <= height + 1 and min(box["width"], box["height"]) >= 0.45 * min(width, height)
        assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        assert boxes and all(b[3] >= 12 for b in boxes) and _overlapping(boxes) == []
        # hover a token of level 2: its trace lights up in the page, its details beside it
        nodes = view.data.nodes
        i = int(nodes.index[nodes["level"] == 1][0])
        pts = {p["id"]: p for p in root.evaluate("(el) => el.attnflowsPoints('nodes')")}
        page.mouse.move(pts[i]["x"], pts[i]["y"])
        _wait(lambda: root.get_attribute("data-hover") == f"node:{i}:0", what="the hover")
        shot = output_dir / f"{width}x{height}-hover.png"
        page.screenshot(path=str(shot))
        paths.append(shot)
        info = root.locator(".attnflows-radial-info").inner_text()
        assert "level 2" in info and "influence" in info
        # click to freeze the selection, then shift-click a token two rings further in: the paths
        lv, pos = int(nodes.loc[i, "level"]), int(nodes.loc[i, "pos"])
        page.mouse.click(pts[i]["x"], pts[i]["y"])
        _wait(lambda: view.selection == [[lv, pos]], what="the click to freeze a selection")
        page.mouse.move(1, 1)
        _wait(lambda: root.get_attribute("data-trace") == "frozen", what="the frozen trace")
        shot = output_dir / f"{width}x{height}-frozen.png"
        page.screenshot(path=str(shot))
        paths.append(shot)
        upper = view.data.levels[lv + 2]
        j = view.data.node_id(lv + 2, int(upper[0]))
        page.keyboard.down("Shift")
        page.mouse.click(pts[j]["x"], pts[j]["y"])
        page.keyboard.up("Shift")
        _wait(lambda: len(view.selection) == 2, what="the shift-click to select across rings")
        page.mouse.move(1, 1)
        _wait(lambda: "path" in view.status, what="the paths")
        shot = output_dir / f"{width}x{height}-paths.png"
        page.screenshot(path=str(shot))
        paths.append(shot)
        page.close()
    print("screenshots:", *[str(p) for p in paths], sep="\n  ")
    assert not errors, errors
